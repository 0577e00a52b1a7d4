"""Question dropping on fine-grained descriptions (FIVE_METHOD.md section 4), as pure functions.

A description is the answers to the questions joined by ``;`` in question order; segment i
answers question i. Each training step drops k ~ U{0..n_questions-1} random questions from the
prompt bank and from every candidate description, removes ``Unknown`` segments, shuffles the
remaining segments, merges descriptions that became identical and remaps targets.

A single-sentence text (e.g. a coarse class text) is one segment, i.e. it is read as the
answer to question 0 (differentiation): dropping question 0 empties it, exactly as in the
authors' code. When that empties every class text, all candidates merge into one and the
step's loss is 0 (an "empty step", about 42% of steps).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

SEPARATOR = ";"
JOINER = "; "


def split_segments(description: str) -> list[str]:
    """Answer phrases of a description, stripped, in question order (empty phrases kept as "")."""
    return [s.strip() for s in str(description).split(SEPARATOR)]


def is_unknown(segment: str) -> bool:
    return segment.strip().rstrip(".").strip().lower() in ("unknown", "")


def draw_dropped_questions(n_questions: int, rng: np.random.Generator) -> list[int]:
    """k ~ U{0..n_questions-1}, then k distinct question indices (sorted)."""
    k = int(rng.integers(0, n_questions)) if n_questions > 0 else 0
    return sorted(int(i) for i in rng.choice(n_questions, size=k, replace=False)) if k else []


def perturb_description(
    description: str, dropped: Sequence[int], rng: np.random.Generator | None, shuffle: bool = True
) -> str:
    """Drop the segments of ``dropped`` questions, remove Unknown ones, shuffle, re-join."""
    drop = set(dropped)
    keep = [s for i, s in enumerate(split_segments(description)) if i not in drop and not is_unknown(s)]
    if shuffle and len(keep) > 1:
        if rng is None:
            raise ValueError("shuffling needs an rng")
        keep = [keep[i] for i in rng.permutation(len(keep))]
    return JOINER.join(keep)


def perturb_descriptions(
    descriptions: Sequence[str],
    dropped: Sequence[int],
    rng: np.random.Generator | None,
    shuffle: bool = True,
    merge_shuffled: bool = False,
) -> tuple[list[str], list[int]]:
    """Perturb every candidate and merge duplicates.

    Returns ``(texts, remap)``: the unique current texts (first-occurrence order) and, for each
    input description i, the index of its text in ``texts`` (new target = ``remap[old target]``).

    Descriptions that keep the same segments merge before shuffling (each unique text is then
    shuffled once), so two patients whose remaining answers agree are one candidate, whatever
    order a shuffle would give them. ``merge_shuffled=True`` is the order FIVE_METHOD.md lists:
    shuffle each description, then merge identical strings; the same answers in another order
    stay separate candidates, one of them a wrong answer for the loss.
    """
    if merge_shuffled:
        items = [perturb_description(d, dropped, rng, shuffle) for d in descriptions]
    else:
        items = [perturb_description(d, dropped, None, shuffle=False) for d in descriptions]
    texts: list[str] = []
    where: dict[str, int] = {}
    remap: list[int] = []
    for t in items:
        if t not in where:
            where[t] = len(texts)
            texts.append(t)
        remap.append(where[t])
    if shuffle and not merge_shuffled:
        texts = [perturb_description(t, (), rng, True) for t in texts]
    return texts, remap


def n_variants(description: str) -> int:
    """How many distinct strings :func:`perturb_description` can produce (upper bound)."""
    m = sum(not is_unknown(s) for s in split_segments(description))
    return sum(math.perm(m, j) for j in range(m + 1))


def all_variants(description: str) -> list[str]:
    """Every string question dropping + Unknown removal + shuffling can turn ``description`` into
    (every ordered selection of its known segments), so a frozen encoder can pre-encode them."""
    known = [s for s in split_segments(description) if not is_unknown(s)]
    out = []
    for j in range(len(known) + 1):
        out.extend(JOINER.join(p) for p in itertools.permutations(known, j))
    return list(dict.fromkeys(out))
