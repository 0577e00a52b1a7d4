"""Six FiVE answer phrases (from any backend) -> the categorical label fields of CONTRACTS.md.

The phrases may be terse ("No vascular invasion"), canonical (the offline backend's own
phrases) or free text with reasons, like GPT-4's released answers ("Pleural invasion by the
lesion is present, as the carcinoma extends into the visceral pleura"). Each phrase is read
by its *main clause* (the text before "as ...", ", indicating ...", "due to ..."): hedges
("not specified", "suspicious", "possible", "cannot be excluded") give ``unknown``; otherwise
the earliest polarity cue decides ("not identified" before "identified", "not clear" before
"clear"). The reasons clause is consulted only when the main clause has no cue.

Grades: words win over numbers; a set of grades maps to one value: {well, moderate} ->
``moderate`` (the worse grade), {moderate, poor} -> ``moderate_to_poor``, {poor,
undifferentiated} -> ``poor``, any other mix -> ``mixed``. Margins: R0 -> negative, R1/R2 ->
positive, Rx -> unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FIELDS: tuple[str, ...] = (
    "differentiation",
    "stas",
    "vascular_invasion",
    "pleural_invasion",
    "adjacent_invasion",
    "margins",
)
N_QUESTIONS = len(FIELDS)
UNKNOWN = "Unknown"
SEP = "; "

DIFFERENTIATION_VALUES = ("well", "moderate", "moderate_to_poor", "poor", "undifferentiated", "mixed", "unknown")
PRESENCE_VALUES = ("present", "absent", "unknown")
MARGIN_VALUES = ("negative", "positive", "unknown")
ALLOWED: dict[str, tuple[str, ...]] = {
    "differentiation": DIFFERENTIATION_VALUES,
    "stas": PRESENCE_VALUES,
    "vascular_invasion": PRESENCE_VALUES,
    "pleural_invasion": PRESENCE_VALUES,
    "adjacent_invasion": PRESENCE_VALUES,
    "margins": MARGIN_VALUES,
}

# Canonical short phrases (the offline backend's output, and what `canonical_description`
# writes). Each one normalises back to its own category (tested).
CANONICAL: dict[str, dict[str, str]] = {
    "differentiation": {
        "well": "Well differentiated",
        "moderate": "Moderately differentiated",
        "moderate_to_poor": "Moderately to poorly differentiated",
        "poor": "Poorly differentiated",
        "undifferentiated": "Undifferentiated",
        "mixed": "Mixed differentiation",
    },
    "stas": {"present": "Spread through air spaces present", "absent": "No spread through air spaces"},
    "vascular_invasion": {"present": "Vascular invasion present", "absent": "No vascular invasion"},
    "pleural_invasion": {"present": "Pleural invasion present", "absent": "No pleural invasion"},
    "adjacent_invasion": {
        "present": "Invasion of adjacent structures present",
        "absent": "No invasion of adjacent structures",
    },
    "margins": {"negative": "Margins negative", "positive": "Margins positive"},
}

# ----------------------------------------------------------------------------- splitting

_NUMBERING = re.compile(r"^\s*(?:\(?\d\)|\d[.):]|q\d[.):]?)\s*", re.I)


def _clean_segment(seg: str) -> str:
    seg = _NUMBERING.sub("", seg.strip())
    seg = re.sub(r"\s+", " ", seg).strip().strip("\"'").strip()
    seg = seg.rstrip(".").strip()
    if not seg or re.fullmatch(r"unknown\W*", seg, re.I) or re.fullmatch(r"n/?a", seg, re.I):
        return UNKNOWN
    return seg


def split_answer(answer: str | None) -> tuple[list[str], str]:
    """Split a raw answer into exactly six cleaned phrases; return (phrases, flag).

    ``flag`` is ``""`` for a well-formed answer, else a short note of the repair made:
    ``empty`` (all Unknown), ``lines`` (six lines and no ';' were split on new lines),
    ``padded:N`` (N < 6 segments, padded with Unknown) or ``merged:N`` (N > 6 segments, the
    tail merged into the sixth phrase with ', ').
    """
    if answer is None or (isinstance(answer, float)) or not str(answer).strip():
        return [UNKNOWN] * N_QUESTIONS, "empty"
    text = str(answer).strip()
    flag = ""
    parts = text.split(";")
    if len(parts) == 1:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            parts, flag = lines, "lines"
    # A trailing ';' yields an empty last part: not a seventh answer.
    while len(parts) > N_QUESTIONS and not parts[-1].strip():
        parts = parts[:-1]
    segs = [_clean_segment(p) for p in parts]
    n = len(segs)
    if n < N_QUESTIONS:
        segs += [UNKNOWN] * (N_QUESTIONS - n)
        flag = f"padded:{n}"
    elif n > N_QUESTIONS:
        tail = [s for s in segs[N_QUESTIONS - 1 :] if s != UNKNOWN]
        segs = segs[: N_QUESTIONS - 1] + [", ".join(tail) if tail else UNKNOWN]
        flag = f"merged:{n}"
    return segs, flag


# ----------------------------------------------------------------------------- clauses

_REASON = re.compile(
    r",\s*(?:as|because|since|which|indicating|suggesting|confirmed|supported|demonstrated|"
    r"evidenced|given|per)\b|\s(?:as|because|since|due to|indicating|suggesting)\s",
    re.I,
)
_HEDGE = re.compile(
    r"\bunknown\b|not (?:specified|stated|mentioned|reported|assessed|evaluated|evaluable|applicable|"
    r"provided|addressed|documented|described|available|determined)|cannot be (?:assessed|determined|"
    r"evaluated|excluded|ruled out)|can ?not be (?:assessed|determined|evaluated|excluded)|"
    r"\b(?:uncertain|unclear|indeterminate|equivocal|pending|suspicious|suspected|suspicion|possible|"
    r"possibly|potential|probable|questionable|may|might)\b",
    re.I,
)


def main_clause(phrase: str) -> str:
    """The part of an answer phrase before its stated reason ("..., as ..." etc.)."""
    m = _REASON.search(phrase)
    return phrase[: m.start()] if m else phrase


def earliest_cue(text: str, cues: list[tuple[re.Pattern[str], str]]) -> str | None:
    """The label of the earliest-starting cue (ties: the longer match, then list order)."""
    best: tuple[int, int, int, str] | None = None
    for order, (pat, label) in enumerate(cues):
        m = pat.search(text)
        if m:
            key = (m.start(), -(m.end() - m.start()), order, label)
            if best is None or key < best:
                best = key
    return best[3] if best else None


_PRESENCE_CUES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.I), lab)
    for p, lab in [
        (
            r"\bno\b|\bnot\b|\bnone\b|\bnor\b|n't\b|\bnegative\b|\babsen(?:t|ce)\b|\bwithout\b|"
            r"\bfree\b|tumou?r-free|\buninvolved\b|\bconfined\b|\blimited to\b|\bclear of\b|\brules? out\b|"
            r"\black\b|\bl0\b|\bv0\b|\bpl0\b",
            "absent",
        ),
        (
            r"\bpresent\b|\bidentified\b|\bseen\b|\bnoted\b|\bobserved\b|\bindicated\b|\bextensive\b|"
            r"\bfocal(?:ly)?\b|\bpositive\b|\binva(?:de|des|ded|ding)\b|\bindication\b|\binfiltrat(?:e|es|ed|ing)\b|"
            r"\binvolv(?:e|es|ed|ing)\b|\bextend(?:s|ed|ing)?\b|\bpenetrat(?:e|es|ed|ing)\b|\bexpand(?:s|ed|ing)?\b|"
            r"\bv[12]\b|\bl1\b|\bpl[123]\b|\bconfirmed\b",
            "present",
        ),
    ]
]

_NEG_CONCLUSION = re.compile(
    r"\b(?:indicating|suggesting)\s+(?:that\s+)?(?:there\s+is\s+)?no\b|"
    r"\bbut\s+(?:there\s+is\s+)?no\s+(?:\w+\s+){0,2}(?:vascular|pleural)\s+invasion",
    re.I,
)


def normalize_presence(phrase: str) -> str:
    """An answer about STAS / vascular / pleural / adjacent invasion -> present|absent|unknown."""
    p = _clean_segment(phrase)
    if p == UNKNOWN:
        return "unknown"
    if _NEG_CONCLUSION.search(p):  # "..., indicating no pleural invasion": the stated conclusion wins
        return "absent"
    for text in (main_clause(p), p):
        if _HEDGE.search(text):
            return "unknown"
        cue = earliest_cue(text, _PRESENCE_CUES)
        if cue:
            return cue
    # No cue: a finding named as a noun ("Invasion of the chest wall") is a positive answer.
    if re.search(r"\b(?:invasion|involvement|infiltration|extension|spread|emboli|permeation)\b", p, re.I):
        return "present"
    return "unknown"


_MARGIN_CUES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.I), lab)
    for p, lab in [
        (
            r"\bnot (?:clear|free)\b|\bpositive\b|(?<!un)\binvolv\w*|\bpresent\b|\bat (?:the )?(?:inked |surgical |"
            r"resection |stapled? |bronchial |vascular )*(?:margin|edge|staple line)|\bextends? to\b|\bwithin\b|"
            r"\bincomplete(?:ly)?\b|\bresidual\b",
            "positive",
        ),
        (
            r"\bclear\b|\bfree\b|\bnegative\b|\buninvolved\b|\bnot involved\b|\bcompletely (?:excised|resected)\b|"
            r"\bno\b|\bnot\b|\bwell away\b",
            "negative",
        ),
    ]
]
_R_CODE = re.compile(r"\bR\s?([012X])\b", re.I)


def normalize_margins(phrase: str) -> str:
    """An answer about the resection margins -> negative|positive|unknown."""
    p = _clean_segment(phrase)
    if p == UNKNOWN:
        return "unknown"
    m = _R_CODE.search(p)
    if m:
        return {"0": "negative", "1": "positive", "2": "positive"}.get(m.group(1).upper(), "unknown")
    for text in (main_clause(p), p):
        if _HEDGE.search(text):
            return "unknown"
        cue = earliest_cue(text, _MARGIN_CUES)
        if cue:
            return cue
    return "unknown"


# ----------------------------------------------------------------------------- grade

_W = r"(well|moderate(?:ly)?|poor(?:ly)?)"
_GRADE_RANGE = re.compile(
    rf"\b{_W}[\s-]*(?:differentiated)?[\s-]*(?:to|-|/|or|and)[\s-]*(?:very\s+)?(moderate(?:ly)?|poor(?:ly)?|un)(?=[\s-]*differentiat|\b)",
    re.I,
)
_GRADE_WORD = re.compile(
    r"\b(moderately\s+well|well|moderate(?:ly)?|poor(?:ly)?|un)[\s-]*(?:differentiated|differentiation)", re.I
)
_GRADE_LEVEL = re.compile(r"\b(low|intermediate|high)[\s-]grade\b", re.I)
_NUM = r"(1|2|3|4|iv|i{1,3})"
_GRADE_NUM = re.compile(
    rf"(?<!nuclear )(?<!fuhrman )\b(?:g|grade|histologic grade)\s*[:.]?\s*{_NUM}\b"
    rf"(?:\s*(?:-|to|/|or)\s*(?:g\s*)?{_NUM}\b)?",
    re.I,
)
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "1": 1, "2": 2, "3": 3, "4": 4}
_WORD_LEVEL = {"well": 1, "moderately well": 2, "moderate": 2, "moderately": 2, "poor": 3, "poorly": 3, "un": 4}
_LEVEL_NAME = {1: "well", 2: "moderate", 3: "poor", 4: "undifferentiated"}


# Reference-labeller convention: on a stated four-tier scale (Broders' grading, "Grade 4 (of 4)"), the top grade is
# poorly differentiated, not undifferentiated: GPT-4 writes "poorly differentiated (Grade 4 of 4)" for both such
# development reports, and a carcinoma typed as squamous or adenocarcinoma shows the differentiation that names it
# (the WHO reserves "undifferentiated" for other types). A bare "G4", or "undifferentiated" said of the same grade
# ("Grade 4 (of 4), undifferentiated"), keeps its meaning.
_TOP_OF_FOUR = re.compile(r"\b(grade\s*[:.]?\s*)(?:4|IV)(?=\s*(?:/|\(?\s*of\s+)\s*(?:4|IV|four)\b)", re.I)


def four_tier_top(text: str) -> str:
    """``text`` with the top grade of a stated four-tier scale written as grade 3 ("Grade 4 (of 4)" -> "Grade 3
    (of 4)"): poorly differentiated, as the reference labeller reads it (see ``_TOP_OF_FOUR``)."""
    return _TOP_OF_FOUR.sub(r"\g<1>3", text)


def grade_levels(text: str) -> set[int]:
    """Grade levels (1 well .. 4 undifferentiated) named in ``text``; words win over numbers. Callers apply
    :func:`four_tier_top` first where a stated scale may follow the grade."""
    levels: set[int] = set()
    for m in _GRADE_RANGE.finditer(text):
        levels |= {_WORD_LEVEL[m.group(1).lower()], _WORD_LEVEL[m.group(2).lower()]}
    for m in _GRADE_WORD.finditer(text):
        levels.add(_WORD_LEVEL[re.sub(r"\s+", " ", m.group(1).lower())])
    if levels:
        return levels
    for m in _GRADE_LEVEL.finditer(text):
        levels.add({"low": 1, "intermediate": 2, "high": 3}[m.group(1).lower()])
    if levels:
        return levels
    for m in _GRADE_NUM.finditer(text):
        levels.add(_ROMAN[m.group(1).lower()])
        if m.group(2):
            levels.add(_ROMAN[m.group(2).lower()])
    return levels


def levels_to_differentiation(levels: set[int]) -> str:
    """Map a set of grade levels to one differentiation value (see the module docstring)."""
    if not levels:
        return "unknown"
    if len(levels) == 1:
        return _LEVEL_NAME[next(iter(levels))]
    s = frozenset(levels)
    return {
        frozenset({1, 2}): "moderate",
        frozenset({2, 3}): "moderate_to_poor",
        frozenset({3, 4}): "poor",
    }.get(s, "mixed")


def normalize_differentiation(phrase: str) -> str:
    """An answer about differentiation -> well|moderate|moderate_to_poor|poor|undifferentiated|mixed|unknown."""
    p = _clean_segment(phrase)
    if p == UNKNOWN:
        return "unknown"
    if re.search(r"\bmixed\b|\bvariabl[ey]\b|\bheterogeneous\b", p, re.I):
        return "mixed"
    bare = re.fullmatch(r"(?:grade\s*)?(well|moderate(?:ly)?|poor(?:ly)?)", p, re.I)
    if bare:
        return {"w": "well", "m": "moderate", "p": "poor"}[bare.group(1)[0].lower()]
    levels = grade_levels(four_tier_top(p))  # "grade 4 (of 4)": poorly differentiated, as the rules read it
    if not levels and re.search(r"\bundifferentiated\b", p, re.I):
        return "undifferentiated"
    return levels_to_differentiation(levels)


# ----------------------------------------------------------------------------- answers

_NORMALIZERS = {
    "differentiation": normalize_differentiation,
    "stas": normalize_presence,
    "vascular_invasion": normalize_presence,
    "pleural_invasion": normalize_presence,
    "adjacent_invasion": normalize_presence,
    "margins": normalize_margins,
}


def normalize_phrase(field_name: str, phrase: str) -> str:
    """Normalise one answer phrase for one of the six ``FIELDS``."""
    return _NORMALIZERS[field_name](phrase)


@dataclass
class NormalizedAnswer:
    """One patient's six answers: categories, cleaned phrases and the repair flag."""

    labels: dict[str, str]
    phrases: list[str]
    flag: str = ""
    raw: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The six phrases joined by '; ', with ``Unknown`` wherever the category is unknown."""
        out = [UNKNOWN if self.labels[f] == "unknown" else ph for f, ph in zip(FIELDS, self.phrases)]
        return SEP.join(out)


def normalize_answer(answer: str | None) -> NormalizedAnswer:
    """Raw six-answer string (any backend) -> :class:`NormalizedAnswer`."""
    phrases, flag = split_answer(answer)
    labels = {f: normalize_phrase(f, ph) for f, ph in zip(FIELDS, phrases)}
    raw = "" if answer is None or isinstance(answer, float) else str(answer)
    return NormalizedAnswer(labels=labels, phrases=phrases, flag=flag, raw=raw)


def canonical_description(labels: dict[str, str], histology: str = "") -> str:
    """The short canonical description for categorical labels (the offline backend's text).

    Without ``histology`` (the default use) the six phrases answer the questions only. A
    ``histology`` (e.g. "keratinizing squamous cell carcinoma"), when given, follows the grade in
    the first answer ("Well differentiated keratinizing squamous cell carcinoma"); it is dropped
    when the grade is unknown (that answer stays ``Unknown``). Naming the type is an opt-in
    extension (``reports.name_histotype``): it puts the class label into the description."""
    phrases = [CANONICAL[f].get(labels[f], UNKNOWN) for f in FIELDS]
    if histology and phrases[0] != UNKNOWN:
        phrases[0] = f"{phrases[0]} {histology}"
    return SEP.join(phrases)
