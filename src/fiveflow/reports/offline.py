"""Rule-based (offline, no network) answers to the six FiVE questions from raw OCR report text.

Pipeline, per report:

1. :func:`clauses` cleans the OCR text (line-break artefacts such as ``"visceral pleural.
   invasion"``, odd quotes, repeated spaces) and cuts it into clauses at sentence ends, ``;``
   and bullet dashes. A clause that is only a value (``"Present."``, ``"- Not identified"``)
   is glued back onto the key before it (``"Venous (Large Vessel) Invasion (V). - Present."``).
   Each clause is tagged with the report section it sits in (gross description vs. the rest)
   and whether it speaks about lymph nodes (those are ignored, as the FiVE instruction asks).
2. Each field has anchor patterns (e.g. ``lymphovascular invasion``, ``visceral pleura``).
   Every anchor hit gets a polarity from its clause: synoptic lines (``key: value``) are read
   from the value only; narrative text from negation cues before the anchor (``no``,
   ``without``, ``negative for``, ``does not``) and value cues after it (``not identified``,
   ``absent``, ``present``); hedges (``suspicious``, ``cannot be excluded``, ``not specified``)
   give ``unknown``. A bracketed gloss is read with the words around it (``"spread through air
   spaces (STAS): Not identified"``, ``"lymphovascular invasion (LVI) is not identified"``).
   Structures outside the lung may also be named as the subject of their own status (``"CHEST
   WALL FREE OF TUMOR"``, ``"the attached diaphragm is free of tumour"``).
3. Hits are combined per field: microscopic / diagnosis text over gross description; among
   those, a definite answer over ``unknown``, and ``present`` (``positive`` for margins) over
   ``absent`` (any positive finding is reported). Residual-tumour codes (R0/R1/R2/Rx) decide
   margins when given. Grades named in the synoptic grade line and in the diagnosis text are
   pooled (gross / frozen-section text and bare numbers such as ``G3`` only as fallbacks) and
   mapped with :func:`fiveflow.reports.normalize.levels_to_differentiation`.

Staging-manual definitions copied into reports ("pT2: Tumor with any of the following
features: ...; invades the visceral pleura; ...") are removed before reading.

The result is categorical labels plus the evidence (clause snippets) behind each, and six
short canonical phrases (:data:`fiveflow.reports.normalize.CANONICAL`). The phrases answer the six
questions only, as the FiVE authors' GPT-4 descriptions do: the histologic type the report states is
kept as data (:attr:`OfflineResult.histology`) but named in the description only on request
(``name_histotype``, config ``reports.name_histotype``; ``model`` then reads ``rules-v8+histotype``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .normalize import (
    FIELDS,
    canonical_description,
    earliest_cue,
    four_tier_top,
    grade_levels,
    levels_to_differentiation,
)
from .offline_text import (
    HEDGE,
    Clause,
    clauses,
    first_cue,
    lymph_context,
    mention_polarity,
    negated,
    nodal_finding,
    nodal_subject,
    scope_before,
    synoptic_value,
)

#: rules-v5: the descriptions answer the six questions only (rules-v4 appended the histologic type to the
#: first answer: the class label leaked into pre-training). Bump it whenever the labels or descriptions change.
#: rules-v6: key words with one OCR'd letter wrong are read (:mod:`fiveflow.reports.ocr_lexicon`), a heading glued to
#: the clause before it by "/" is cut off, short bracketed glosses are read as words, synoptic "Parietal pleura: involved",
#: "Distance ... from closest margin: 2.5 cm", R codes beside a lymph-node line and "does not show X" are read; a
#: synoptic pleura key whose value is a sentence about the pleura ("Visceral pleura: Carcinoma extends up to but not
#: into ...") is decided by that sentence.
#: rules-v7: a pathological T4 answers adjacent invasion when the report states nothing on the extension itself;
#: "confined within the lung" and "extension to pleura/other structures" are read; an OCR line break after a
#: determiner "no" ("There is no. blood vessel invasion", "NO. EVIDENCE OF ...") no longer cuts the negation off;
#: "but not to the pleural surface" / "does not reach the pleura" are absent; a heading before its own sentence
#: ("PLEURAL INVOLVEMENT. ...") takes that sentence as its value only when it is a bare value; "breach", "reach",
#: "abuts the pleura without invasion", "the pleura overlying the tumor is free", "Margin status: R0", "staple line",
#: "Chest wall, resection: ...", "within vascular lumina" and the main pulmonary artery are read; a clause that names
#: lymph nodes is skipped for pleural and adjacent invasion only where the finding belongs to the nodes; "Tumor
#: extension to the pleura" is not extension beyond the lung; "Adenocarcinoma, G2", "Grading: G3", a checklist's
#: "LVI: Y", an "L0, V0" code group without a TNM formula and "R0 resection" are read, and European usage
#: (lymphangiosis / haemangiosis carcinomatosa, angioinvasion, pleura parietalis, thoracic wall, bronchial stump,
#: "highly / medium / low differentiated"); lymphatic statements answer vascular invasion only when no blood-vessel
#: statement exists.
#: rules-v8: the top grade of a stated four-tier scale ("Grade 4 (of 4)") is poorly differentiated, as the reference
#: labeller reads it; key words that OCR split in two ("INVASI ON", "inva-\nsion") are rejoined; margins named with
#: lymph nodes as one subject of one finding ("Lymph nodes and margins are negative") are read; "neither ... nor" is a
#: negation; a negation governs "present" / "seen" / "found" after it ("Carcinoma is not present at the margin" was
#: read as positive); a tumour "present in" the pleura, "invasion beyond the elastic layer", the brachial plexus, azygos
#: vein, recurrent laryngeal / vagus nerve and subclavian vessels, "intravascular tumor", "spread through alveolar
#: spaces", "Resection margins: R1", "Extent of invasion: Chest wall", "within 0.1 cm of the margin" and "Grade: II/III"
#: (grade II of III) are read; in an electronic checklist only the ticked option answers ("[ ] Present [x] Not
#: identified", :func:`fiveflow.reports.offline_text.resolve_checkboxes`); "No tumour is present on the pleural surface"
#: negates its subject, and OCR's "No. tumour ..." is a determiner; "invades a pulmonary artery branch" and tumour "in
#: lymphatic channels" are vascular invasion; the pleura first in a listed subject with one plural predicate ("The
#: visceral pleura, the resection margin ... and all the lymph nodes removed are tumor-free"); a vessel finding beside,
#: not inside, a lymph-node statement ("Blood vessel invasion is present and there is tumour within a ... lymph node");
#: "confined within right upper lobe of lung"; uncertainty: a clinical "rule out", "could not be evaluated", a modal before
#: the finding ("may invade"); "is ruled out" / "excluded" are absent.
MODEL_NAME = "rules-v8"
#: suffix of the ``model`` name when the histologic type is named on request (``reports.name_histotype``)
HISTOTYPE_SUFFIX = "+histotype"


def model_name(name_histotype: bool = False) -> str:
    """The ``model`` recorded with the labels: ``rules-v8``, or ``rules-v8+histotype`` with the opt-in."""
    return MODEL_NAME + (HISTOTYPE_SUFFIX if name_histotype else "")


# ----------------------------------------------------------------------------- fields


@dataclass
class Hit:
    """One piece of evidence: the field, its polarity, the section and the clause text."""

    field: str
    value: str
    gross: bool
    text: str


def _combine(hits: list[Hit], positive: str = "present", negative: str = "absent") -> str:
    """Micro/diagnosis text over gross description (gross is read only when the rest is silent);
    within a pool a positive finding over a negative one, a definite answer over ``unknown``."""
    for pool in ([h for h in hits if not h.gross], [h for h in hits if h.gross]):
        if not pool:
            continue
        vals = {h.value for h in pool}
        if positive in vals:
            return positive
        if negative in vals:
            return negative
        return "unknown"
    return "unknown"


# Vascular: lymphovascular / angiolymphatic / venous / arterial / blood-vessel invasion.
_VK = (
    r"(?:lymph[o0]?[\s-]*vascular|angio[\s-]*lymphatic|lymphatic[\s-]+vascular|vascular|venous|arterial|"
    r"blood[\s-]*vessels?|large[\s-]*vessels?|small[\s-]*vessels?|lymphatic|vessels?|intravascular|"
    r"intralymphatic|endolymphatic|veins?|arter(?:y|ies))"
)
_PAREN = r"(?:\s*\([^)]{0,25}\))?"  # "(large vessel)", "(V)"
_AND = r"(?:\s*(?:,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+n?or\s+|/)\s*)"
# A coordinated list of invasion kinds: "vascular, lymphatic or perineural (invasion)".
_VK_LIST = rf"{_VK}{_PAREN}(?:{_AND}(?:{_VK}|perineural|pleural|visceral\s+pleural|pericardial){_PAREN})*"
_VASC = re.compile(
    r"\b(?:lymphangiosis|ha?emangiosis)(?:\s+carcinomatosa)?\b|\bangio[\s-]?invasi\w*|"  # European usage
    rf"\b{_VK_LIST}(?:\s+(?:space|channel|tumou?r))?\s*(?:invasion\w*|involvement|infiltration|permeation|emboli|status)"
    r"(?:\s*\([A-Z]\))?|\bLVSI\b|\bLVI\b|"
    r"\b(?:invad\w+|invasions?\s+(?:of|in|into)|permeation\s+of|involv\w+|infiltrat\w+)\s+(?:into\s+|of\s+|in\s+)?"
    r"(?:the\s+|an?\s+)?(?:small\s+|large\s+|medium[\s-]sized\s+|thick[\s-]walled\s+|intratumou?ral\s+|pulmonary\s+|blood\s+|"
    r"lymphatic\s+|and\s+)*(?:vessels?|veins?|venous\s+walls?|arter(?:y|ies|ial\s+walls?)|lymphatics|vascular\s+(?:spaces|walls?)|"
    r"lymphovascular\s+spaces?|angiolymphatic\s+\w+)\b|"
    r"\b(?:with)?in\s+(?:\w+\s+){0,3}(?:lymphovascular|vascular|vessel|lymphatic|angiolymphatic)\s+(?:spaces?|channels?|lum(?:en|ina))\b|"
    r"\btumou?r(?:ous)?\s+(?:thromb\w+|emboli)\b|\b(?:vascular|vessel)\s+tumou?r(?:ous)?\s+thromb\w*|"
    r"\b(?:intravascular|intralymphatic|endolymphatic)\s+(?:tumou?r|carcinoma)\b",  # "Intravascular tumor is present"
    re.I,
)
_VASC_LISTED = re.compile(rf"^(?:invasion\s*:\s*)?({_VK}|perineural)\s*:", re.I)  # "Invasion: venous: not identified"
_TNM = re.compile(r"\bp?T\s?[0-4][a-c]?\b.{0,40}\b(?:p?N|M)\s?[0-3xXO]", re.I)
# An L/V code group without a TNM formula ("Invasion: L0, V0, Pn0"): two codes side by side are the signature.
_LV_GROUP = re.compile(r"(?<![A-Za-z0-9])L\s?[01](?:\s*[,;]\s*|\s+)V\s?[0-2](?![A-Za-z0-9])")
_TNM_V = re.compile(r"(?<![A-Za-z])(?:p?V\s?([0-2])|p?L\s?([01]))(?![A-Za-z0-9])")


def _vessel_kind(anchor: str) -> str:
    """blood (venous/arterial/vascular), lv (lymphovascular/angiolymphatic) or lymphatic."""
    a = anchor.lower()
    if "lymphangiosis" in a:
        return "lymphatic"
    if re.search(r"lymph[o0]?[\s-]*vascular|angio|lvsi|lvi|lymphatic[\s-]+vascular", a):
        return "lv"
    if re.search(r"vascular|venous|arter|blood|large|vein|thromb|vessel", a) and not re.search(r"small\s+vessel", a):
        return "blood"
    return "lymphatic"


def _vascular(cls: list[Clause]) -> tuple[str, list[Hit]]:
    """Blood-vessel / lymphovascular statements decide; lymphatic statements answer only when there are none."""
    hits: list[Hit] = []
    kinds: list[str] = []
    listed = False
    for c in cls:
        t = c.text
        found = False
        for m in _VASC.finditer(t):
            tail = t[m.end() : m.end() + 14]
            if re.match(r"\s*(?:resection\s+)?margin", tail, re.I) or re.search(
                r"perineural\s*$", t[: m.start()], re.I
            ):
                continue
            # a vessel finding of a lymph-node statement ("... lymph node with extranodal lymphatic invasion"): both the
            # comma stretch and the finding's own statement name the nodes ("Blood vessel invasion is present and
            # there is tumour within a peribronchial lymph node" is read)
            if (
                lymph_context(t, m.start(), m.end())
                and nodal_finding(c, m.start(), m.end())
                and not re.search(r"lymph[o0]?[\s-]*vascular|angio", m.group(0), re.I)
            ):
                continue
            pol = mention_polarity(t, m.start(), m.end())
            if pol is None and re.search(r"angiosis", m.group(0), re.I):
                pol = "present"  # "Lymphangiosis carcinomatosa." names a finding, not a heading
            if pol:
                found = True
                hits.append(Hit("vascular_invasion", pol, c.gross, t[max(0, m.start() - 40) : m.end() + 60]))
                kinds.append(_vessel_kind(m.group(0)))
        lm = _VASC_LISTED.match(t)
        if re.match(r"^invasion\s*:", t, re.I):
            listed = True
        if lm and listed and not found and lm.group(1).lower() != "perineural":
            pol = first_cue(t[lm.end() :])
            if pol:
                hits.append(Hit("vascular_invasion", pol, c.gross, t[:80]))
                kinds.append(_vessel_kind(lm.group(1)))
        elif not lm:
            listed = bool(re.match(r"^invasion\s*:", t, re.I))
        if _TNM.search(t) or _LV_GROUP.search(t):
            for m in _TNM_V.finditer(t):
                digit = m.group(1) or m.group(2)
                hits.append(
                    Hit(
                        "vascular_invasion",
                        "absent" if digit == "0" else "present",
                        c.gross,
                        t[max(0, m.start() - 30) : m.end() + 30],
                    )
                )
                kinds.append("blood" if m.group(1) else "lymphatic")
    main = [h for h, k in zip(hits, kinds) if k != "lymphatic"]
    # Lymphatic statements answer only when the report says nothing of blood vessels: "Lymphatic invasion: Present.
    # Venous invasion: Not specified." leaves the question open, as the reference labeller reads it.
    return (_combine(main) if main else _combine(hits)), hits


# Pleural invasion.
_PK = r"(?:(?:visceral|parietal|mediastinal)\s+)?pleura(?:l)?(?:\s+surfaces?|\s+elastic\s+(?:layer|lamina))?"
_PLEURA = re.compile(
    rf"\b{_PK}(?:\s*(?:,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+n?or\s+|/)\s*(?:{_VK}|perineural|pericardial)"
    rf"(?:\s*\([^)]{{0,25}}\))?)*(?:\s+(?:invasion\w*|involvement|infiltration|status))?\b|\bPL\s?[0-3]\b",
    re.I,
)
_PLEURA_VERB_BEFORE = re.compile(
    r"(?:invad\w*|invasion\s+(?:of|into)|involv\w*|infiltrat\w*|extend\w*|extension|penetrat\w*|breach\w*|reach\w*|"
    r"through|into|negative|positive|free|uninvolved|(?:present|seen|identified)\s+(?:at|in|within|on))\s+(?:\w+\s+){0,4}$|"
    r"\b(?:invasion|extension|extends?|extending)\s+beyond\s+(?:the\s+)?elastic\s+(?:layer|lamina)\s+of\s+(?:the\s+)?$",
    re.I,
)
_PLEURA_STATUS_AFTER = re.compile(
    r"^(?:\s+(?:overlying|over|adjacent\s+to|near)\s+(?:the\s+)?(?:tumou?r|mass|lesion|neoplasm|carcinoma))?"  # "the pleura overlying the tumor is free"
    r"(?:\s*(?:,|and)\s*[\w\s]{0,40}?)?\s*(?:is|are)?\s*(?:\w+\s+){0,2}(?:not\s+)?"
    r"(?:involved|invaded|infiltrated|breached|free|tumou?r-free|negative|positive|uninvolved|intact|clear)\b",
    re.I,
)
# The pleura as the first of a listed subject with one plural predicate: "The visceral pleura, the resection margin of
# bronchi and vessels and all the lymph nodes removed are tumor-free". The list holds no verb or finding of its own
# (_BARE_LIST_STOP, shared with the margins coordinated with lymph nodes below).
_LIST_SUBJECT_STATUS = re.compile(
    r"^(?P<list>(?:\s*(?:,|\band\b)\s*[\w()./-]+(?:\s+[\w()./-]+){0,12}?)+?)\s+(?:are|were)\s+(?:all\s+)?(?P<neg>not\s+)?"
    r"(?P<st>tumou?r-free|free\s+of\s+(?:tumou?r|carcinoma|malignancy|neoplasm)|negative|uninvolved|involved)\b",
    re.I,
)
# A word that makes a listed subject more than bare names: a verb, a finding, a negation.
_BARE_LIST_STOP = re.compile(
    r"\b(?:is|are|was|were|with|without|show\w*|invad\w*|infiltrat\w*|involv\w*|extend\w*|metasta\w*|carcinoma|tumou?r|"
    r"positive|negative|free|clear|no|not|but)\b",
    re.I,
)
_PLEURA_KEY_AFTER = re.compile(r"^\s*(?:\([^)]*\)\s*)?:")
_PLEURA_EXCLUDE_AFTER = re.compile(
    r"^\s*(?:margins?|effusion|fluid|resection|biopsy|nodules?|plaques?|adhesions?|cavity|puckering|scar\w*)\b|"
    r"^\s*,\s*(?:biopsy|resection|excision|wedge)",
    re.I,
)
_PLEURA_SHALLOW_NEG = re.compile(
    r"(?:up\s+to\s+but\s+not\s+(?:into|within)(?:\s+(?:or|and)\s+through)?|(?:extends?|extending)\s+(?:\w+\s+)?up\s+to)"
    r"\s+(?:\w+\s+){0,3}$",
    re.I,
)
# "extends subpleurally but not to the pleural surface", "does not reach the pleura": the tumour stops short of it
_PLEURA_NOT_TO = re.compile(
    r"\bnot\s+(?:to|into|reach(?:es|ing)?|as\s+far\s+as|extend(?:s|ing)?\s+(?:to|into))\s+(?:the\s+)?(?:\w+\s+)?$", re.I
)
_PLEURA_SHALLOW = re.compile(
    r"(?:abut\w*|approach\w*|close\s+to|(?:just\s+)?beneath|near|towards?)\s+(?:\w+\s+){0,3}$", re.I
)
_PLEURA_PL1 = re.compile(r"\b(?:into|to),?\s+but\s+not\s+through,?\s+(?:\w+\s+){0,3}$", re.I)
# Invasion beyond the (pleural) elastic layer is visceral pleural invasion by definition (PL1), whether or not the
# sentence names the pleura ("Elastic stain shows invasion beyond the elastic layer"); "elastic lamina" is not read
# without "pleural", since a vessel has one too.
_PLEURA_ELASTIC = re.compile(
    r"\b(?:invasion|invad\w+|extension|extend\w*|penetrat\w+|infiltrat\w+)\s+(?:\w+\s+)?(?:beyond|through|past)\s+"
    r"(?:the\s+)?(?:(?:visceral\s+)?pleural\s+elastic\s+(?:layer|lamina)|elastic\s+layer)\b",
    re.I,
)
_EXTENT_KEY = re.compile(
    r"\b(?:tumou?r\s+extent|extent\s+of\s+invasion|direct\s+extension(?:\s+of\s+tumou?r)?|(?:extra[\s-]*pulmonary\s+(?:parenchymal\s+)?)?"
    r"extension(?:/invasion)?(?:\s+of\s+tumou?r)?|tumou?r\s+extension)\s*(?:\([^)]*\))?\s*:\s*([^:]{0,80})",
    re.I,
)


def _pleural(cls: list[Clause]) -> tuple[str, list[Hit]]:
    hits: list[Hit] = []
    for c in cls:
        t = c.text
        done: list[tuple[int, int]] = []
        for m in _EXTENT_KEY.finditer(t):  # "Tumor extent: Visceral pleura" (a short value, not a sentence)
            value = m.group(1)
            if re.search(r"pleura", value, re.I) and not re.search(
                r"\b(?:extends?|extending|invades?|involves?|does|is|are|but)\b", value, re.I
            ):
                pol = "absent" if first_cue(value) == "absent" else "present"
                hits.append(Hit("pleural_invasion", pol, c.gross, m.group(0)[:100]))
                done.append(m.span())
        for m in _PLEURA_ELASTIC.finditer(t):
            pol = mention_polarity(t, m.start(), m.end())
            if pol:
                hits.append(Hit("pleural_invasion", pol, c.gross, t[max(0, m.start() - 40) : m.end() + 20]))
            done.append(m.span())
        for m in _PLEURA.finditer(t):
            if any(a <= m.start() < b for a, b in done):
                continue
            tok = m.group(0)
            code = re.match(r"PL\s?([0-3])", tok, re.I)
            before, after = t[: m.start()], t[m.end() :]
            snippet = t[max(0, m.start() - 60) : m.end() + 40]
            if code:
                hits.append(Hit("pleural_invasion", "absent" if code.group(1) == "0" else "present", c.gross, snippet))
                continue
            if _PLEURA_EXCLUDE_AFTER.match(after) or nodal_finding(c, m.start(), m.end()):
                continue
            after_cue = first_cue(re.split(r"[,;:()]|\.\s", after)[0][:60])
            if _PLEURA_PL1.search(before[-60:]):  # "into but not through the pleura": PL1, invasion
                pol = after_cue if after_cue in ("absent", "unknown") else "present"
                hits.append(Hit("pleural_invasion", pol, c.gross, snippet))
                continue
            # "up to but not into the pleura", "not to the pleural surface"
            if _PLEURA_SHALLOW_NEG.search(before[-60:]) or _PLEURA_NOT_TO.search(before[-40:]):
                hits.append(Hit("pleural_invasion", "absent", c.gross, snippet))
                continue
            if _PLEURA_SHALLOW.search(before[-60:]) and not re.search(
                r"\binva\w+|\binvolv\w+|\binfiltrat\w+", before[-40:], re.I
            ):
                # "abuts the pleura without invasion"
                if re.match(
                    r"\s*,?\s*(?:but\s+)?without\s+(?:\w+\s+)?(?:invasion|involvement|infiltration)", after, re.I
                ):
                    hits.append(Hit("pleural_invasion", "absent", c.gross, snippet))
                continue  # "abuts the pleura": no statement about invasion
            noun = re.search(r"(?:invasion\w*|involvement|infiltration|status)$", tok, re.I)
            verb = _PLEURA_VERB_BEFORE.search(before[-80:])
            status = _PLEURA_STATUS_AFTER.match(after)
            key = _PLEURA_KEY_AFTER.match(after)
            value = synoptic_value(t, m.end()) if key else None
            inner = _PLEURA.search(value) if value is not None else None
            if inner and any(
                p.search(value[: inner.start()][-80:]) for p in (_PLEURA_VERB_BEFORE, _PLEURA_SHALLOW_NEG, _PLEURA_PL1)
            ):
                continue  # "Visceral pleura: Carcinoma extends up to but not into visceral pleura": the sentence decides
            if verb and not noun and re.match(r"(?:negative|free|uninvolved)\b", verb.group(0), re.I):
                pol: str | None = "absent"  # "negative pleura"
            elif verb and not noun and verb.group(0).lower().startswith("positive"):
                pol = "present"
            elif status and not (noun or verb or key):
                if negated(t, m.start()):
                    pol = "absent"
                else:
                    pol = "unknown" if HEDGE.search(status.group(0)) else first_cue(status.group(0))
            elif noun or verb or key:
                pol = mention_polarity(t, m.start(), m.end())
            elif (listed := _LIST_SUBJECT_STATUS.match(after)) and not _BARE_LIST_STOP.search(listed.group("list")):
                involved = listed.group("st").lower() == "involved"
                pol = "present" if involved != bool(listed.group("neg")) else "absent"
            else:
                continue
            if pol:
                hits.append(Hit("pleural_invasion", pol, c.gross, snippet))
    return _combine(hits), hits


# Invasion of adjacent structures outside the lung.
_ADJ_STRUCT = (
    r"(?:(?:chest|thoracic)\s+wall|ribs?|intercostal|pleura\s+parietalis|diaphragm\w*|pericardi\w*|mediastin\w*|thym\w+|(?:o)?esophag\w+|"
    r"vertebra\w*|atri(?:um|al)(?:\s+muscle)?|heart|great\s+vessels?|trachea\w*|carina|phrenic\s+nerve|parietal\s+pleura|"
    r"skeletal\s+muscle|soft\s+tissues?\s+of\s+the\s+chest|superior\s+vena\s+cava|aorta|(?:main\s+)?pulmonary\s+(?:artery\s+)?trunk|main\s+pulmonary\s+artery|hilar\s+(?:fat|soft\s+tissue)|"
    r"(?:chest\s+wall|mediastinal)\s+(?:fat|soft\s+tissue)|brachial\s+plexus|azygos(?:\s+vein)?|"
    r"(?:recurrent\s+laryngeal|vagus|vagal)\s+nerve|subclavian\s+(?:artery|vein|vessels?))"
)
_ADJ = re.compile(
    rf"\b(?:invad\w+|invasion\s+(?:of|into)|involv\w+|infiltrat\w+|extend\w*|extension)\s+(?:\w+\s+){{0,4}}?(?:the\s+)?"
    rf"{_ADJ_STRUCT}\b|"
    rf"\b(?:carcinoma|tumou?r|neoplasm|malignancy)\s+(?:is\s+)?(?:present\s+)?(?:in|within)\s+(?:the\s+)?{_ADJ_STRUCT}\b|"
    r"\b(?:direct\s+extension\s+of\s+tumou?r|tumou?r\s+extension|extent\s+of\s+invasion(?=\s*:)|"
    r"extra[\s-]*pulmonary\s+(?:extension|invasion)"
    r"(?:/invasion)?(?:\s+of\s+tumou?r)?|"
    r"(?:invasion|infiltration|extension|involvement|spread)\s+(?:of|into|to)\s+(?:the\s+)?(?:pleura\s*/\s*)?"
    r"(?:other|adjacent|neighbou?ring|surrounding)\s+(?:structures?|organs?|tissues?)|"
    r"adjacent\s+(?:structures?|organs?)|"
    r"(?:extension|extend\w*|spread\w*|grow\w*)\s+(?:\w+\s+)?(?:beyond|outside)\s+(?:of\s+)?(?:the\s+)?"
    r"(?:lung|pulmonary\s+parenchyma))\b|"
    rf"\b{_ADJ_STRUCT}\s+(?:invasion|involvement|infiltration)\b",  # "Chest wall invasion: ..."
    re.I,
)
# Reference-labeller convention: a tumour involving / invading / growing into a main (mainstem),
# lobar or "major" bronchus is answered as invasion of adjacent tissue, although the bronchus lies
# within the resected lung (generic "a bronchus" / "bronchial wall" is not: the labeller is split
# on those). Only positive statements are read; "the main bronchus is not involved" says nothing.
_ADJ_BRONCHUS_NAME = r"(?:main|mainstem|main-stem|lobar|major)\s+bronch(?:us|i)\b"
_ADJ_BRONCHUS = re.compile(
    r"\b(?:invad\w*|invasion\s+(?:of|into)|involv\w*|infiltrat\w*|extend\w*|extension|grow\w*|protrud\w*|"
    r"ulcerat\w*|penetrat\w*)\s+(?:\w+\s+){0,3}?(?:(?:into|to|through)\s+)?(?:the\s+)?(?:(?:wall|lumen)\s+of\s+(?:the\s+)?)?"
    rf"(?:a\s+)?(?:(?:right|left|upper|lower|middle|lobe)\s+)*{_ADJ_BRONCHUS_NAME}|"
    rf"\b{_ADJ_BRONCHUS_NAME}\s+(?:is|was|are|were)\s+(?P<neg>not\s+)?(?:\w+\s+)?(?:involved|invaded|infiltrated)\b",
    re.I,
)
# Reference-labeller convention: a bare synoptic "Tumor extension: Not identified" (the key names no
# structure) is read as not answering the question ("Unknown"); "Direct extension of tumor: ..." and
# "Tumor extension into extra-pulmonary structures: ..." keep their value.
_ADJ_BARE_EXTENSION = re.compile(r"tumou?r\s+extension", re.I)
# A pathological T category of 4 (AJCC 6th to 8th editions) is defined by invasion of the mediastinum, heart, great
# vessels, trachea, oesophagus, vertebral body, carina or recurrent laryngeal nerve (or by a separate nodule in
# another ipsilateral lobe, or, from the 8th edition, by size over 7 cm), so a pT4 is most often the stage's
# statement of invasion beyond the lung. It is a fallback: a report that states the extension itself ("Direct
# extension of tumor: Not identified", "invades the mediastinal fat") is answered by that statement, and only a
# report silent on it (or hedging) by its stage. Read as a pathological code ("pT4", "ypT4") or as
# the T of a TNM formula ("T4 N1 Mx", OCR's "TNMpT4"), never from clinical staging ("cT4") or a stray "T4" ("T4
# vertebra").
# T3 is not read: it is as often size, a nodule in the same lobe or a bronchial tumour near the carina.
_ADJ_T4 = re.compile(
    r"(?:(?<![A-Za-z0-9])|(?<=TNM))(?:y?[pP]\s?[Tt]\s?4[a-d]?(?=$|\W|[pP]?[NM])|"  # pT4, ypT4a, Pt4, pT4N2
    r"T\s?4[a-d]?(?=\W{0,3}[pP]?(?:N\s?[0-3xXO]|M\s?[01xXO])[a-c]?(?:$|\W|[pP]?[MRVL])))"  # T4 N1 Mx, T4N0M0, T 4. N 2.
)
# The tumour's stated size, for the T4 reading above: from the 8th edition a tumour over 7 cm is T4 by size alone,
# so a pT4 says nothing about invasion when the report states such a size.
_NUM = r"(\d+(?:[.,]\d+)?)"
_DIMS = rf"{_NUM}(?:\s*[x\u00d7]\s*{_NUM})?(?:\s*[x\u00d7]\s*{_NUM})?\s*(cm|mm)\b"
_TUMOUR = r"(?:tumou?r|mass|carcinoma|neoplasm|nodule|lesion)"
_SIZE = [
    re.compile(p, re.I)
    for p in (
        rf"\b(?:tumou?r\s+size|size\s+of\s+(?:the\s+)?tumou?r|(?:diameter|dimension)\s+of\s+(?:the\s+)?tumou?r)"
        rf"[^0-9.;]{{0,40}}{_DIMS}",  # "Tumor size: Greatest dimension: 7.5 cm", "Maximal diameter of tumor 10.2 cm"
        rf"\b\w*{_TUMOUR}\w*[\s,]+(?:\w+[\s,]+){{0,4}}?(?:measur\w+|of)\s+(?:up\s+to\s+|approximately\s+)?{_DIMS}",
        rf"\b\w*{_TUMOUR}\w*\s*\(\s*{_DIMS}\s*\)",  # "ADENOCARCINOMA (6.5 CM)"
        rf"\b\w*{_TUMOUR}\w*[^.;]{{0,30}}?,\s*{_DIMS}\s+(?:in\s+)?(?:size|(?:greatest|maximum|maximal|largest)\s+\w+)",
    )
]


def _tumour_size_cm(cls: list[Clause]) -> float | None:
    """The largest tumour size the report states, in cm (None: none stated)."""
    sizes: list[float] = []
    for c in cls:
        for pat in _SIZE:
            for m in pat.finditer(c.text):
                unit = m.group(m.lastindex or 0)
                dims = [float(g.replace(",", ".")) for g in m.groups()[-4:-1] if g]
                sizes += [d / 10 if unit.lower() == "mm" else d for d in dims]
    return max(sizes) if sizes else None


_ADJ_CONFINED = re.compile(
    r"\b(?:confined|limited)\.?\s+(?:to|within)\s+(?:the\s+)?(?:(?:right|left|upper|middle|lower|same)\s+){0,3}"
    r"(?:lung|pulmonary\s+parenchyma|lobe)\b",  # "Confined within right upper lobe of lung"
    re.I,
)
# A structure named as the subject of its own status: "CHEST WALL FREE OF TUMOR", "The attached
# diaphragm is free of tumour", "the pericardium is not involved", "rib involved by carcinoma", or as the
# key of a synoptic line ("Parietal pleura: involved by carcinoma").
_ADJ_STATE = re.compile(
    rf"\b{_ADJ_STRUCT}(?:\s+(?:tissues?|specimen))?"  # "The attached chest wall tissue is involved"
    r"(?:,\s*(?:en\s+bloc\s+)?(?:resection|excision|biopsy|segment|portion)\s*)?"  # "Chest wall, resection: ..."
    r"(?:\s*:\s*|\s+(?:(?:is|are|was|were|appears?)\s+)?)(?P<neg>not\s+)?"
    r"(?:(?:entirely|completely|grossly|histologically|microscopically)\s+)?"
    r"(?:(?P<free>(?:free|clear)\s+of|negative\s+for|uninvolved\s+by)\s+(?:\w+\s+){0,2}?"
    r"(?:tumou?r|carcinoma|malignancy|neoplasm|neoplasia|disease)\b|(?P<free2>tumou?r-free|uninvolved)\b|"
    r"(?P<inv>involved|infiltrated|invaded)\b)",
    re.I,
)


def _adjacent(cls: list[Clause]) -> tuple[str, list[Hit]]:
    hits: list[Hit] = []
    staged: list[Hit] = []  # pT4: read only when the statements give no definite answer
    for c in cls:
        for m in _ADJ_T4.finditer(c.text):  # before the lymph-node skip: "pT4 pN2" is not a lymph-node statement
            if not negated(c.text, m.start()):
                staged.append(
                    Hit("adjacent_invasion", "present", c.gross, c.text[max(0, m.start() - 40) : m.end() + 20])
                )
        if nodal_subject(c):
            continue
        for m in _ADJ.finditer(c.text):
            after = c.text[m.end() : m.end() + 20]
            if re.match(r"\s*(?:\w+\s+)?margin", after, re.I) or nodal_finding(c, m.start(), m.end()):
                continue
            value = synoptic_value(c.text, m.end())
            if value is not None:
                if re.search(_ADJ_STRUCT, value, re.I) and not re.search(r"\bnot\b|\bno\b|\bnegative", value, re.I):
                    pol: str | None = "present"
                elif (
                    re.search(r"\bpleura|\bbronch|\blung\b|\bparenchyma", value, re.I)
                    and not first_cue(value) == "absent"
                ):
                    pol = None  # extension within the lung / to the visceral pleura: not this question
                else:
                    pol = first_cue(value)
                    key_rest = c.text[m.end() : c.text.find(":", m.end())]
                    if (
                        pol == "absent"
                        and _ADJ_BARE_EXTENSION.fullmatch(m.group(0))
                        and not key_rest.strip()
                        and not _ADJ_CONFINED.search(value)
                    ):
                        pol = "unknown"  # bare "Tumor extension: Not identified"
            elif re.match(
                r"\s+(?:\w+\s+){0,2}?(?:to|into|through|up\s+to)\s+(?:the\s+)?(?:visceral\s+)?(?:pleura|bronch|lung|parenchyma|lobe)",
                c.text[m.end() : m.end() + 40],
                re.I,
            ) and not re.search(_ADJ_STRUCT, m.group(0), re.I):
                pol = None  # "Tumor extension to the pleura ...": within the lung, not this question
            else:
                pol = mention_polarity(c.text, m.start(), m.end())
                if pol is None and re.match(
                    r"(?:invasion|infiltration|involvement|extension)\s+(?:of|into)\b", m.group(0), re.I
                ):
                    pol = "present"  # "Infiltration of the pericardium." names a finding, not a heading
            if pol:
                hits.append(Hit("adjacent_invasion", pol, c.gross, c.text[max(0, m.start() - 40) : m.end() + 60]))
        for m in _ADJ_BRONCHUS.finditer(c.text):
            if m.group("neg") or re.match(r"\s*(?:\w+\s+)?margin", c.text[m.end() : m.end() + 20], re.I):
                continue
            if nodal_finding(c, m.start(), m.end()):
                continue
            if mention_polarity(c.text, m.start(), m.end()) == "present":
                hits.append(Hit("adjacent_invasion", "present", c.gross, c.text[max(0, m.start() - 40) : m.end() + 40]))
        for m in _ADJ_CONFINED.finditer(c.text):
            if nodal_finding(c, m.start(), m.end()):
                continue
            hits.append(Hit("adjacent_invasion", "absent", c.gross, c.text[max(0, m.start() - 40) : m.end() + 20]))
        for m in _ADJ_STATE.finditer(c.text):
            if re.search(r"\b(?:margins?|nodes?)\b", c.text[max(0, m.start() - 20) : m.start()], re.I):
                continue  # "chest wall margin ..." is question 6
            if nodal_finding(c, m.start(), m.end()):
                continue
            if HEDGE.search(scope_before(c.text, m.start())) or HEDGE.search(m.group(0)):
                pol = "unknown"
            else:
                free = bool(m.group("free") or m.group("free2"))
                pol = "absent" if free != bool(m.group("neg")) else "present"
            hits.append(Hit("adjacent_invasion", pol, c.gross, c.text[max(0, m.start() - 40) : m.end() + 20]))
    value = _combine(hits)
    if value == "unknown" and staged:
        size = _tumour_size_cm(cls)
        if size is None or size <= 7.0:
            return "present", hits + staged
    return value, hits + staged


# Spread through air spaces.
_STAS = re.compile(
    r"\bspread\s+(?:of\s+(?:the\s+)?(?:tumou?r|carcinoma)\s+(?:cells\s+)?)?through\s+(?:the\s+)?(?:air\s*[- ]?|alveolar\s+)spaces?\b|"
    r"\bSTAS\b|\baerogenous\s+spread\b",
    re.I,
)


def _stas(cls: list[Clause]) -> tuple[str, list[Hit]]:
    hits = []
    for c in cls:
        for m in _STAS.finditer(c.text):
            pol = mention_polarity(c.text, m.start(), m.end())
            if pol:
                hits.append(Hit("stas", pol, c.gross, c.text[max(0, m.start() - 40) : m.end() + 40]))
    return _combine(hits), hits


# Margins.
_MARGIN = re.compile(
    r"\b(?:(?:all|other|surgical|resection|bronch\w*|vascular|parenchymal|stapled?|soft\s+tissue|final|"
    r"bronchovascular|hilar|pleural|chest\s+wall|and|,)\s*)*"
    r"(?:margins?|(?:resection|excision)\s+(?:lines?|edges?|surfaces?|planes?|levels?)|(?:inked\s+)?staple\s+line|inked\s+edge|"
    r"(?<=bronchial\s)stump)\b"
    r"(?:\s+of\s+(?:the\s+)?resection)?(?:\s+status)?",
    re.I,
)
_MARGIN_CUES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.I), lab)
    for p, lab in [
        (r"\bnot\s+applicable\b|\bn/a\b", "none"),
        (
            r"\bnot\s+(?:specified|assessed|evaluated|evaluable|determined)\b|\bcannot\s+be\b|\bindeterminate\b|"
            r"\bsuspicious\b|\bequivocal\b|\bunknown\b|\bn/a\b|\bmay\s+not\b",
            "unknown",
        ),
        (
            r"\bnot\s+involved\b|\bnegative\b|\b[fp]ree\b|\buninvolved\b|\bclear\b|\bno\s+(?:\w+\s+){0,2}(?:tumou?r|"
            r"carcinoma|malignancy|neoplasm|disease)\b|\bwithout\b|\bbenign\b|\btumou?r-free\b|\bnot\s+(?:seen|identified|present)\b|"
            r"\bnone\b|\b\d+(?:\.\d+)?\s*(?:cm|mm)\b|\bno\b",
            "negative",
        ),
        (
            r"\bpositive\b|(?<!un)\binvolv(?:ed|ing|es)\b|\binfiltrat(?:ed|es|ing)\b|\b(?:tumou?r|carcinoma|neoplasm|malignancy|"
            r"adenocarcinoma|metasta\w+)\s+(?:is\s+|are\s+)?(?:present|identified|seen|noted)\b|\bpresent\s+at\b",
            "positive",
        ),
    ]
]
_MARGIN_POS_BEFORE = re.compile(
    r"\b(?:tumou?r|carcinoma|neoplasm|malignancy|adenocarcinoma|lesion)\s+(?:is\s+|are\s+)?(?:\w+\s+){0,2}?"
    r"(?:present\s+at|at|involv\w+|infiltrat\w*(?:\s+of)?|extends?\s+to|extending\s+to|reach\w*|transected\s+at)\s+"
    r"(?:the\s+)?(?:inked\s+)?(?:\(?\w+\)?\s+){0,2}$",  # "extends to the parenchymal (stapled) margin"
    re.I,
)
_MARGIN_NEG_BEFORE = re.compile(
    r"\bwithin\s+(?:\d*[.,])?\d*[1-9]\d*\s*(?:cm|mm)\s+of\s+(?:the\s+)?(?:\w+\s+){0,3}$|"  # "within 0.1 cm of the margin"
    r"\b(?:clear\s+of|free\s+of|away\s+from|from|distance\s+(?:\w+\s+){0,4}(?:from|to))\s+(?:the\s+)?(?:\w+\s+){0,3}$"
    r"|\bno\s+(?:\w+\s+)?(?:tumou?r|carcinoma|malignancy|neoplasm)\b.*$|"
    r"\b(?:negative|tumou?r-free|non-tumou?rous|uninvolved|free)\s+(?:\w+\s+){0,3}$|"
    r"\b(?:neither|nor)\s+(?:\w+\s+){0,4}$",  # "Neither the bronchial nor the vascular margin is involved"
    re.I,
)
_MARGIN_SKIP_BEFORE = re.compile(
    r"\b(?:if|closest|nearest|specify|block|cassette|shave[d]?|submitted|section\s+of|sections?|frozen|"
    r"designation|labeled)\b[^.]{0,40}$",
    re.I,
)
# Margins and lymph nodes as one coordinated subject of one finding ("Three lymph nodes and the bronchial and vascular
# margins are negative for tumor", "The bronchial margin and all lymph nodes are free of tumor"): the finding is the
# margins' too, so the lymph-node mention does not make it a lymph-node statement. Only a bare "and" / "or" / "nor"
# (no verb, no finding) may stand between the two names.
_NODES_AND_MARGIN = re.compile(
    r"\bnodes?(?:\s*\([^)]{0,20}\))?(?:\s*,)?\s+(?:and|n?or|&)\s+(?:(?:the|all|both|other)\s+)?(?:[\w-]+\s+){0,4}?$",
    re.I,
)
_MARGIN_AND_NODES = re.compile(
    r"^(?:\s+of\s+(?:the\s+)?[\w\s]{1,40}?)?\s*,?\s*(?:and|n?or|&)\s+(?:(?:the|all|both|other)\s+)?"
    r"(?:(?:\(?\w+\)?|[\w-]+)\s+){0,4}?(?:lymph\s+)?nodes?\b",  # "margin of bronchi and vessels and all the lymph nodes"
    re.I,
)


def _margins_with_nodes(t: str, start: int, end: int) -> bool:
    """Is the margin mention at ``t[start:end]`` coordinated with a lymph-node mention by a bare "and" / "or"?"""
    noun = re.search(r"(?:margins?|lines?|edges?|surfaces?|planes?|levels?|stump)\b", t[start:end], re.I)
    head_end = start + noun.start() if noun else start
    ahead = _NODES_AND_MARGIN.search(t[max(0, start - 60) : head_end])
    if ahead and not _BARE_LIST_STOP.search(ahead.group(0).split(None, 1)[-1]):
        return True
    behind = _MARGIN_AND_NODES.match(t[end : end + 60])
    return bool(behind) and not _BARE_LIST_STOP.search(behind.group(0))


_MARGIN_DISTANCE = re.compile(r"\s*(?:\([^)]{0,20}\)\s*)?(?::|is|of)\s*(\d+(?:\.\d+)?)\s*(?:cm|mm)\b", re.I)
_R_CODE = re.compile(r"(?<![A-Za-z0-9/#-])R\s?([012]|[xX])(?![A-Za-z0-9-])")
_R_CONTEXT = re.compile(
    r"\bp?T\s?[0-4][a-c]?\b|\bresidual\s+tumou?r|\bR[\s-]*(?:classification|category|status)|\bcategory\s+of\b|"
    r"\b(?:resection|margin)\s+status|\bcomplete(?:ly)?\s+resect\w*|\bR\s?[012xX]\s+resection\b|\bstage\b|"
    r"\bmargins?\s*:\s*R\s?[012xX]\b",  # "Resection margins: R1"
    re.I,
)


def _margin_first_cue(text: str) -> str | None:
    cue = earliest_cue(text, _MARGIN_CUES)
    return None if cue == "none" else cue


def _margins(cls: list[Clause]) -> tuple[str, list[Hit]]:
    """R0/R1/R2/Rx decide when given; otherwise margin statements (micro over gross, involved wins)."""
    hits: list[Hit] = []
    codes: list[str] = []
    full = ". ".join(c.text for c in cls)
    for m in _R_CODE.finditer(full):
        ctx = full[max(0, m.start() - 60) : m.end() + 20]
        # the words around the code, within its own sentence
        near = (
            re.split(r"\.\s", full[max(0, m.start() - 25) : m.start()])[-1]
            + re.split(r"\.\s", full[m.start() : m.end() + 15])[0]
        )
        if not _R_CONTEXT.search(ctx) or re.search(r"\b(?:station|level|lymph|node|LN|cassette|labeled)\b", near, re.I):
            continue
        codes.append({"0": "negative", "1": "positive", "2": "positive"}.get(m.group(1).upper(), "unknown"))
        hits.append(Hit("margins", codes[-1], False, ctx))
    for c in cls:
        t = c.text
        for m in _MARGIN.finditer(t):
            if not re.search(r"margin|resection|excision|inked|staple|stump", m.group(0), re.I):
                continue
            key_end = t.find(":", m.end())
            if key_end >= 0 and re.search(r"\bin\s+situ\b|\(CIS\)", t[m.end() : key_end], re.I):
                continue  # "Bronchial Margin Involvement by Carcinoma in situ (CIS): ..." is not the invasive margin
            before = scope_before(t, m.start())
            distance = _MARGIN_DISTANCE.match(t[m.end() :])
            if distance and re.search(r"\bdistance\b", before, re.I) and float(distance.group(1)) > 0:
                # "Distance of invasive carcinoma from closest margin: 2.5 cm": the tumour is clear of it
                hits.append(Hit("margins", "negative", c.gross, t[max(0, m.start() - 50) : m.end() + 30]))
                continue
            if _MARGIN_SKIP_BEFORE.search(before) or (
                lymph_context(t, m.start(), m.end()) and not _margins_with_nodes(t, m.start(), m.end())
            ):
                continue
            after = re.split(r"\.\s", t[m.end() :])[0][:140]
            value = synoptic_value(t, m.end())
            inv_key = re.match(r"\s*involvement\b[^:.;]{0,50}:", t[m.end() :], re.I)
            if value is None and inv_key:  # "Margin involvement by invasive carcinoma: ..." (a long key)
                value = synoptic_value(t, m.end() + inv_key.end() - 1)
            pos_before = bool(_MARGIN_POS_BEFORE.search(before)) and not negated(t, m.start(), before)
            if HEDGE.search(before):
                pol: str | None = "unknown"
            elif _MARGIN_NEG_BEFORE.search(before) or (
                value is None and not m.group(0).startswith(",") and negated(t, m.start(), before)
            ):
                # "... clear of the margin", "does not involve the lymph nodes or the bronchial margin"; not a list's
                # next item ("bronchial margin not involved, pleural margin focally involved")
                pol = "negative"
            elif value is not None:  # a synoptic line: its value decides ("Tumor at margin: Not identified")
                pol = _margin_first_cue(value)
                if pol is None and (pos_before or re.search(r"involv", t[m.start() : t.find(":", m.end())], re.I)):
                    # "Margin involvement by invasive carcinoma: Absent / Present / Yes"
                    pol = {"present": "positive", "absent": "negative", "unknown": "unknown"}.get(
                        first_cue(value) or ""
                    )
                if pol is None and pos_before:
                    pol = "positive"  # "Tumor present at margin: bronchial"
            elif pos_before:
                pol = "positive"
            else:
                pol = _margin_first_cue(after)
            if pol:
                hits.append(Hit("margins", pol, c.gross, t[max(0, m.start() - 50) : m.end() + 60]))
    definite = [v for v in codes if v != "unknown"]
    if definite:
        return ("positive" if "positive" in definite else "negative"), hits
    if codes:
        return "unknown", hits
    return _combine(hits, positive="positive", negative="negative"), hits


# Differentiation.
_GRADE_KEY = re.compile(
    r"\b(?:histologic(?:al)?\s+grade|tumou?r\s+grade|grade\s*/\s*differentiation|differentiation|grading|grade)\s*"
    r"(?:\([^)]*\))?\s*(?:[:.-]\s*(.{0,60})|$|(?=(?:G\s?)?(?:[1-4]|I{1,3}|IV)\b)(.{0,20}))",
    re.I,
)
_GRADE_IGNORE = re.compile(r"\bfuhrman|\bneuroendocrine|\bcarcinoid|\bgleason|\bdysplasia", re.I)
_NUCLEAR_GRADE = re.compile(
    r"\b(?:(?:high|low|intermediate)\s+)?nuclear\s+grade\b(?:\s*[:.]?\s*\(?[\dIV/ ]*\)?)?", re.I
)
_GRADE_OF = re.compile(r"\s*(?:/|\(?\s*of\s+)\s*(?:[34]|III|IV)\b\s*\)?", re.I)  # "2/3", "II/III", "(of 4)"
_GRADE_WORDS = re.compile(r"\b(?:well|moderate\w*|poor\w*|un)[\s-]*differentiat|\bmixed\s+differentiation", re.I)
_GRADE_MENTION = re.compile(
    r"\bgrade\s*[:.]?\s*(?:[1-4]|iv|i{1,3})\b(?:\s*-\s*(?:[1-4]|iv|i{1,3})\b)?(?!\s*(?:cm|mm))|\(G\s?[1-4]\)|"
    r"(?<![A-Za-z])G\s?\.?\s?[1-4](?:\s*-\s*G?[1-4])?\b(?!\s*(?:cm|mm|x))",
    re.I,
)


def _levels(text: str, bare_words: bool = False) -> set[int]:
    """Grade levels named in ``text``; ``bare_words`` also reads "Moderate" (synoptic values)."""
    text = _GRADE_OF.sub(" ", text)
    if re.search(r"\bmixed\s+differentiation", text, re.I):
        return {1, 3}  # -> "mixed"
    levels = grade_levels(text)
    if bare_words:
        for m in re.finditer(r"\b(well|moderate(?:ly)?|poor(?:ly)?)\b", text, re.I):
            levels.add({"w": 1, "m": 2, "p": 3}[m.group(1)[0].lower()])
        if not levels:
            levels = grade_levels("grade " + text.strip())
    return levels


def _differentiation(cls: list[Clause]) -> tuple[str, list[Hit]]:
    """(Synoptic grade line + diagnosis grade words) > gross/frozen words > numbers (G2, grade 3 of 4)."""
    hits: list[Hit] = []
    pools: dict[str, set[int]] = {"synoptic": set(), "words": set(), "gross_words": set(), "numbers": set()}
    for i, c in enumerate(cls):
        if _GRADE_IGNORE.search(c.text):
            continue
        text = four_tier_top(_NUCLEAR_GRADE.sub(" ", c.text))
        for m in _GRADE_KEY.finditer(text):
            value = m.group(1) if m.group(1) is not None else m.group(2)
            if value is None and i + 1 < len(cls):  # "Grade/Differentiation. III"
                value = cls[i + 1].text[:40]
            if not value:
                continue
            value = re.split(r"\.\s|;", value)[0]  # not the template legend after it
            lv = _levels(value, bare_words=True)
            if lv:
                pools["synoptic"] |= lv
                hits.append(Hit("differentiation", levels_to_differentiation(lv), c.gross, m.group(0)[:80]))
        if _GRADE_WORDS.search(text) and not re.match(r"^\s*\d\.?\s*(?:well|moderate|poor)", text, re.I):
            lv = _levels(text)
            if lv:
                pools["gross_words" if c.gross else "words"] |= lv
                hits.append(Hit("differentiation", levels_to_differentiation(lv), c.gross, text[:120]))
        for m in _GRADE_MENTION.finditer(text):
            if (
                m.group(0)[0] in "Gg("
                and not re.search(r"\bp?T\s?[0-4]|\bgrad(?:e|ing)|\bclassification|\bdifferentiat|\(G", text, re.I)
                and not re.search(r"carcinoma\s*,\s*$", text[: m.start()], re.I)  # "Adenocarcinoma, G2, ..."
            ):
                continue
            lv = _levels(
                m.group(0) if m.group(0).lower().startswith("grade") else "grade " + m.group(0).strip("(G). g")
            )
            if lv:
                pools["numbers"] |= lv
                hits.append(Hit("differentiation", levels_to_differentiation(lv), c.gross, m.group(0)))
    levels = (pools["synoptic"] | pools["words"]) or pools["gross_words"] or pools["numbers"]
    return levels_to_differentiation(levels), hits


_HIST_TYPE = re.compile(r"\bhistologic(?:al)?\s+type\s*[:.-]?\s*(.+)", re.I)
_HIST_MOD = (
    r"(?:(?:non-?)?keratini[sz]ing|basaloid|(?:non-?)?muci(?:nous|genous)|papillary|micropapillary|acinar|"
    r"solid|lepidic|mixed|sarcomatoid|clear\s+cell|invasive|infiltrating)"
)
_HIST_NAME = re.compile(
    r"\b((?:" + _HIST_MOD + r"\s+){0,3}(?:adenocarcinoma|squamous\s+cell\s+carcinoma|adenosquamous\s+carcinoma|"
    r"large\s+cell\s+carcinoma|carcinoma)(?:\s*,\s*[a-z-]+(?:\s+[a-z-]+)?\s+(?:type|pattern|predominant|features))?)",
    re.I,
)
_HIST_DROP = re.compile(
    r"\b(?:invasive|infiltrating|of\s+(?:the\s+)?lung|primary|residual|metastatic|"
    r"well|moderately|poorly|differentiated|grade)\b|[-,]\s*$",
    re.I,
)


def _clean_histology(value: str) -> str:
    value = re.split(r"[.;(]|\s{2}", value)[0]
    value = re.sub(r"\s+of\s+(?:the\s+)?lung\b", "", value, flags=re.I)
    m = _HIST_NAME.search(value)
    value = m.group(1) if m else ""
    value = _HIST_DROP.sub(" ", value)
    value = re.sub(r"\s+,", ",", re.sub(r"\s+", " ", value)).strip(" ,-").lower()
    return value if re.search(r"carcinoma", value) and len(value.split()) <= 8 else ""


def _histology(cls: list[Clause]) -> str:
    """The histologic type as the report names it ("keratinizing squamous cell carcinoma",
    "adenocarcinoma, solid type"): a "Histologic type:" line first, else the first tumour
    name in the diagnosis (never gross description or lymph-node text); "" when none."""
    for c in cls:
        m = _HIST_TYPE.search(c.text)
        if m and not c.lymph:
            found = _clean_histology(m.group(1))
            if found:
                return found
    for c in cls:
        if c.gross or c.lymph or re.search(r"\bmetasta|\blymph", c.text, re.I):
            continue
        m = _HIST_NAME.search(c.text)
        if m:
            found = _clean_histology(m.group(1))
            if found and found != "carcinoma":
                return found
    return ""


# ----------------------------------------------------------------------------- API


@dataclass
class OfflineResult:
    """Labels for the six fields, the evidence behind them, and the six canonical phrases.

    ``histology`` is the histologic type the report names (data, e.g. for audits); it enters the
    description only when ``name_histotype`` is set (an opt-in extension: it puts the class label
    into the pre-training texts, which the FiVE authors' descriptions do not do)."""

    labels: dict[str, str]
    evidence: dict[str, list[Hit]] = field(default_factory=dict)
    histology: str = ""
    name_histotype: bool = False

    @property
    def phrases(self) -> list[str]:
        return self.answer.split("; ")

    @property
    def answer(self) -> str:
        """The six phrases joined by '; ' (what an LLM backend would return). The first is the grade
        only ("Moderately differentiated"); with ``name_histotype`` the histologic type follows the
        grade when the report gives both ("Well differentiated keratinizing squamous cell carcinoma")."""
        return canonical_description(self.labels, self.histology if self.name_histotype else "")


_EXTRACTORS = {
    "differentiation": _differentiation,
    "stas": _stas,
    "vascular_invasion": _vascular,
    "pleural_invasion": _pleural,
    "adjacent_invasion": _adjacent,
    "margins": _margins,
}


def extract(text: str, *, name_histotype: bool = False) -> OfflineResult:
    """Raw report text -> :class:`OfflineResult` (labels, evidence, canonical phrases).

    ``name_histotype`` only changes the description (see :class:`OfflineResult`), never the labels."""
    cls = clauses(text or "")
    labels: dict[str, str] = {}
    evidence: dict[str, list[Hit]] = {}
    for f in FIELDS:
        labels[f], evidence[f] = _EXTRACTORS[f](cls)
    return OfflineResult(labels=labels, evidence=evidence, histology=_histology(cls), name_histotype=name_histotype)


def answer_report(text: str, *, name_histotype: bool = False) -> str:
    """Raw report text -> the six canonical answer phrases joined by '; '."""
    return extract(text, name_histotype=name_histotype).answer
