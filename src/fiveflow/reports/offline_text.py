"""Text machinery for the offline extractor: OCR clean-up, clauses, and statement polarity.

:func:`clauses` turns raw report text into tagged :class:`Clause` objects; :func:`mention_polarity`
reads whether a finding named at some position of a clause is stated present, absent or
uncertain (synoptic ``key: value`` lines, negation scope, hedges, OCR'd check boxes).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import ocr_lexicon
from .normalize import earliest_cue

# ----------------------------------------------------------------------------- clauses

_GROSS_HEAD = re.compile(
    r"\b(gross\s+(?:description|examination|exam)|macroscop(?:y|ic)(?:\s+description)?|"
    r"received\s+(?:fresh|in\s+formalin|in\s+\w+\s+(?:parts|containers))|block\s+summary|"
    r"summary\s+of\s+sections|sections?\s+(?:are\s+)?submitted|cassettes?\s+summary|designation\s+of\s+sections|"
    r"intraoperative\s+consultation|frozen\s+section\s+diagnosis)\b",
    re.I,
)
_MICRO_HEAD = re.compile(
    r"\b(microscop(?:ic|y)(?:\s+(?:description|examination))?|final\s+(?:pathologic(?:al)?\s+)?diagnosis|"
    r"(?<!frozen section )diagnosis\s*(?::|details|/diagnoses)|synop(?:sis|tic)|checklist|tumou?r\s+summary|"
    r"summary\s+statement|comments?\s*:|histologic\s+type|specimen\s+type|procedure\s*:|tumou?r\s+site)\b",
    re.I,
)
LYMPH_NODE = re.compile(
    r"(?i:\blymph[\s-]*nodes?\b|\bnodes?\b|\bnodal\b|\bextra[- ]?nodal\b|extra[- ]?capsular|\bperi[- ]?nodal\b|"
    r"\bstation\s*\d)|\bLNs?\b|\bpN\s?[0-3OXx]\b|\bN[0-3]\b",
)
_VALUE_ONLY = re.compile(
    r"^[\W_]*(?:(?:is|are)\s+)?(?:present|absent|not\s+identified|identified|not\s+seen|seen|none(?:\s+identified)?|"
    r"negative|positive|yes|no|not\s+present|not\s+applicable|not\s+specified|indeterminate|"
    r"cannot\s+be\s+(?:determined|assessed|evaluated)|uninvolved|involved|not\s+involved|free|"
    r"focal(?:ly\s+present)?|extensive)(?:\s*\([^)]{0,12}\))?[\W_]*$",
    re.I,
)


@dataclass
class Clause:
    """One clause of a report, with the section it is in and whether it is about lymph nodes."""

    text: str
    gross: bool
    lymph: bool


_NO_END = (
    r"the|a|an|of|with|without|and|or|to|by|for|in|into|from|at|on|nor|visceral|parietal|pleural|"
    r"lymphovascular|lymph-vascular|angiolymphatic|vascular|venous|arterial|squamous|invasive|infiltrating|"
    r"bronchial|surgical|resection|parenchymal|non|invade|invades|invading|involve|involves|involving|extends|"
    r"extending|through|abut|abuts|abutting|toward|towards|is|are|was|were"
)
_BREAK = ".\ue000"  # a hard clause boundary kept through whitespace clean-up (private-use char)
_VALUE_WORDS = frozenset(
    "identified present absent negative positive seen none applicable specified involved uninvolved "
    "free yes no evaluated assessed indeterminate".split()
)
_OCR_FIXES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bd[il1]+[fp]{1,2}\s?[eka]?r[eka]nt+[il1t]+at(ed|ion)\b", re.I), r"differentiat\1"),
    (re.compile(r"\b(?:p|d)?[o0]{1,2}r[l1i]y\b", re.I), "poorly"),
    (re.compile(r"\bmoderate[l1i]y\b", re.I), "moderately"),
    (re.compile(r"\bbadly(?=[\s-]+differentiat)", re.I), "poorly"),
    # translated grading words (German "hoch / maessig / gering differenziert", and the like)
    (re.compile(r"\b(?:low|lowly|little)(?=[\s-]+differentiat)", re.I), "poorly"),
    (re.compile(r"\b(?:medium|intermediately|moderate)(?=[\s-]+differentiat)", re.I), "moderately"),
    (re.compile(r"\bhighly(?=[\s-]+differentiat)", re.I), "well"),
    (re.compile(r"\bangiolymphati[a-z]\b", re.I), "angiolymphatic"),
    (re.compile(r"\bl[yi]mp[hk]\b", re.I), "lymph"),
]


# Checklist boxes: ticked "[x]", "(x)", "_X_"; empty "[ ]", "( )", "__".
_BOX = re.compile(
    r"(?P<on>\[\s*[xX\u2713\u2714]\s*\]|\(\s*[xX\u2713\u2714]\s*\)|_+\s*[xX]\s*_+)|(?P<off>\[\s*\]|\(\s*\)|_{2,})"
)
_OPTION_END = re.compile(r"[.;:\n]|$")


def resolve_checkboxes(text: str) -> str:
    """A run of checklist options keeps only the ticked ones: "Visceral pleural invasion: [ ] Present [x] Not
    identified" -> "Visceral pleural invasion: Not identified"; "Histologic grade: [ ] G1 [x] G2 [ ] G3" -> "...: G2".
    A run with boxes but none ticked answers nothing (its options are dropped); a lone empty box ("__") is left as it
    is (it may be a blank line to fill in), a lone ticked box is dropped before its option."""
    marks = list(_BOX.finditer(text))
    if not marks:
        return text
    runs: list[list[re.Match[str]]] = []
    for m in marks:
        if (
            runs
            and m.start() - runs[-1][-1].end() <= 60
            and not re.search(r"[:\n]", text[runs[-1][-1].end() : m.start()])
        ):
            runs[-1].append(m)
        else:
            runs.append([m])
    out, pos = [], 0
    for run in runs:
        ticked = [m for m in run if m.group("on")]
        if len(run) == 1 and not ticked:
            continue
        # each option runs to the next box; the last one to the end of its line or sentence
        end = run[-1].end() + _OPTION_END.search(text[run[-1].end() : run[-1].end() + 60]).start()
        stops = [m.start() for m in run[1:]] + [end]
        chosen = [text[m.end() : stop].strip(" ,") for m, stop in zip(run, stops) if m.group("on")]
        out.append(text[pos : run[0].start()])
        out.append("; ".join(o for o in chosen if o))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def clean_text(text: str) -> str:
    """Undo common OCR artefacts; keep sentence punctuation."""
    t = unicodedata.normalize("NFKC", str(text))
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    t = re.sub(r"[\t\r\f\v]+", " ", t)
    t = resolve_checkboxes(t)  # "[ ] Present [x] Not identified" -> "Not identified"
    t = ocr_lexicon.correct(t)  # split ("INVASI ON") and one-letter ("pieura") OCR errors of key words
    t = re.sub(r"(?<=[a-z]{3})(?=[A-Z][a-z]{2})", " ", t)  # OCR-glued words: "diagnosisPoorly"
    for pat, rep in _OCR_FIXES:
        t = pat.sub(lambda m, rep=rep: m.group(0) if m.expand(rep).lower() == m.group(0).lower() else m.expand(rep), t)
    # A line break inside a sentence (next line starts lower-case) is a space; else a boundary.
    t = re.sub(r"\n+(?=\s*[a-z(])", " ", t)
    t = re.sub(r"\n+", ". ", t)
    # "There is no. blood vessel invasion", "NO. EVIDENCE OF ...": after "there is" / "with" / "shows", or before
    # "evidence", "definite", ..., a "no" at a line break is a determiner, not a value
    t = re.sub(
        r"\b((?:there\s+(?:is|are|was|were)|with|shows?|showing|reveals?|demonstrates?)\s+no)\s*\.\s+(?=[A-Za-z])",
        r"\1 ",
        t,
        flags=re.I,
    )
    t = re.sub(
        r"\b(no)\s*\.\s+(?=(?:evidence|definite|definitive|obvious|convincing|unequivocal|identifiable|significant)\b)",
        r"\1 ",
        t,
        flags=re.I,
    )
    # ... and before a lower-case finding noun, which continues the sentence ("No. tumour is present on the pleural
    # surface"); an upper-case one may start a new statement after a value ("Pleural invasion: No. Tumor size: ...")
    t = re.sub(
        r"\b((?i:no))\s*\.\s+(?=(?:tumou?r|carcinoma|malignancy|neoplasm|residual)\b)",
        r"\1 ",
        t,
    )
    # TCGA-Reports OCR writes line breaks as ". ": join when the next word is lower case ...
    t = re.sub(
        r"(\w+)\.\s+(?=[a-z(])",
        lambda m: m.group(1) + _BREAK if m.group(1).lower() in _VALUE_WORDS else m.group(1) + " ",
        t,
    )
    # ... or when the word before cannot end a sentence ("VISCERAL. PLEURAL", "POORLY. DIFFERENTIATED").
    t = re.sub(rf"\b({_NO_END})\.\s+(?=[A-Za-z])", r"\1 ", t, flags=re.I)
    t = re.sub(r"\b(well|moderately|poorly|moderate|poor)\s*[.-]\s+(?=differentiat)", r"\1 ", t, flags=re.I)
    # ... or when the next word cannot start one ("SURGICAL MARGINS. OF RESECTION ARE NEGATIVE").
    t = re.sub(r"(?<=[A-Za-z])\.\s+(?=(?:of|and|or|are|is|was|were|to|for|by|from|than|as)\s)", " ", t, flags=re.I)
    t = _strip_templates(t)
    t = re.sub(r"\s+", " ", t)
    return t.strip()


_TEMPLATE_START = re.compile(
    r"(?:\bp?T\s?[0-4][a-c]?\s*[:.(]\s*\(?\s*|\(\s*)Tumou?r\s+(?:greater|more|less|[<>]|of\s+any|\d)|"
    r"\bTumou?r\s+(?:\w+\s+){0,2}any\s+of\s+the\s+following|\bTumou?r\s+of\s+any\s+size|"
    r"\bsurrounded\s+by\s+lung\s+or\s+visceral\s+pleura",
    re.I,
)
_TEMPLATE_END = re.compile(
    r"\bp?N\s?[0-3OXx]\b|\bREGIONAL\s+LYMPH|\bDISTANT\s+METAST|\bp?M\s?[01Xx]\b|\bMargins?\s*:|\bLYMPH\s+NODES?\b",
    re.I,
)


def _strip_templates(t: str) -> str:
    """Drop staging-manual definitions copied into reports ("pT2: Tumor with any of the following
    features ...; invades the visceral pleura; ...") so they are not read as findings."""
    out, pos = [], 0
    for m in _TEMPLATE_START.finditer(t):
        if m.start() < pos:
            continue
        end = _TEMPLATE_END.search(t, m.end(), m.end() + 700)
        stop = end.start() if end else min(len(t), m.end() + 700)
        out.append(t[pos : m.start()])
        out.append(" [staging definition]. ")
        pos = stop
    out.append(t[pos:])
    return "".join(out)


def _split(text: str) -> list[str]:
    parts = re.split(r"(?<=[.;!?])\s+(?=[\"'(\[/|]?[A-Z0-9#*-])|\ue000|;\s*|\s+-\s+|\s-(?=[A-Z])|\.\s*\.\s*", text)
    return [p.strip(" .-/|") for p in parts if p and p.strip(" .-/|")]


def clauses(text: str) -> list[Clause]:
    """Cleaned clauses of a report, tagged with section (gross or not) and lymph-node topic."""
    raw = _split(clean_text(text))
    merged: list[str] = []
    for part in raw:
        if merged and _VALUE_ONLY.match(part):
            # "Key. - Not identified" -> "Key: Not identified" ("Key: - Not identified" keeps one colon)
            sep = " " if merged[-1].rstrip().endswith(":") else ": "
            merged[-1] = f"{merged[-1].rstrip()}{sep}{part.strip(' -:.')}"
        elif merged and merged[-1].rstrip().endswith(":") and len(part) < 60:
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    out: list[Clause] = []
    gross = False
    for part in merged:
        g, m = _GROSS_HEAD.search(part), _MICRO_HEAD.search(part)
        if g and (not m or g.start() > m.start()):
            gross = True
        elif m:
            gross = False
        out.append(Clause(text=part, gross=gross, lymph=bool(LYMPH_NODE.search(part))))
    return out


# ----------------------------------------------------------------------------- polarity

NEG_BEFORE = re.compile(
    r"\b(?:no|not|neither|nor|without|negative\s+for|free\s+of|absence\s+of|absent|does\s+not|did\s+not|do\s+not|"
    r"is\s+not|are\s+not|was\s+not|were\s+not|n't|lacks?|lacking|rules\s+out|ruled\s+out|uninvolved|unassociated\s+with)\b",
    re.I,
)
HEDGE = re.compile(
    r"\b(?:suspicious|suspect(?:ed)?|suspicion|possible|possibly|probable|probably|questionable|equivocal|"
    r"indeterminate|cannot\s+be\s+(?:excluded|ruled\s+out|assessed|determined|evaluated)|"
    r"can\s?not\s+(?:be\s+)?(?:excluded|exclude|ruled?\s+out|assessed|determined|evaluated)|not\s+(?:entirely\s+)?excluded|"
    r"not\s+specified|not\s+applicable|not\s+assessed|not\s+evaluated|unknown|pending|deferred|"
    r"difficult\s+to\s+(?:assess|evaluate)|may\s+(?:\w+\s+)?(?:represent|invade|involve|infiltrate|extend|be)|"
    r"(?:could|can|may|might)\s+not\s+be\s+(?:assessed|evaluated|determined|excluded|ruled\s+out)|"
    r"suggestive|assess\w*|(?:to\s+)?rule\s+out|n/a|"
    r"unclear|uncertain)\b",
    re.I,
)
_VALUE_CUES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.I), lab)
    for p, lab in [
        (
            r"\bnot\s+(?:specified|applicable|assessed|evaluated|evaluable|determined|reported|stated)\b|"
            r"\bcannot\s+be\b|\bcan\s?not\s+be\b|\bindeterminate\b|\bequivocal\b|\bsuspicious\b|\bsuspect\w*|"
            r"\bpending\b|\bunknown\b|\bn/a\b|\bpossible\b|\bquestionable\b|\bdeferred\b",
            "unknown",
        ),
        (
            r"\bnot\b|\bno\b|\bnone\b|\babsent\b|\bnegative\b|\bfree\b|\btumou?r-free\b|\buninvolved\b|\bwithout\b|"
            r"\bclear\b|\bnil\b|\bintact\b|\bl0\b|\bv0\b|\bpl0\b|\bruled\s+out\b|\bexcluded\b",
            "absent",
        ),
        (
            r"\bpresent\b|\bidentified\b|\bseen\b|\bpositive\b|\byes\b|\bnoted\b|\bextensive\b|\bfocal(?:ly)?\b|"
            r"\binvolved\b|\binvolves\b|\binvolving\b|\bdetected\b|\bevident\b|\bconfirmed\b|\bfound\b|"
            r"\binvad(?:es|ed|ing)\b|\binfiltrat(?:es|ed|ing)\b|\bextends?\b|\bpl[123]\b|"
            r"\bv[12]\b|\bl1\b|\bmultifocal\b|\brare\b",
            "present",
        ),
    ]
]


# OCR'd checklist symbols before the ticked option ("®Yes qNo qNA"); bracketed boxes ("[x]", "(x)") are resolved
# earlier, for every field, by resolve_checkboxes
_CHECKBOX = re.compile(r"[®☒■☑✓✔]\s*([A-Za-z][A-Za-z /-]{0,20})")


# A modal right before the finding ("The tumor may invade the chest wall") makes it uncertain.
_MODAL_END = re.compile(r"\b(?:may|might|could)\s+(?:possibly\s+|also\s+)?$", re.I)


def first_cue(text: str) -> str | None:
    return earliest_cue(text, _VALUE_CUES)


def synoptic_value(clause: str, pos: int) -> str | None:
    """If the anchor at ``pos`` sits in the key of a ``key: value`` line, the value; else None."""
    colon = clause.find(":", pos)
    if colon < 0:
        return None
    between = clause[pos:colon]
    # The key must end within a few words and hold no verb ("tumor invades x: ..." is not a key).
    # A leading ")" closes a gloss the anchor sits in: "Spread through air spaces (STAS): ...".
    if not re.fullmatch(r"\s*[)\]]?\s*(?:\([^)]*\)\s*)*(?:[\w/-]+\s*(?:\([^)]*\)\s*)?){0,3}", between) or re.search(
        r"\b(?:is|are|was|were|invades?|involves?)\b", between, re.I
    ):
        return None
    value = clause[colon + 1 :]
    # A value ends where the next key starts ("Present. Lymphatic invasion: ...", or at the next ':').
    nxt = re.search(r"[.;]\s+[A-Z][^:.;]{0,60}:|:", value)
    return value[: nxt.start()] if nxt else value


def scope_before(clause: str, start: int) -> str:
    """The sub-clause before position ``start`` (cut at punctuation and contrast words). A short, closed
    bracketed gloss is read as plain words ("extends to the parenchymal (stapled) margin")."""
    before = re.sub(r"\(([^():]{1,25})\)", r" \1 ", clause[:start])
    return re.split(
        r"[,:()]|\bbut\b|\bhowever\b|\bwhile\b|\bwhereas\b|\bexcept\b|\band\s+(?=there\b)", before, flags=re.I
    )[-1][-80:]


def negated(clause: str, start: int, before: str | None = None) -> bool:
    """Is the anchor at ``start`` negated by a cue shortly before it, in the same sub-clause?"""
    before = scope_before(clause, start) if before is None else before
    neg = list(NEG_BEFORE.finditer(before))
    if neg:
        # Negation scopes over a few words, and not across a statement of presence
        # ("... but not through pleura, tumor identified within lymphovascular space").
        gap = before[neg[-1].end() :]
        # ... but the verb the negation governs is part of it ("does not show lymphovascular invasion", "carcinoma is
        # not present at the margin")
        governed = re.sub(
            r"^\s*(?:show|demonstrat|reveal|exhibit|display|contain|have|has|see|seen|identif|present|noted|found|observed|"
            r"detected)\w*\s+",
            "",
            gap,
            flags=re.I,
        )
        if neg[-1].group(0).lower() == "no":  # "No tumour is present on the pleural surface": the subject's predicate
            governed = re.sub(
                r"^\s*(?:tumou?r|carcinoma|malignancy|neoplasm)\s+(?:cells\s+)?(?:is|are|was|were)\s+"
                r"(?:present|seen|identified|noted|found)\s+",
                "",
                governed,
                flags=re.I,
            )
        return len(gap.split()) <= 6 and not re.search(
            r"\b(?:identified|present|seen|noted|shows?|showing|with)\b", governed, re.I
        )
    # "No lymphatic invasion, blood vessel and perineural invasion": the list shares the "No".
    return before.strip() == "" and bool(
        re.match(r"\s*(?:no|without|negative\s+for)\b[^,]{0,40},\s*$", clause[:start], re.I)
    )


def unwrap_gloss(clause: str, start: int, end: int) -> tuple[int, int]:
    """Widen an anchor that is a whole parenthetical gloss ("... air spaces (STAS) ...",
    "lymph-vascular invasion (LVI)") to include its brackets, so that it is read in the
    sentence around it rather than as an empty sub-clause of its own."""
    before = re.search(r"[(\[]\s*$", clause[:start])
    after = re.match(r"\s*[)\]]", clause[end:])
    if before and after:
        return before.start(), end + after.end()
    return start, end


def mention_polarity(clause: str, start: int, end: int, default: str | None = "present") -> str | None:
    """Polarity (present|absent|unknown) of the anchor ``clause[start:end]``; None = no statement."""
    start, end = unwrap_gloss(clause, start, end)
    value = synoptic_value(clause, end)
    if value is not None:
        ticked = _CHECKBOX.search(value)  # OCR'd checklists: "Visceral pleural invasion: ®Yes qNo qNA"
        if ticked:
            value = ticked.group(1)
        if HEDGE.search(value) or re.search(r"\bsuggestive\b", value, re.I):
            return "unknown"
        yes_no = re.fullmatch(r"\s*([YN])\s*[.;]?\s*", value)  # a checklist's one-letter answer: "LVI: Y"
        if yes_no:
            return "present" if yes_no.group(1) == "Y" else "absent"
        return first_cue(value)  # None when the key has no usable value (an empty checklist line)
    # Narrative: scope = the sub-clause around the anchor.
    before = scope_before(clause, start)
    rest = clause[end:]
    gloss = re.match(r"\s*\(([^()]{0,40})\)", rest)
    if gloss:  # "invasion (LVI) is not identified": read past a bracketed gloss, or read the gloss if it is a value
        inner = gloss.group(1)
        rest = (f" {inner} " if first_cue(inner) or HEDGE.search(inner) else " ") + rest[gloss.end() :]
    after = re.split(r"[,;:()]|\bbut\b|\bhowever\b|\bwhereas\b|\.\s", rest, flags=re.I)[0][:80]
    if HEDGE.search(before) or HEDGE.search(after) or _MODAL_END.search(before):
        return "unknown"
    if negated(clause, start, before):
        return "absent"
    cue = first_cue(after)
    if cue:
        return cue
    if not re.search(r"[A-Za-z]{2}", clause[:start] + clause[end:]):
        return None  # a bare heading ("LYMPHATIC INVASION"), no statement
    head = re.match(r"\s*\.(?:\s|$)", clause[end:])
    if head and not re.search(r"[A-Za-z]{2}", clause[:start]):
        # A heading before its own sentence: that sentence is its value if it is only a value ("LYMPHATIC
        # INVASION. • none identified"); else it says no more than itself ("PLEURAL INVOLVEMENT. ?'eural
        # involvement is absent": the sentence is read for its own anchor, if any).
        nxt = re.split(r"\.\s", clause[end + head.end() :])[0]
        if _VALUE_ONLY.match(nxt):
            return "unknown" if HEDGE.search(nxt) else first_cue(nxt)
        return None
    return default


_LIST_CUT = re.compile(r"[,;]")
# Lymph-node statements answer neither the pleural nor the adjacent-structure question ("extranodal extension into
# the mediastinal fat"), but a clause may name the primary tumour's invasion and the nodes side by side ("...
# invading the chest wall, with metastases in 2 of 10 lymph nodes"): for those, a stretch also ends at "with" and at
# an "and" that starts a new statement ("and there", "and metastases", "and 3 of 12 lymph nodes").
_STATEMENT_CUT = re.compile(
    r"[,;:]|\.\s|\bwith\b|\band\s+(?=there\b|metasta|\d+\s*(?:/|of)\s*\d+|(?:\w+\s+){0,2}lymph\b)", re.I
)
_NODAL_SUBJECT = re.compile(r"^\W*(?:[\w-]+\s+){0,3}?(?:lymph\s+nodes?|nodes?|LNs?)\b", re.I)


def _stretch(clause: str, start: int, end: int, cut: re.Pattern[str]) -> tuple[int, int]:
    """The bounds of the stretch of ``clause`` around ``clause[start:end]`` between two ``cut`` matches."""
    lo = max((m.end() for m in cut.finditer(clause, 0, start)), default=0)
    hi = next((m.start() for m in cut.finditer(clause, end)), len(clause))
    return lo, hi


def lymph_context(clause: str, start: int, end: int) -> bool:
    """Does the comma-delimited stretch around ``clause[start:end]`` speak of lymph nodes?"""
    lo, hi = _stretch(clause, start, end, _LIST_CUT)
    return bool(LYMPH_NODE.search(clause[lo:start] + " " + clause[end:hi]))


def nodal_subject(clause: Clause) -> bool:
    """Is the clause about a lymph node ("Lymph nodes, mediastinal: metastatic carcinoma, ...")?"""
    return clause.lymph and bool(_NODAL_SUBJECT.match(clause.text))


def nodal_finding(clause: Clause, start: int, end: int) -> bool:
    """Does the finding at ``clause.text[start:end]`` belong to a lymph-node statement: the clause is about a
    lymph node, or the finding's own statement (a narrower stretch than :func:`lymph_context`'s) names one?"""
    if not clause.lymph:
        return False
    if nodal_subject(clause):
        return True
    lo, hi = _stretch(clause.text, start, end, _STATEMENT_CUT)
    return bool(LYMPH_NODE.search(clause.text[lo:hi]))
