"""Reports stage: raw pathology report text -> six FiVE answers -> categorical labels.

* :mod:`.offline`: rule-based answers (no network).
* :mod:`.llm`: OpenAI-compatible chat backend with an on-disk cache.
* :mod:`.normalize`: answer phrases from any backend -> categorical fields + description.
* :mod:`.structure`: :func:`structure_reports`, the stage entry point (CSV in, Parquet out).
"""

from .normalize import FIELDS, normalize_answer

__all__ = ["BACKEND_ALIASES", "FIELDS", "backend_name", "normalize_answer", "structure_reports"]

#: the names the docs and CLI use -> the backend names stored in labels tables
BACKEND_ALIASES = {"rules": "offline", "import": "precomputed"}


def backend_name(name: str) -> str:
    """``rules`` -> ``offline``, ``import`` -> ``precomputed``; other names unchanged."""
    return BACKEND_ALIASES.get(name, name)


def __getattr__(name: str):  # lazy: importing the package must not pull in pandas/openai
    if name == "structure_reports":
        from .structure import structure_reports

        return structure_reports
    raise AttributeError(name)
