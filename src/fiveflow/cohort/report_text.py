"""Raw pathology reports for the demo cohort, in the style of the TCGA lung reports.

One report per patient, deterministic in the patient's seed. Four layouts (US synoptic
checklist, UK narrative, short translated European report, upper-case "corrected report"),
each fact phrased by one of several synonyms, plus lymph-node sentences and other distractors
(perineural invasion, node counts, frozen sections, line-break periods as left by OCR).

Facts that are ``unknown`` in the case are never stated; sometimes an explicit non-answer
("cannot be assessed", "pending elastic stains") stands in their place, as in real reports.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .demo import DemoCase

Pick = Callable[..., str]

_ICD = {
    "acinar": "8551/3",
    "papillary": "8260/3",
    "solid": "8230/3",
    "lepidic": "8250/3",
    "micropapillary": "8265/3",
    "keratinizing": "8071/3",
    "non-keratinizing": "8072/3",
    "basaloid": "8083/3",
}

_GRADE = {
    "well": (("well differentiated", "well-differentiated"), "G1", "1", "I"),
    "moderate": (("moderately differentiated", "moderately-differentiated"), "G2", "2", "II"),
    "moderate_to_poor": (
        ("moderately to poorly differentiated", "moderately-poorly differentiated"),
        "G2-G3",
        "2-3",
        "II-III",
    ),
    "poor": (("poorly differentiated", "poorly-differentiated"), "G3", "3", "III"),
    # rare in real reports (1 of the 300 development answers is mixed): a heterogeneous tumour, G1 and G3 areas
    "mixed": (("of mixed differentiation", "mixed differentiation"), "G1-G3", "1-3", "I-III"),
    "undifferentiated": (("undifferentiated", "undifferentiated"), "G4", "4", "IV"),
}


class _Facts:
    """Phrase choices for one report (each method returns a sentence or fragment, '' when unknown)."""

    def __init__(self, case: DemoCase, rng: random.Random):
        self.c = case
        self.r = rng
        self.margin_cm = round(rng.uniform(0.3, 5.0), 1)  # distance of the tumour to the bronchial margin

    def pick(self, *options: str) -> str:
        return self.r.choice(options)

    # --- histology and grade
    def histology(self) -> str:
        c = self.c
        if c.label == "LUAD":
            sub = c.subtype
            return self.pick(
                f"adenocarcinoma, {sub} predominant",
                f"invasive adenocarcinoma, {sub} pattern",
                f"invasive {'non-mucinous ' if sub != 'solid' else ''}adenocarcinoma with {sub} features",
                f"adenocarcinoma of lung, {sub} type",
                f"{sub} predominant adenocarcinoma",
            )
        sub = c.subtype
        return self.pick(
            f"{sub} squamous cell carcinoma",
            f"squamous cell carcinoma, {sub} type",
            f"invasive squamous cell carcinoma ({sub})",
            f"squamous cell carcinoma, {sub}",
        )

    def grade_words(self) -> str:
        d = self.c.differentiation
        return self.pick(*_GRADE[d][0]) if d in _GRADE else ""

    def grade_line(self) -> str:
        d = self.c.differentiation
        if d not in _GRADE:
            return self.pick("", "", "Histologic grade: Cannot be assessed.")
        words, g, n, roman = _GRADE[d]
        return self.pick(
            f"Histologic grade: {g}: {words[0].capitalize()}.",
            f"HISTOLOGIC GRADE: Grade {roman}, {words[0]}.",
            f"Grade: {words[1].capitalize()} ({g}).",
            f"Histologic grade: {words[0]} (grade {n} of {4 if n == '4' else 3}).",
        )

    # --- the five presence facts
    def pleura(self, style: str) -> str:
        v = self.c.pleural_invasion
        if v == "present":
            return {
                "check": self.pick(
                    "Visceral pleural invasion: Present (PL1).",
                    "Visceral pleura invasion: Present.",
                    "VISCERAL PLEURAL INVASION: PRESENT, tumor extends beyond the elastic layer (PL1).",
                    "Visceral pleural invasion: Identified (elastic stain confirms PL2).",
                ),
                "prose": self.pick(
                    "The tumour infiltrates the visceral pleura.",
                    "An elastic stain shows tumor invading beyond the elastic lamina of the visceral pleura.",
                    "Tumor invades into the visceral pleura.",
                    "The carcinoma extends to and involves the pleural surface.",
                ),
                "short": self.pick(
                    "with pleural infiltration", "with invasion of the visceral pleura", "infiltrating the pleura"
                ),
                "caps": self.pick("TUMOR INVADES INTO THE VISCERAL PLEURA", "VISCERAL PLEURAL INVASION IS PRESENT"),
            }[style]
        if v == "absent":
            return {
                "check": self.pick(
                    "Visceral pleural invasion: Not identified (PL0).",
                    "Visceral pleura invasion: Absent.",
                    "VISCERAL PLEURAL INVASION: Not identified.",
                    "Pleural invasion: None (PL0).",
                ),
                "prose": self.pick(
                    "The tumour does not involve the pleura.",
                    "The visceral pleura is free of tumor.",
                    "No pleural invasion is seen on elastic stain.",
                    "The overlying pleura is uninvolved.",
                ),
                "short": self.pick("without pleural infiltration", "the pleura not being involved", "pleura free"),
                "caps": self.pick("VISCERAL PLEURA IS FREE OF TUMOR", "NO VISCERAL PLEURAL INVASION IDENTIFIED"),
            }[style]
        if style == "check":
            return self.pick(
                "", "", "", "Visceral pleural invasion: Indeterminate, pending elastic stains; addendum to follow."
            )
        return ""

    def vascular(self, style: str) -> str:
        v = self.c.vascular_invasion
        if v == "present":
            return {
                "check": self.pick(
                    "Lymph-vascular invasion: Present.",
                    "Lymphovascular invasion: Present.",
                    "VENOUS (LARGE VESSEL) INVASION (V): Present. ARTERIAL (LARGE VESSEL) INVASION: Absent.",
                    "Angiolymphatic invasion: Identified.",
                ),
                "prose": self.pick(
                    "Foci of angiolymphatic invasion are identified.",
                    "Tumour emboli are seen within vascular spaces.",
                    "There is lymphovascular invasion.",
                    "Vascular invasion is present.",
                ),
                "short": self.pick(
                    "and invasion of the blood vessels", "with angioinvasion", "with lymphovascular invasion"
                ),
                "caps": self.pick(
                    "ANGIOLYMPHATIC INVASION IDENTIFIED", "VASCULAR INVASION: PRESENT", "ARTERIAL INVASION IDENTIFIED"
                ),
            }[style]
        if v == "absent":
            return {
                "check": self.pick(
                    "Lymph-vascular invasion: Not identified.",
                    "Lymphovascular invasion: Absent.",
                    "VENOUS (LARGE VESSEL) INVASION (V): Absent. ARTERIAL (LARGE VESSEL) INVASION: Absent. "
                    "LYMPHATIC (SMALL VESSEL) INVASION (L): Absent.",
                    "Angiolymphatic invasion: Not identified.",
                ),
                "prose": self.pick(
                    "No angiolymphatic invasion is seen.",
                    "No lymphatic or vascular invasion is identified.",
                    "Lymphovascular invasion is not identified.",
                    "There is no evidence of vascular invasion.",
                ),
                "short": self.pick("without vascular invasion", "no angioinvasion"),
                "caps": self.pick("NO ANGIOLYMPHATIC INVASION IDENTIFIED", "LYMPH-VASCULAR INVASION: NOT IDENTIFIED"),
            }[style]
        return ""

    def adjacent(self, style: str) -> str:
        v, site = self.c.adjacent_invasion, self.c.adjacent_site
        if v == "present":
            return {
                "check": self.pick(
                    f"Direct invasion of adjacent structures: Present ({site}).",
                    f"TUMOR EXTENSION: Tumor directly invades the {site}.",
                    f"Adjacent structures: {site.capitalize()} involved by carcinoma.",
                ),
                "prose": self.pick(
                    f"The tumour extends into the {site}.",
                    f"The carcinoma directly invades the attached {site}.",
                    f"There is direct extension of tumor into the {site}.",
                ),
                "short": self.pick(f"with infiltration of the {site}", f"invading the {site}"),
                "caps": self.pick(f"TUMOR INVADES THE {site.upper()}", f"DIRECT EXTENSION INTO {site.upper()}"),
            }[style]
        if v == "absent":
            return {
                "check": self.pick(
                    "Direct invasion of adjacent structures: Not identified.",
                    "TUMOR EXTENSION: Not identified.",
                    "Direct extension of tumor: None identified.",
                ),
                "prose": self.pick(
                    "There is no extension into adjacent structures.",
                    f"The attached {site} is free of tumour.",
                    "No direct extension beyond the lung is seen.",
                ),
                "short": self.pick("without infiltration of neighbouring structures", "no extension beyond the lung"),
                "caps": self.pick("NO DIRECT EXTENSION INTO ADJACENT STRUCTURES", f"{site.upper()} FREE OF TUMOR"),
            }[style]
        return ""

    def margins(self, style: str) -> str:
        v, site = self.c.margins, self.c.margin_site
        if v == "negative":
            return {
                "check": self.pick(
                    "Margins: Uninvolved by invasive carcinoma.",
                    "MARGINS: Bronchial margin: negative. Vascular margin: negative. Parenchymal margin: negative.",
                    "Margins: Uninvolved by invasive carcinoma. Distance of invasive carcinoma from closest "
                    f"margin: {self.margin_cm:.1f} cm, bronchial margin.",
                    "Margin involvement by invasive carcinoma: Uninvolved.",
                ),
                "prose": self.pick(
                    "The resection margins are clear.",
                    "The tumour is clear of the stapled surgical margin.",
                    "Bronchial, vascular and parenchymal margins are free of tumor.",
                    "Surgical margins are negative for malignancy.",
                ),
                "short": self.pick("R0", "R0 (margins free)"),
                "caps": self.pick(
                    "BRONCHIAL AND VASCULAR MARGINS FREE OF TUMOR",
                    "MARGINS OF RESECTION ARE NEGATIVE FOR CARCINOMA",
                    "SURGICAL MARGINS NEGATIVE",
                ),
            }[style]
        if v == "positive":
            return {
                "check": self.pick(
                    f"Margins: Involved by invasive carcinoma ({site} margin).",
                    f"MARGINS: {site.capitalize()} margin: POSITIVE for carcinoma.",
                    f"Margin involvement by invasive carcinoma: Involved; {site} margin.",
                ),
                "prose": self.pick(
                    f"The tumour extends to the {site} resection margin.",
                    f"Carcinoma is present at the {site} margin.",
                    f"Tumor is seen at the inked {site} margin.",
                ),
                "short": self.pick("R1", f"R1 ({site} margin)"),
                "caps": self.pick(
                    f"CARCINOMA PRESENT AT {site.upper()} MARGIN", f"TUMOR EXTENDS TO THE {site.upper()} MARGIN"
                ),
            }[style]
        if style == "check":
            return self.pick("", "", "Margins: Cannot be assessed.")
        return ""

    def stas(self, style: str) -> str:
        v = self.c.stas
        if v == "present":
            return {
                "check": self.pick("Tumor spread through air spaces (STAS): Present.", "STAS: Identified."),
                "prose": self.pick(
                    "Spread through air spaces (STAS) is identified.",
                    "Tumour cell clusters are seen within air spaces beyond the tumour edge (STAS).",
                ),
                "short": "with spread through air spaces",
                "caps": "SPREAD THROUGH AIR SPACES (STAS) PRESENT",
            }[style]
        if v == "absent":
            return {
                "check": self.pick("Tumor spread through air spaces (STAS): Not identified.", "STAS: Absent."),
                "prose": "No spread through air spaces is seen.",
                "short": "no spread through air spaces",
                "caps": "NO SPREAD THROUGH AIR SPACES",
            }[style]
        return ""

    # --- lymph nodes (the extractor must ignore these)
    def node_stations(self) -> list[tuple[str, int, int]]:
        c, r = self.c, self.r
        side = "R" if c.laterality == "right" else "L"
        pool = [
            "level 7 (subcarinal)",
            f"level 10{side} (hilar)",
            f"level 11{side} (interlobar)",
            f"level 4{side}",
            "level 5 (aortopulmonary window)" if side == "L" else "level 2R",
            "level 9",
        ]
        r.shuffle(pool)
        k = min(len(pool), max(2, min(4, c.nodes_examined // 3)))
        stations = pool[:k]
        counts = [1] * k
        for _ in range(c.nodes_examined - k):
            counts[r.randrange(k)] += 1
        pos = [0] * k
        for _ in range(c.nodes_positive):
            choices = [i for i in range(k) if pos[i] < counts[i]]
            pos[r.choice(choices)] += 1
        return list(zip(stations, counts, pos))

    def node_total(self) -> str:
        c = self.c
        e, p = c.nodes_examined, c.nodes_positive
        if p == 0:
            return self.pick(
                f"Lymph nodes: {p}/{e} negative for metastatic carcinoma.",
                f"Regional lymph nodes: Number examined: {e}. Number involved: 0.",
                f"All {e} lymph nodes are negative for malignancy (0/{e}).",
            )
        return self.pick(
            f"Metastatic carcinoma in {p} of {e} lymph nodes ({p}/{e}).",
            f"Regional lymph nodes: Number examined: {e}. Number involved: {p}. Extranodal extension: Not identified.",
            f"Lymph nodes: {p}/{e} positive for metastatic carcinoma.",
        )


def _ocr(text: str, rng: random.Random, width: int) -> str:
    """Re-flow a paragraph the way OCR'd TCGA reports read: a period at each line end."""
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    out = [ln if ln.endswith((".", ":", ";")) else ln + "." for ln in lines[:-1]] + lines[-1:]
    return " ".join(out)


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def _gross(f: _Facts, label: str, stations) -> str:
    c, r = f.c, f.r
    weight = r.randint(90, 420) if c.procedure != "pneumonectomy" else r.randint(450, 900)
    dims = f"{r.uniform(12, 24):.1f} x {r.uniform(7, 14):.1f} x {r.uniform(2.5, 6):.1f} cm"
    s = c.tumor_size_cm
    tumor = f"{s:.1f} x {s * r.uniform(0.65, 0.95):.1f} x {s * r.uniform(0.4, 0.8):.1f} cm"
    colour = f.pick("tan-white", "gray-white", "yellow-tan", "white-tan")
    text = (
        f'{label}. Received fresh labeled "{c.laterality} {c.lobe} lobe" is a {weight} gram '
        f"{c.procedure} specimen measuring {dims}. Sectioning reveals a {colour}, firm, ill-defined mass "
        f"measuring {tumor}"
    )
    if c.margins != "unknown":
        text += f", located {f.margin_cm:.1f} cm from the bronchial margin"
    text += (
        ". The remaining parenchyma is "
        + f.pick("red-brown and spongy", "tan-pink with anthracotic pigment", "emphysematous")
        + ". Representative sections are submitted."
    )
    for i, (name, n, _) in enumerate(stations):
        text += (
            f' {chr(ord(label[0]) + i + 1)}. Received in formalin labeled "{name} lymph node" are {n} '
            f"fragment{'s' if n > 1 else ''} of black-tan soft tissue, entirely submitted."
        )
    return text


def _us_synoptic(f: _Facts) -> str:
    c, r = f.c, f.r
    stations = f.node_stations()
    side = c.laterality.upper()
    hist = f.histology()
    diag = [
        f"A. LUNG, {side} {c.lobe.upper()} LOBE, {c.procedure.upper()}:",
        f"- {hist.upper()}{', ' + f.grade_words().upper() if f.grade_words() else ''}.",
        f"- TUMOR SIZE: {c.tumor_size_cm:.1f} CM.",
    ]
    for line in (f.pleura("caps"), f.vascular("caps"), f.adjacent("caps"), f.margins("caps"), f.stas("caps")):
        if line and r.random() < 0.75:
            diag.append(f"- {line}.")
    for i, (name, n, p) in enumerate(stations):
        diag.append(
            f"{chr(66 + i)}. LYMPH NODE, {name.upper()}, EXCISION: "
            + (
                f"METASTATIC CARCINOMA IN {p} OF {n} LYMPH NODES ({p}/{n})."
                if p
                else f"{n} LYMPH NODE{'S' if n > 1 else ''}, NEGATIVE FOR MALIGNANCY (0/{n})."
            )
        )
    checklist = [
        f"Procedure: {c.procedure.capitalize()}.",
        f"Specimen laterality: {c.laterality.capitalize()}.",
        f"Tumor site: {c.lobe.capitalize()} lobe.",
        f"Tumor size: Greatest dimension: {c.tumor_size_cm:.1f} cm.",
        "Tumor focality: Unifocal.",
        f"Histologic type: {hist[0].upper() + hist[1:]}.",
        f.grade_line(),
        f.pleura("check"),
        f.vascular("check"),
        f.adjacent("check"),
        f.margins("check"),
        f.stas("check"),
        "Perineural invasion: " + f.pick("Not identified.", "Absent."),
        "Treatment effect: Not applicable.",
        f.node_total(),
        f"Pathologic staging (pTNM): {c.pt} {c.pn}" + f.pick("", " pMX", ", stage " + c.stage) + ".",
    ]
    facts = checklist[7:12]
    r.shuffle(facts)
    checklist[7:12] = facts
    header = f.pick("SURGICAL PATHOLOGY REPORT.", "Surgical Pathology Consultation Report.", "PATHOLOGY REPORT. FINAL.")
    clinical = f"CLINICAL HISTORY: {c.age}-year-old {c.sex} with {c.laterality} {c.lobe} lobe lung mass" + f.pick(
        ".", ", former smoker.", ", 40 pack-year smoking history.", ", rule out malignancy."
    )
    specimens = f"SPECIMENS: A. {c.laterality.capitalize()} {c.lobe} lobe. " + " ".join(
        f"{chr(66 + i)}. Lymph node, {s[0]}." for i, s in enumerate(stations)
    )
    frozen = ""
    if r.random() < 0.5:
        frozen = "INTRAOPERATIVE CONSULTATION: A. " + f.pick(
            "Non-small cell carcinoma.", "Carcinoma, defer typing to permanents."
        )
        if c.margins == "negative":
            frozen += " Bronchial margin negative for tumor."
    gross = "GROSS DESCRIPTION: " + _ocr(_gross(f, "A", stations), r, r.randint(60, 90))
    return _join(
        header,
        clinical,
        specimens,
        frozen,
        "FINAL DIAGNOSIS:",
        " ".join(diag),
        gross,
        "SYNOPTIC REPORT - LUNG RESECTION:",
        " ".join(x for x in checklist if x),
    )


def _uk_narrative(f: _Facts) -> str:
    c, r = f.c, f.r
    stations = f.node_stations()
    hist = f.histology()
    grade = f.grade_words()
    micro = [
        f"Sections show a {'peripherally located ' if r.random() < 0.5 else ''}{grade + ' ' if grade else ''}{hist}."
    ]
    if c.label == "LUAD":
        micro.append(
            f.pick(
                "The tumour is positive for CK7 and TTF1 and negative for CK20.",
                "Tumour cells form glands lined by columnar cells with enlarged nuclei.",
                "Napsin A and TTF-1 are positive in tumour cells.",
            )
        )
    else:
        micro.append(
            f.pick(
                "Tumour cells are positive for p40 and CK5/6 and negative for TTF1.",
                "Nests of polygonal cells with intercellular bridges are seen"
                + (", with keratin pearl formation." if c.subtype == "keratinizing" else "."),
                "The tumour shows sheets of squamous cells with areas of necrosis.",
            )
        )
    for s in (f.pleura("prose"), f.vascular("prose"), f.adjacent("prose"), f.stas("prose")):
        if s:
            micro.append(s)
    micro.append(
        f.pick(
            "No perineural permeation by tumour is seen.",
            "Background lung shows emphysema.",
            "Adjacent lung shows organising pneumonia.",
        )
    )
    if f.margins("prose"):
        micro.append(f.margins("prose"))
    for name, n, p in stations:
        micro.append(
            f"{n} lymph node{'s' if n > 1 else ''} from {name}: "
            + (f"metastatic carcinoma in {p}." if p else "no metastatic carcinoma.")
        )
    body = micro[2 : len(micro) - len(stations)]
    r.shuffle(body)
    micro[2 : len(micro) - len(stations)] = body
    summary = [
        f"{c.laterality.capitalize()} {c.lobe} lobe {c.procedure}: {(grade + ' ') if grade else ''}{hist}.",
        f"Tumour size {c.tumor_size_cm * 10:.0f}mm.",
    ]
    if c.pleural_invasion != "unknown":
        summary.append("Pleura involved." if c.pleural_invasion == "present" else "Pleura not involved.")
    if c.vascular_invasion != "unknown":
        summary.append(
            "Vascular invasion present." if c.vascular_invasion == "present" else "No lymphatic or vascular invasion."
        )
    if c.margins != "unknown":
        summary.append("Clear of margins." if c.margins == "negative" else f"Tumour at the {c.margin_site} margin.")
    summary.append(f"Lymph nodes {c.nodes_positive}/{c.nodes_examined}. Pathological stage: {c.pt} {c.pn}.")
    code = "M-81403" if c.label == "LUAD" else "M-80703"
    return _join(
        "HISTORY.",
        f"{c.laterality.capitalize()} {c.lobe} lobe mass. No preoperative tissue diagnosis.",
        "MACROSCOPIC.",
        _ocr(_gross(f, "1", stations), r, r.randint(70, 100)),
        "MICROSCOPY.",
        " ".join(micro),
        "SUMMARY.",
        " ".join(summary),
        f"T-28000 {code}.",
    )


def _eu_short(f: _Facts) -> str:
    c = f.c
    parts = [
        f"Diagnosis: 1. Resection material from the {c.laterality} {c.lobe} lobe of the lung with a "
        f"{f.pick('peripheral', 'central', 'hilar')}, {c.subtype} "
        f"{'adenocarcinoma' if c.label == 'LUAD' else 'squamous cell carcinoma'}, {c.tumor_size_cm:.1f} cm in size"
    ]
    if c.differentiation in _GRADE:
        parts.append(f"{f.grade_words()}")
    for s in (f.pleura("short"), f.vascular("short"), f.adjacent("short"), f.stas("short")):
        if s:
            parts.append(s)
    text = ", ".join(parts) + "."
    n = f"{c.pn[1:]} ({c.nodes_positive}/{c.nodes_examined})"
    if c.nodes_positive:
        text += f" {c.nodes_positive} hilar lymph node metastases."
    else:
        text += " The lymph nodes are free of tumour."
    cls = [f"M-{_ICD.get(c.subtype, '8140/3' if c.label == 'LUAD' else '8070/3')}"]
    if c.differentiation in _GRADE:
        cls.append(f"G {_GRADE[c.differentiation][2]}")
    cls.append(f"{c.pt[0]}T {c.pt[2:]}")
    if c.pleural_invasion != "unknown":
        cls.append("PL1" if c.pleural_invasion == "present" else "PL0")
    cls.append(f"p{n}")
    if c.vascular_invasion != "unknown":
        cls.append("L1, V1" if c.vascular_invasion == "present" else "L0, V0")
    cls.append("pMx")
    if c.margins != "unknown":
        cls.append(f.margins("short"))
    return text + " Tumor classification: " + ", ".join(cls) + f", stage {c.stage}."


def _caps_bullets(f: _Facts) -> str:
    c, r = f.c, f.r
    stations = f.node_stations()
    hist = f.histology().upper()
    lines = [
        f"LUNG, {c.laterality.upper()} {c.lobe.upper()} LOBE, {c.procedure.upper()}:",
        f"- {hist} ({c.tumor_size_cm:.1f} CM).",
    ]
    if f.grade_words():
        lines.append(f"- {f.pick('INVASIVE AND ', '')}{f.grade_words().upper()}.")
    for i, s in enumerate(
        (f.pleura("caps"), f.vascular("caps"), f.adjacent("caps"), f.stas("caps"), f.margins("caps"))
    ):
        if s:
            lines.append(f"- {s}" + (f" ({c.pt[1:]}{c.pn[1:]})." if i == 0 and r.random() < 0.3 else "."))
    lines.append("- NON-TUMORAL LUNG WITH " + f.pick("EMPHYSEMA", "ANTHRACOSIS", "RESPIRATORY BRONCHIOLITIS") + ".")
    nodes = []
    for name, n, p in stations:
        nodes.append(
            f"LYMPH NODE, {name.upper()}, BIOPSY: - "
            + (
                f"METASTATIC CARCINOMA IN {p} OF {n} LYMPH NODES ({p}/{n})."
                if p
                else f"NO EVIDENCE OF MALIGNANCY IN {n} LYMPH NODE{'S' if n > 1 else ''} (0/{n})."
            )
        )
    head = f.pick("FINAL REPORT.", "FINAL CORRECTED REPORT DATED. REPLACES ALL PREVIOUS VERSIONS.", "Final Diagnosis.")
    gross = _ocr(_gross(f, "A", stations), r, r.randint(60, 85))
    syn = [
        f"SYNOPSIS: SPECIMEN TYPE: {c.procedure.upper()}.",
        f"TUMOR SIZE: {c.tumor_size_cm:.1f} CM.",
        f"HISTOLOGIC TYPE: {hist}.",
    ]
    if c.differentiation in _GRADE:
        syn.append(f"HISTOLOGIC GRADE: {_GRADE[c.differentiation][1]}.")
    syn.append(
        f"PATHOLOGIC STAGE: {c.pt.upper()} {c.pn.upper().replace('0', 'O') if r.random() < 0.3 else c.pn.upper()}."
    )
    return _join(
        head,
        "DIAGNOSIS:",
        " ".join(nodes[:1]),
        " ".join(lines),
        " ".join(nodes[1:]),
        "SEE SYNOPSIS AND COMMENTS.",
        " ".join(syn),
        "GROSS DESCRIPTION:",
        gross,
        "THIS CONFIDENTIAL AND PRIVILEGED DOCUMENT IS PROTECTED BY FEDERAL AND STATE LAW.",
    )


_LAYOUTS = (_us_synoptic, _uk_narrative, _eu_short, _caps_bullets)


def report_text(case: DemoCase) -> str:
    """The raw report of ``case``'s patient: deterministic in ``case.patient_seed``."""
    rng = random.Random(f"fiveflow-demo-report:{case.patient_seed}")
    layout = rng.choices(_LAYOUTS, weights=(40, 25, 15, 20))[0]
    return layout(_Facts(case, rng))
