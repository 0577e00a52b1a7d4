"""The FiVE questions and the LLM prompt, loaded from a ``questions/<version>.yaml`` file.

The default, ``five-v1``, ships with the package (``fiveflow/data/questions/five-v1.yaml``); the workflow's
``reports.questions`` names a file by path (``resources/questions/<version>.yaml`` in the project).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..package_data import package_file
from .normalize import FIELDS

#: one file per prompt version, named ``<prompt_version>.yaml`` in a folder of this name; a new version is a
#: new file, so old labels stay reproducible
QUESTIONS_DIR_NAME = "questions"
#: the default prompt, a packaged file
DEFAULT_QUESTIONS = package_file(f"{QUESTIONS_DIR_NAME}/five-v1.yaml")
#: how a prompt is laid out in chat messages: ``system`` = the instruction as the system message, then the
#: worked examples and the report as user/assistant turns; ``authors`` = the FiVE authors' layout: no system
#: message, every user turn is the instruction followed by a report (examples as alternating user/assistant
#: turns, the real report last), answered as ';'-joined text
SHAPES = ("system", "authors")


@dataclass(frozen=True)
class Prompt:
    """Everything sent to the LLM except the report: versioned, hashable, immutable."""

    version: str
    questions: tuple[str, ...]  # the six questions as the FiVE model encodes them
    llm_questions: tuple[str, ...]  # the wording sent to the LLM
    instruction: str  # the system message (shape ``system``) or the head of every user turn (``authors``)
    examples: tuple[tuple[str, str], ...]  # worked (report, answer) pairs
    shape: str = "system"  # one of SHAPES

    @property
    def sha256(self) -> str:
        """Hash of the full prompt content (recorded next to ``version`` for audits)."""
        content = [self.version, self.instruction, self.examples] + ([self.shape] if self.shape != "system" else [])
        blob = json.dumps(content, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def messages(self, report: str) -> list[dict[str, str]]:
        """Chat messages in the prompt's :data:`SHAPES` layout: the worked examples as user/assistant turns,
        then the report; the instruction as the system message, or (``authors``) at the head of every user turn."""
        if self.shape == "authors":
            turn = lambda rep: {"role": "user", "content": f"{self.instruction}\n\nPathology report:\n{rep}"}  # noqa: E731
            msgs = []
        else:
            turn = lambda rep: {"role": "user", "content": f"Pathology report:\n{rep}"}  # noqa: E731
            msgs = [{"role": "system", "content": self.instruction}]
        for rep, ans in self.examples:
            msgs.append(turn(rep))
            msgs.append({"role": "assistant", "content": ans})
        msgs.append(turn(report))
        return msgs


def load_prompt(path: str | os.PathLike | None = None) -> Prompt:
    """Load and check a questions file (default: the packaged five-v1; six questions in FIELDS order, >= 1
    worked example)."""
    path = Path(path) if path is not None else DEFAULT_QUESTIONS
    if not path.is_file():
        raise FileNotFoundError(
            f"questions file not found: {path}. Fix: correct `reports.questions` (e.g. "
            "resources/questions/five-v1.yaml), or leave it out for the packaged five-v1"
        )
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    for key in ("prompt_version", "questions", "instruction", "examples"):
        if key not in doc:
            raise ValueError(f"{path}: missing key `{key}`")
    qs = doc["questions"]
    fields = [q.get("field") for q in qs]
    if fields != list(FIELDS):
        raise ValueError(f"{path}: `questions` must list the fields {list(FIELDS)} in this order, got {fields}")
    llm_qs = tuple(q.get("llm_text") or q["text"] for q in qs)
    numbered = "\n".join(f"{i}. {q}" for i, q in enumerate(llm_qs, 1))
    instruction = str(doc["instruction"]).replace("{questions}", numbered)
    examples = tuple((str(e["report"]).strip(), str(e["answer"]).strip()) for e in doc["examples"])
    if not examples:
        raise ValueError(f"{path}: `examples` must hold at least one (report, answer) pair")
    for _, ans in examples:
        if ans.count(";") != len(FIELDS) - 1:
            raise ValueError(f"{path}: worked answer must have {len(FIELDS)} ';'-separated phrases: {ans!r}")
    shape = str(doc.get("shape", "system"))
    if shape not in SHAPES:
        raise ValueError(f"{path}: `shape` must be one of {', '.join(SHAPES)}, got {shape!r}")
    if path.parent.name == QUESTIONS_DIR_NAME and path.stem != str(doc["prompt_version"]):
        raise ValueError(
            f"{path}: prompt_version is {doc['prompt_version']!r} but the file is named {path.name}. "
            "Fix: a new prompt version is a new file named <prompt_version>.yaml (keep the old one)."
        )
    return Prompt(
        version=str(doc["prompt_version"]),
        questions=tuple(q["text"] for q in qs),
        llm_questions=llm_qs,
        instruction=instruction,
        examples=examples,
        shape=shape,
    )
