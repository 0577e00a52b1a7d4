"""Reports stage: raw pathology report text -> six FiVE answers -> categorical labels.

* :mod:`.offline`: rule-based answers (no network).
* :mod:`.llm`: OpenAI-compatible chat backend with an on-disk cache.
* :mod:`.normalize`: answer phrases from any backend -> categorical fields + description.
* :mod:`.structure`: :func:`structure_reports`, the stage entry point (CSV in, Parquet out).
"""
from .normalize import FIELDS, normalize_answer

__all__ = ["FIELDS", "normalize_answer", "structure_reports"]


def __getattr__(name: str):  # lazy: importing the package must not pull in pandas/openai
    if name == "structure_reports":
        from .structure import structure_reports

        return structure_reports
    raise AttributeError(name)
