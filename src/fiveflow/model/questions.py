"""The six FiVE perspectives (questions) that make up the prompt bank and the description order.

The packaged ``fiveflow/data/questions/five-v1.yaml`` (key ``questions``) is the default; another
questions file may be given, and when that one is absent or unreadable the constants below are used.
Items there may be plain strings or mappings with a ``text`` (or ``question``) field.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from ..package_data import package_file

log = logging.getLogger(__name__)

#: The six questions as the paper lists them (the LLM prompt appends hints to some of them;
#: the prompt bank uses the plain question text).
FIVE_QUESTIONS: tuple[str, ...] = (
    "What is the differentiation of the lesion?",
    "Is there any indication of spread through air spaces around the lesion?",
    "Is there any indication of vascular invasion by the lesion?",
    "Is there any indication of pleural invasion by the lesion?",
    "Is there any evidence of the lesion invading adjacent tissues or organs (excluding the current lung organ)?",
    "Are the margins of the excised tissue clear of disease?",
)

#: the packaged prompt file whose ``questions`` are the default (the same file the report structuring reads)
DEFAULT_QUESTIONS_NAME = "questions/five-v1.yaml"


def _item_text(item) -> str:
    if isinstance(item, str):
        return item.strip()
    if isinstance(item, dict):
        for key in ("text", "question"):
            if isinstance(item.get(key), str):
                return item[key].strip()
    raise ValueError(f"cannot read a question text from {item!r}")


def load_questions(path: str | Path | None = None) -> list[str]:
    """Return the question texts, in description order.

    Reads ``path`` (default: the packaged ``questions/five-v1.yaml``) when it exists and holds a
    ``questions`` list; otherwise falls back to :data:`FIVE_QUESTIONS`.
    """
    p = Path(path) if path is not None else package_file(DEFAULT_QUESTIONS_NAME)
    if p.is_file():
        try:
            with open(p) as fh:
                data = yaml.safe_load(fh) or {}
            items = data.get("questions") if isinstance(data, dict) else None
            if items:
                return [_item_text(it) for it in items]
            log.warning("%s has no `questions` list; using the built-in FiVE questions", p)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.warning("cannot read questions from %s (%s); using the built-in FiVE questions", p, exc)
    return list(FIVE_QUESTIONS)
