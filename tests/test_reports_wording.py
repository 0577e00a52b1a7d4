"""The offline extractor on standard report wording: CAP lung-resection checklist lines and the common
free-text phrasings of each finding, written from the CAP protocol and pathology usage (not copied from the
development reports), each set in a neutral report. They test that the rules read the wording any institution
uses, not just the development set's: negation and uncertainty scope, synoptic ``key: value`` lines,
bracketed glosses, grade ranges, R codes. Plus the OCR lexicon (:mod:`fiveflow.reports.ocr_lexicon`)."""

from __future__ import annotations

import random

import pytest

from fiveflow.reports import ocr_lexicon, offline

TEMPLATE = (
    "FINAL DIAGNOSIS: LUNG, RIGHT UPPER LOBE, LOBECTOMY: INVASIVE CARCINOMA. TUMOR SIZE: 3.0 CM. {}\nLYMPH NODES: 0/5."
)

# (field, wording, the answer a careful reader gives)
BANK = [
    ("differentiation", "Histologic Grade: G1: Well differentiated.", "well"),
    ("differentiation", "Histologic Grade: G2: Moderately differentiated.", "moderate"),
    ("differentiation", "Histologic Grade: G3: Poorly differentiated.", "poor"),
    ("differentiation", "Histologic Grade: GX: Cannot be assessed.", "unknown"),
    ("differentiation", "Histologic grade: Not applicable.", "unknown"),
    ("differentiation", "HISTOLOGIC GRADE: MODERATELY TO POORLY DIFFERENTIATED.", "moderate_to_poor"),
    ("differentiation", "Grade: 3 of 3.", "poor"),
    ("differentiation", "Tumor grade: Poorly differentiated (G3).", "poor"),
    ("differentiation", "Squamous cell carcinoma, moderately differentiated, forming a 3.5 cm mass.", "moderate"),
    ("differentiation", "Adenocarcinoma, poorly differentiated, with solid growth.", "poor"),
    ("differentiation", "Well-differentiated adenocarcinoma, lepidic predominant.", "well"),
    ("differentiation", "Invasive adenocarcinoma, acinar predominant, grade 2.", "moderate"),
    ("differentiation", "Histologic grade: High grade.", "poor"),
    ("differentiation", "Histologic Grade: G4: Undifferentiated.", "undifferentiated"),
    ("differentiation", "Non-keratinizing squamous cell carcinoma, poorly-differentiated.", "poor"),
    ("stas", "Spread Through Air Spaces (STAS): Not identified.", "absent"),
    ("stas", "Spread through air spaces (STAS): Present.", "present"),
    ("stas", "Tumor spread through air spaces is identified.", "present"),
    ("stas", "No spread through air spaces is seen.", "absent"),
    ("stas", "STAS: Cannot be determined.", "unknown"),
    ("vascular_invasion", "Lymph-Vascular Invasion: Not identified.", "absent"),
    ("vascular_invasion", "Lymph-Vascular Invasion: Present.", "present"),
    ("vascular_invasion", "Lymph-vascular invasion: Indeterminate.", "unknown"),
    ("vascular_invasion", "Lymphovascular invasion: not identified.", "absent"),
    ("vascular_invasion", "Venous (large vessel) invasion: Absent.", "absent"),
    ("vascular_invasion", "Arterial (large vessel) invasion: Present.", "present"),
    ("vascular_invasion", "Lymphatic (small vessel) invasion: Not identified.", "absent"),
    ("vascular_invasion", "Angiolymphatic invasion is present.", "present"),
    ("vascular_invasion", "No angiolymphatic invasion is identified.", "absent"),
    ("vascular_invasion", "There is no evidence of lymphovascular invasion.", "absent"),
    ("vascular_invasion", "Vascular invasion is identified.", "present"),
    ("vascular_invasion", "Focal vascular invasion is seen.", "present"),
    ("vascular_invasion", "Definite lymphovascular invasion is not seen.", "absent"),
    ("vascular_invasion", "Vascular invasion: absent.", "absent"),
    ("vascular_invasion", "Lymphovascular space invasion: suspicious.", "unknown"),
    ("vascular_invasion", "Blood vessel invasion: identified.", "present"),
    ("vascular_invasion", "The tumor shows lymphovascular invasion.", "present"),
    ("vascular_invasion", "Lymphovascular invasion (LVI): negative.", "absent"),
    ("vascular_invasion", "LVI: Present", "present"),
    ("vascular_invasion", "Perineural and lymphovascular invasion are not identified.", "absent"),
    ("vascular_invasion", "Lymphovascular and perineural invasion are present.", "present"),
    ("pleural_invasion", "Visceral Pleura Invasion: Not identified.", "absent"),
    ("pleural_invasion", "Visceral Pleura Invasion: Present.", "present"),
    ("pleural_invasion", "Visceral pleural invasion: Cannot be determined.", "unknown"),
    ("pleural_invasion", "Visceral pleural invasion (PL1): present.", "present"),
    ("pleural_invasion", "Pleural invasion: PL0.", "absent"),
    ("pleural_invasion", "The tumor invades the visceral pleura.", "present"),
    ("pleural_invasion", "The tumor does not invade the visceral pleura.", "absent"),
    ("pleural_invasion", "The visceral pleura is free of tumor.", "absent"),
    ("pleural_invasion", "The tumor extends to but does not penetrate the visceral pleural elastic layer.", "absent"),
    ("pleural_invasion", "Tumor penetrates the visceral pleural elastic layer (PL1).", "present"),
    ("pleural_invasion", "The pleura is uninvolved.", "absent"),
    ("pleural_invasion", "Pleural involvement: absent.", "absent"),
    ("pleural_invasion", "Elastic stain confirms visceral pleural invasion.", "present"),
    ("pleural_invasion", "Visceral pleural invasion is not identified on elastic stain.", "absent"),
    ("pleural_invasion", "Tumor involves the pleural surface.", "present"),
    ("pleural_invasion", "No pleural invasion is identified.", "absent"),
    ("pleural_invasion", "Pleura: Not involved.", "absent"),
    ("pleural_invasion", "Pleura: involved by carcinoma.", "present"),
    # a key whose value is a sentence about the same finding: the sentence decides
    ("pleural_invasion", "Visceral pleura: Carcinoma extends up to but not into the visceral pleura.", "absent"),
    ("pleural_invasion", "Visceral pleura: The tumor invades the visceral pleura (PL1).", "present"),
    ("adjacent_invasion", "Direct Invasion of Adjacent Structures: Not identified.", "absent"),
    ("adjacent_invasion", "Direct invasion of adjacent structures: Chest wall.", "present"),
    ("adjacent_invasion", "Tumor Extension: Tumor invades the chest wall.", "present"),
    ("adjacent_invasion", "The tumor invades the parietal pleura and chest wall.", "present"),
    ("adjacent_invasion", "The tumor directly invades the pericardium.", "present"),
    ("adjacent_invasion", "The tumor invades the diaphragm.", "present"),
    ("adjacent_invasion", "The tumor infiltrates the mediastinal soft tissue.", "present"),
    ("adjacent_invasion", "The chest wall is free of tumor.", "absent"),
    ("adjacent_invasion", "Invasion of adjacent structures: absent.", "absent"),
    ("adjacent_invasion", "The tumor is confined to the lung.", "absent"),
    ("adjacent_invasion", "Tumor invades the main bronchus.", "present"),
    ("adjacent_invasion", "Parietal pleura: involved by carcinoma.", "present"),
    ("adjacent_invasion", "Tumor extension: Confined to lung.", "absent"),
    ("margins", "Margins: Uninvolved by invasive carcinoma.", "negative"),
    ("margins", "Margins: Involved by invasive carcinoma.", "positive"),
    ("margins", "Bronchial Margin: Uninvolved by invasive carcinoma.", "negative"),
    ("margins", "Bronchial margin: Involved by invasive carcinoma.", "positive"),
    ("margins", "Margins: Cannot be assessed.", "unknown"),
    ("margins", "All surgical margins are free of tumor.", "negative"),
    ("margins", "The bronchial and vascular margins are negative for carcinoma.", "negative"),
    ("margins", "Surgical margins are negative for malignancy.", "negative"),
    ("margins", "The bronchial resection margin is positive for carcinoma.", "positive"),
    ("margins", "Carcinoma is present at the bronchial margin.", "positive"),
    ("margins", "Tumor extends to the parenchymal (stapled) margin.", "positive"),
    ("margins", "Margins are clear.", "negative"),
    ("margins", "Distance of invasive carcinoma from closest margin: 2.5 cm. Closest margin: bronchial.", "negative"),
    ("margins", "Residual tumor (R): R0.", "negative"),
    ("margins", "Residual tumor: R1.", "positive"),
    ("margins", "Residual tumor: RX.", "unknown"),
    ("margins", "Margins of resection are free of neoplasm.", "negative"),
    ("margins", "Bronchial, vascular and parenchymal margins: free of tumor.", "negative"),
    ("margins", "Resection margins: uninvolved.", "negative"),
    ("margins", "The stapled parenchymal margin is free of tumor.", "negative"),
    ("margins", "Margins: not involved.", "negative"),
    ("margins", "Carcinoma is present at the inked margin.", "positive"),
    ("margins", "Surgical margin status: negative.", "negative"),
    ("margins", "Margin: tumor is 0.2 cm from the bronchial margin.", "negative"),
    ("vascular_invasion", "No lymphovascular or pleural invasion is identified.", "absent"),
    ("pleural_invasion", "No lymphovascular or pleural invasion is identified.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion cannot be excluded.", "unknown"),
    ("vascular_invasion", "Suspicious for lymphovascular invasion.", "unknown"),
    ("vascular_invasion", "Lymphovascular invasion is not definitively identified.", "absent"),
    ("pleural_invasion", "Negative for pleural invasion by elastic stain.", "absent"),
    ("pleural_invasion", "Pleural invasion: no.", "absent"),
    ("pleural_invasion", "Pleural invasion: yes.", "present"),
    ("pleural_invasion", "There is tumor invasion beyond the elastic layer of the visceral pleura.", "present"),
    ("pleural_invasion", "Tumor abuts but does not invade the visceral pleura.", "absent"),
    ("pleural_invasion", "Visceral pleural invasion is equivocal.", "unknown"),
    ("vascular_invasion", "Vascular invasion: Yes.", "present"),
    ("vascular_invasion", "Angiolymphatic invasion: Not identified.", "absent"),
    ("vascular_invasion", "Intravascular tumor emboli are identified.", "present"),
    ("vascular_invasion", "Tumor thrombus is present in a pulmonary vein.", "present"),
    ("vascular_invasion", "Venous invasion: present (V1).", "present"),
    ("differentiation", "Adenocarcinoma, poorly to moderately differentiated.", "moderate_to_poor"),
    ("differentiation", "Squamous cell carcinoma, moderately-to-poorly differentiated.", "moderate_to_poor"),
    ("differentiation", "Histologic grade: 2 of 3 (moderately differentiated).", "moderate"),
    ("differentiation", "Differentiation: poor.", "poor"),
    ("differentiation", "Differentiation: moderate.", "moderate"),
    ("stas", "Spread through air spaces: present (focal).", "present"),
    ("stas", "STAS is not identified.", "absent"),
    ("margins", "The margins are free of carcinoma (closest margin bronchial, 1.5 cm).", "negative"),
    ("margins", "Margin status: Negative for malignancy.", "negative"),
    ("margins", "The tumor is 1 mm from the parenchymal margin.", "negative"),
    ("margins", "Bronchial margin: Negative for tumor. Vascular margin: Negative for tumor.", "negative"),
    ("margins", "Margins: Involved. Site of involvement: bronchial.", "positive"),
    ("adjacent_invasion", "Tumor does not involve the chest wall.", "absent"),
    ("adjacent_invasion", "Tumor invades into the mediastinal fat.", "present"),
    ("adjacent_invasion", "No direct extension into adjacent structures is identified.", "absent"),
    ("adjacent_invasion", "Rib: negative for tumor.", "absent"),
    ("adjacent_invasion", "Chest wall invasion: present.", "present"),
    ("adjacent_invasion", "Pericardium: not involved.", "absent"),
    ("adjacent_invasion", "The resected diaphragm is uninvolved.", "absent"),
    ("adjacent_invasion", "Tumor invades the superior vena cava.", "present"),
    ("adjacent_invasion", "Direct invasion of adjacent structures: Cannot be assessed.", "unknown"),
    ("adjacent_invasion", "Chest wall invasion: indeterminate.", "unknown"),
    ("adjacent_invasion", "Involvement of the chest wall cannot be excluded.", "unknown"),
    # older free-text wording; 'approaches/abuts the pleura' says nothing about invasion (unknown)
    ("pleural_invasion", "The tumor does not extend to the pleural surface.", "absent"),
    ("pleural_invasion", "The tumor approaches within 0.3 cm of the visceral pleura.", "unknown"),
    ("pleural_invasion", "The tumor involves the visceral pleura.", "present"),
    ("pleural_invasion", "Tumor extends through the visceral pleura.", "present"),
    ("pleural_invasion", "Tumor invades visceral pleura (PL2).", "present"),
    ("pleural_invasion", "Visceral pleura: Uninvolved.", "absent"),
    ("pleural_invasion", "Pleural invasion is absent.", "absent"),
    ("pleural_invasion", "The overlying pleura is free of tumor.", "absent"),
    ("pleural_invasion", "Tumor is present at the visceral pleural surface.", "present"),
    ("pleural_invasion", "Pleural invasion: indeterminate.", "unknown"),
    ("vascular_invasion", "There is no angiolymphatic space involvement.", "absent"),
    ("vascular_invasion", "Vascular space invasion is not seen.", "absent"),
    ("vascular_invasion", "Tumor is seen within vascular spaces.", "present"),
    ("vascular_invasion", "Lymphovascular invasion: Present (focal).", "present"),
    ("vascular_invasion", "Lymphovascular invasion: Not specified.", "unknown"),
    ("vascular_invasion", "Venous invasion: not identified. Arterial invasion: not identified.", "absent"),
    ("vascular_invasion", "Blood vessel invasion is present.", "present"),
    ("vascular_invasion", "Tumor emboli are seen in lymphovascular spaces.", "present"),
    ("vascular_invasion", "The tumor does not show lymphovascular invasion.", "absent"),
    ("differentiation", "Moderately differentiated squamous cell carcinoma.", "moderate"),
    ("differentiation", "Poorly differentiated non-small cell carcinoma.", "poor"),
    ("differentiation", "Well to moderately differentiated adenocarcinoma.", "moderate"),
    ("differentiation", "Histologic grade: G3.", "poor"),
    ("differentiation", "Grade: well differentiated (G1).", "well"),
    ("differentiation", "Histologic grade: Moderately differentiated (G2).", "moderate"),
    ("margins", "Surgical margins: free of tumor.", "negative"),
    ("margins", "The bronchial margin is free of tumor.", "negative"),
    ("margins", "Bronchial margin: negative for malignancy.", "negative"),
    ("margins", "Vascular margin: positive for carcinoma.", "positive"),
    ("margins", "Margins: Negative.", "negative"),
    ("margins", "Margins: Positive (bronchial).", "positive"),
    ("margins", "The tumor is present at the stapled parenchymal margin.", "positive"),
    ("margins", "Carcinoma is less than 0.1 cm from the bronchial margin.", "negative"),
    ("margins", "Margins: Uninvolved by tumor. Distance from closest margin: 1.2 cm.", "negative"),
    ("margins", "Resection margins are negative.", "negative"),
    ("margins", "The resection margins are involved by tumor.", "positive"),
    ("adjacent_invasion", "The tumor extends into the chest wall soft tissue.", "present"),
    ("adjacent_invasion", "The tumor invades the mediastinum.", "present"),
    ("adjacent_invasion", "Diaphragm: free of tumor.", "absent"),
    ("adjacent_invasion", "Chest wall: involved by tumor.", "present"),
    ("adjacent_invasion", "The attached rib is not involved by tumor.", "absent"),
    ("adjacent_invasion", "Invasion of the pericardium is identified.", "present"),
    ("adjacent_invasion", "The tumor is confined to the lung parenchyma.", "absent"),
    ("stas", "Aerogenous spread is present.", "present"),
    ("stas", "No STAS is identified.", "absent"),
    ("stas", "Tumor spread through air spaces (STAS): present.", "present"),
    # rules-v7: a pathological T4 (invasion of the mediastinum, heart, great vessels, ...) when the report states
    # nothing about the extension itself; T3 and clinical stages are not read; a stated extension wins
    ("adjacent_invasion", "Pathologic stage: pT4 pN0 pMX.", "present"),
    ("adjacent_invasion", "TNM: T4 N2 Mx, stage IIIB.", "present"),
    ("adjacent_invasion", "TNM classification: ypT4a pN1.", "present"),
    ("adjacent_invasion", "Pathologic stage: pT3 pN1 pMX.", "unknown"),
    ("adjacent_invasion", "Clinical stage cT4 N0 before neoadjuvant therapy.", "unknown"),
    ("adjacent_invasion", "History of a laryngeal T4 carcinoma.", "unknown"),
    # over 7 cm a tumour is T4 by size alone (AJCC 8th edition): the stage then says nothing about invasion
    ("adjacent_invasion", "Tumor size: 8.5 cm. Pathologic stage (AJCC 8th edition): pT4 pN0.", "unknown"),
    (
        "adjacent_invasion",
        "Direct extension of tumor: Not identified. Pathologic stage: pT4 pN0 (separate nodule in another lobe).",
        "absent",
    ),
    # rules-v7: OCR's line break after a determiner "no" ("There is no. blood vessel invasion")
    ("vascular_invasion", "There is no. blood vessel invasion but lymphatic permeation is seen.", "absent"),
    ("vascular_invasion", "Sections show no. vascular invasion.", "absent"),
    ("pleural_invasion", "The tumor extends subpleurally but not to the pleural surface.", "absent"),
    ("pleural_invasion", "The carcinoma approaches but does not reach the visceral pleura.", "absent"),
    ("pleural_invasion", "ADENOCARCINOMA (2.5 CM). NO\nEVIDENCE OF VISCERAL PLEURAL INVASION.", "absent"),
    # a heading line before its own sentence: a bare value is its answer, a sentence answers for itself
    ("pleural_invasion", "PLEURAL INVOLVEMENT\n\u2022 the pleura is free of tumor.", "absent"),
    ("vascular_invasion", "LYMPHOVASCULAR INVASION\n\u2022 none identified.", "absent"),
    ("vascular_invasion", "VENOUS INVASION\n\u2022 present.", "present"),
    ("adjacent_invasion", "The tumor is confined within the lung.", "absent"),
    ("adjacent_invasion", "Extension to pleura/other structures (specify): Not identified.", "absent"),
    # rules-v7: more phrasings from pathology usage (British and American, synoptic and free text); rules-v6
    # missed 12 of these 83 (breach/reach, 'abuts ... without invasion', 'overlying the tumor is free',
    # 'Margin status: R0', 'staple line', 'Chest wall, resection: ...', vascular lumina, the main pulmonary artery)
    ("pleural_invasion", "The tumor invades the visceral pleura (PL1).", "present"),
    ("pleural_invasion", "Tumor penetrates the visceral pleural elastic layer.", "present"),
    ("pleural_invasion", "Tumor extends beyond the elastic lamina of the visceral pleura.", "present"),
    ("pleural_invasion", "An elastic stain confirms the absence of visceral pleural invasion.", "absent"),
    ("pleural_invasion", "An elastic stain shows no pleural invasion.", "absent"),
    ("pleural_invasion", "The tumour does not breach the pleura.", "absent"),
    ("pleural_invasion", "The tumour breaches the visceral pleura.", "present"),
    ("pleural_invasion", "Pleural surface involvement: not seen.", "absent"),
    ("pleural_invasion", "Tumor is present at the pleural surface.", "present"),
    ("pleural_invasion", "The tumor abuts the pleura without invasion.", "absent"),
    ("pleural_invasion", "There is focal visceral pleural invasion.", "present"),
    ("pleural_invasion", "The tumor is subpleural, with no pleural invasion.", "absent"),
    ("pleural_invasion", "Pleural invasion cannot be assessed.", "unknown"),
    ("pleural_invasion", "Pleural invasion is equivocal.", "unknown"),
    ("pleural_invasion", "The neoplasm extends through the visceral pleura.", "present"),
    ("pleural_invasion", "Tumor infiltrates the pleura.", "present"),
    ("pleural_invasion", "Tumour reaches the pleural surface.", "present"),
    ("pleural_invasion", "The pleura overlying the tumor is free of tumor.", "absent"),
    ("pleural_invasion", "Visceral pleural invasion is not appreciated.", "absent"),
    ("pleural_invasion", "The visceral pleura is intact.", "absent"),
    ("pleural_invasion", "Pleural elastic layer: not breached.", "absent"),
    ("vascular_invasion", "LVI: Not identified.", "absent"),
    ("vascular_invasion", "Lymph-vascular invasion is present.", "present"),
    ("vascular_invasion", "No definite lymphovascular invasion is seen.", "absent"),
    ("vascular_invasion", "Equivocal lymphovascular invasion.", "unknown"),
    ("vascular_invasion", "Focal lymphovascular invasion is identified.", "present"),
    ("vascular_invasion", "There is invasion of small vessels.", "present"),
    ("vascular_invasion", "Blood vessel invasion: not seen.", "absent"),
    ("vascular_invasion", "Lymphatic and vascular invasion: absent.", "absent"),
    ("vascular_invasion", "No lymphovascular invasion is appreciated.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion is not appreciated.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion: not demonstrated.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion was not found.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion is suspected but not definitive.", "unknown"),
    ("vascular_invasion", "Vascular invasion is conspicuous.", "present"),
    ("vascular_invasion", "Lymphovascular invasion: none.", "absent"),
    ("vascular_invasion", "Tumor is seen within vascular lumina.", "present"),
    ("vascular_invasion", "Venous invasion by tumour is seen (V1).", "present"),
    ("margins", "All margins are negative for carcinoma.", "negative"),
    ("margins", "Margins: free of tumor; closest margin 0.5 cm (parenchymal).", "negative"),
    ("margins", "Resection margins: clear.", "negative"),
    ("margins", "Margin status: R0.", "negative"),
    ("margins", "Residual tumor (R): R1.", "positive"),
    ("margins", "Microscopic residual tumour at the bronchial margin (R1).", "positive"),
    ("margins", "The staple line is free of tumor.", "negative"),
    ("margins", "The tumor is 2 mm from the parenchymal margin.", "negative"),
    ("margins", "Tumor is present at the bronchial margin.", "positive"),
    ("margins", "Margins cannot be assessed.", "unknown"),
    ("margins", "The inked margin is positive.", "positive"),
    ("margins", "Complete resection (R0).", "negative"),
    ("margins", "Surgical margins are uninvolved.", "negative"),
    ("margins", "Carcinoma extends to the inked parenchymal margin.", "positive"),
    ("margins", "The closest margin is the vascular margin, 0.3 cm; all margins are free.", "negative"),
    ("adjacent_invasion", "Tumor invades the chest wall (pT3).", "present"),
    ("adjacent_invasion", "The tumor directly invades the diaphragm.", "present"),
    ("adjacent_invasion", "Invasion of the phrenic nerve is identified.", "present"),
    ("adjacent_invasion", "The tumor involves the mediastinal pleura.", "present"),
    ("adjacent_invasion", "Chest wall, resection: negative for malignancy.", "absent"),
    ("adjacent_invasion", "Ribs: negative for malignancy.", "absent"),
    ("adjacent_invasion", "Adjacent structures: uninvolved.", "absent"),
    ("adjacent_invasion", "Direct extension into adjacent structures: None.", "absent"),
    ("adjacent_invasion", "Tumor extends into the pericardial fat.", "present"),
    ("adjacent_invasion", "Tumor infiltrates the esophageal wall.", "present"),
    ("adjacent_invasion", "The tumour invades the parietal pleura and the endothoracic fascia.", "present"),
    ("adjacent_invasion", "The tumor invades the pulmonary artery trunk and the left atrium.", "present"),
    ("adjacent_invasion", "No invasion of the chest wall is seen.", "absent"),
    ("adjacent_invasion", "The attached chest wall is uninvolved by carcinoma.", "absent"),
    ("stas", "Spread through air spaces: Present.", "present"),
    ("stas", "STAS: not identified.", "absent"),
    ("stas", "Tumor spread through alveolar spaces (STAS) is present.", "present"),
    ("stas", "Aerogenous spread: not identified.", "absent"),
    ("stas", "Spread through air spaces (STAS) is not seen.", "absent"),
    ("differentiation", "Histologic grade: G2 (moderately differentiated).", "moderate"),
    ("differentiation", "Grade 2 of 3.", "moderate"),
    ("differentiation", "Poorly differentiated (grade 3).", "poor"),
    ("differentiation", "Grade: G3.", "poor"),
    ("differentiation", "Tumour grade: poorly differentiated.", "poor"),
    ("differentiation", "Histologic grade: well differentiated (G1).", "well"),
    ("differentiation", "Moderately differentiated keratinizing squamous cell carcinoma.", "moderate"),
    ("differentiation", "Histologic grade: 2.", "moderate"),
    ("differentiation", "Grade III/III.", "poor"),
    ("differentiation", "Histologic grade: moderate.", "moderate"),
    ("differentiation", "Histological grade: moderately to poorly differentiated (G2-3).", "moderate_to_poor"),
    # the primary tumour's invasion beside a lymph-node statement is read; nodal extension is not this question
    (
        "adjacent_invasion",
        "Squamous cell carcinoma invading the chest wall, with metastases in 2 of 10 lymph nodes.",
        "present",
    ),
    (
        "adjacent_invasion",
        "The tumor directly invades the pericardium and there is metastatic carcinoma in one hilar lymph node.",
        "present",
    ),
    (
        "adjacent_invasion",
        "Extranodal extension into the mediastinal soft tissue is present in the subcarinal lymph node.",
        "unknown",
    ),
    (
        "adjacent_invasion",
        "Lymph nodes, mediastinal: metastatic carcinoma, with invasion of the mediastinal fat.",
        "unknown",
    ),
    ("adjacent_invasion", "Tumor extension to the visceral pleura in the region of an adhesion.", "unknown"),
    ("adjacent_invasion", "Tumor extension into the chest wall is present.", "present"),
    # grades, checklists (ticked boxes, one-letter answers, L/V/Pn code groups) and R codes in their common forms;
    # 'Lymphatic invasion: L1. Venous invasion: V0.' is absent: blood-vessel statements decide
    ("differentiation", "Adenocarcinoma, G2.", "moderate"),
    ("differentiation", "Grading: G3.", "poor"),
    ("differentiation", "Carcinoma present in cassette G2.", "unknown"),
    ("differentiation", "Squamous cell carcinoma, G3, pT2 pN0.", "poor"),
    ("differentiation", "Grade 2 of 4.", "moderate"),
    # the top grade of a stated four-tier scale is answered as poorly differentiated (as GPT-4 answers it)
    ("differentiation", "Grade 4 (of 4) squamous cell carcinoma.", "poor"),
    ("differentiation", "Histologic grade: 4/4.", "poor"),
    ("differentiation", "Grade IV of IV.", "poor"),
    ("differentiation", "Histologic grade: Grade 3-4 (of 4).", "poor"),
    ("differentiation", "Histologic grade: G2-G3.", "moderate_to_poor"),
    (
        "differentiation",
        "Adenocarcinoma, moderately differentiated with focal poorly differentiated areas.",
        "moderate_to_poor",
    ),
    ("differentiation", "GRADE: III/IV.", "poor"),
    ("differentiation", "Grade: 2/3.", "moderate"),
    ("differentiation", "Histological differentiation: moderate.", "moderate"),
    ("differentiation", "Keratinizing squamous cell carcinoma, grade 2.", "moderate"),
    ("differentiation", "Grade of differentiation: moderately differentiated.", "moderate"),
    ("vascular_invasion", "Lymphovascular invasion – not identified.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion = absent.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion: [ ] Present [X] Not identified.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion: [X] Present [ ] Not identified.", "present"),
    ("vascular_invasion", "LVI: Y.", "present"),
    ("vascular_invasion", "LVI: N.", "absent"),
    ("vascular_invasion", "L0, V0, Pn0.", "absent"),
    ("vascular_invasion", "Invasion: L0, V1, Pn0.", "present"),
    ("vascular_invasion", "Lymphatic invasion: L1. Venous invasion: V0.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion: Extensive.", "present"),
    ("pleural_invasion", "Visceral pleural invasion: [X] Not identified [ ] Present.", "absent"),
    ("pleural_invasion", "Visceral pleural invasion: _X_ Present.", "present"),
    ("pleural_invasion", "Pleural invasion: Yes (PL1).", "present"),
    ("pleural_invasion", "Visceral pleural invasion: present, PL2.", "present"),
    ("margins", "Margins: Involved (bronchial).", "positive"),
    ("margins", "Margins: Free (closest 1.2 cm, bronchial).", "negative"),
    ("margins", "R0 resection.", "negative"),
    ("margins", "R1 resection (bronchial margin).", "positive"),
    ("stas", "STAS: Present (focal).", "present"),
    ("stas", "No tumour spread through air spaces is seen.", "absent"),
    ("adjacent_invasion", "Invasion of adjacent structures: Yes (chest wall).", "present"),
    ("adjacent_invasion", "Extrapulmonary extension: none.", "absent"),
    # European and translated usage (lymphangiosis / haemangiosis carcinomatosa, pleura visceralis / parietalis,
    # bronchial stump, 'highly / medium / low differentiated'); lymphatic invasion alone beside a blood-vessel
    # line that says 'not specified' leaves the question open
    ("vascular_invasion", "Lymphangiosis carcinomatosa.", "present"),
    ("vascular_invasion", "Haemangiosis carcinomatosa.", "present"),
    ("vascular_invasion", "No lymphangiosis or haemangiosis carcinomatosa.", "absent"),
    ("vascular_invasion", "Angioinvasion is present.", "present"),
    ("vascular_invasion", "No angioinvasion.", "absent"),
    ("vascular_invasion", "Vascular infiltration present.", "present"),
    ("vascular_invasion", "Lymphangiosis carcinomatosa, no haemangiosis carcinomatosa.", "absent"),
    ("vascular_invasion", "Lymphatic invasion: Present. Venous invasion: Not specified.", "unknown"),
    ("pleural_invasion", "Infiltration of the pleura visceralis.", "present"),
    ("pleural_invasion", "No infiltration of the pleura visceralis.", "absent"),
    ("pleural_invasion", "The pleura visceralis is tumour-free.", "absent"),
    ("adjacent_invasion", "Infiltration of the pleura parietalis.", "present"),
    ("adjacent_invasion", "Infiltration of the pericardium.", "present"),
    ("adjacent_invasion", "Infiltration of the thoracic wall.", "present"),
    ("adjacent_invasion", "The thoracic wall is tumour-free.", "absent"),
    ("margins", "Tumour-free bronchial stump.", "negative"),
    ("margins", "The bronchial stump is free of tumour.", "negative"),
    ("margins", "Tumour infiltration of the bronchial stump.", "positive"),
    ("margins", "No tumour infiltration of the resection margins.", "negative"),
    ("differentiation", "Low-differentiated squamous cell carcinoma.", "poor"),
    ("differentiation", "Medium-differentiated adenocarcinoma.", "moderate"),
    ("differentiation", "Highly differentiated adenocarcinoma.", "well"),
    # pleural invasion beside a lymph-node statement in one sentence; a clause about a lymph node is not read
    (
        "pleural_invasion",
        "Adenocarcinoma with visceral pleural invasion and metastases in 2 of 10 lymph nodes.",
        "present",
    ),
    (
        "pleural_invasion",
        "Squamous cell carcinoma invading the visceral pleura and 3 of 12 lymph nodes positive.",
        "present",
    ),
    ("adjacent_invasion", "The tumor invades the chest wall and metastasizes to two hilar lymph nodes.", "present"),
    ("pleural_invasion", "Lymph nodes, level 10: visceral pleura free, nodes negative.", "unknown"),
    # margins and lymph nodes as one subject of one finding: the finding is the margins' too
    ("margins", "Three lymph nodes and the bronchial and vascular margins are negative for tumor.", "negative"),
    ("margins", "The bronchial margin and all lymph nodes are free of tumor.", "negative"),
    ("margins", "Bronchial margin and 5 hilar lymph nodes negative for carcinoma.", "negative"),
    ("margins", "Margins and lymph nodes are negative.", "negative"),
    # "neither ... nor", and a negation that governs "present" / "seen" / "found" ("is not present at the margin")
    ("pleural_invasion", "Neither pleural nor vascular invasion is identified.", "absent"),
    ("vascular_invasion", "Neither lymphatic nor venous invasion is seen.", "absent"),
    ("margins", "Neither the bronchial nor the vascular margin is involved.", "negative"),
    ("margins", "Carcinoma is not present at the margin.", "negative"),
    ("margins", "Tumor is not seen at the bronchial margin.", "negative"),
    ("margins", "Tumor does not involve the lymph nodes or the bronchial margin.", "negative"),
    ("margins", "Bronchial margin not involved, pleural margin focally involved.", "positive"),
    # more standard phrasings: a tumour "present in" the pleura, the pleural elastic layer named alone, structures
    # of the thoracic inlet and mediastinum, intravascular tumour, STAS through alveolar spaces, an R code as the
    # value of a margin line
    ("pleural_invasion", "Carcinoma is not present in the pleura.", "absent"),
    ("pleural_invasion", "Tumor is present in the visceral pleura.", "present"),
    ("pleural_invasion", "Elastic stain shows invasion beyond the elastic layer.", "present"),
    ("pleural_invasion", "Elastic stain shows no invasion beyond the elastic layer.", "absent"),
    ("pleural_invasion", "Invasion beyond the elastic layer is not identified.", "absent"),
    ("pleural_invasion", "Invasion beyond the pleural elastic layer: not identified.", "absent"),
    ("adjacent_invasion", "Tumor invades the brachial plexus.", "present"),
    ("adjacent_invasion", "Tumor involves the azygos vein.", "present"),
    ("adjacent_invasion", "Tumor infiltrates the recurrent laryngeal nerve.", "present"),
    ("vascular_invasion", "Intravascular tumor is present.", "present"),
    ("vascular_invasion", "No intralymphatic tumor is seen.", "absent"),
    ("stas", "Spread of tumor through alveolar spaces is seen.", "present"),
    ("stas", "Spread through alveolar spaces: not identified.", "absent"),
    ("margins", "Resection margins: R1.", "positive"),
    ("margins", "Resection margins: R0.", "negative"),
    ("adjacent_invasion", "Extent of invasion: Chest wall.", "present"),
    ("pleural_invasion", "EXTENT OF INVASION: VISCERAL PLEURA.", "present"),
    ("adjacent_invasion", "The attached chest wall tissue is involved by carcinoma.", "present"),
    ("margins", "Tumor approaches within 0.1 cm of the parenchymal margin.", "negative"),
    ("differentiation", "GRADE: II/III.", "moderate"),
    # electronic checklists: only the ticked option answers ("[x]", "(x)", "_X_"; empty "[ ]", "( )", "__")
    ("pleural_invasion", "Visceral pleural invasion: [ ] Present [X] Not identified.", "absent"),
    ("pleural_invasion", "Visceral pleural invasion: __ Present _X_ Not identified.", "absent"),
    ("pleural_invasion", "Visceral pleural invasion: [x] Present [ ] Not identified.", "present"),
    ("vascular_invasion", "Lymphovascular invasion: [ ] Present [x] Absent [ ] Indeterminate.", "absent"),
    ("vascular_invasion", "Lymphovascular invasion: [ ] Present [ ] Absent [ ] Indeterminate.", "unknown"),
    ("margins", "Margins: [ ] Uninvolved by invasive carcinoma [x] Involved.", "positive"),
    ("differentiation", "Histologic grade: [ ] G1 [x] G2 [ ] G3.", "moderate"),
    ("differentiation", "Histologic grade: ( ) Well ( x ) Moderately ( ) Poorly differentiated.", "moderate"),
    ("stas", "STAS: [ ] Present [x] Not identified.", "absent"),
    # "No tumour is present on ..." negates its subject; OCR's "No." before a lower-case finding noun is a determiner
    ("pleural_invasion", "The neoplasm is present on the pleural surface.", "present"),
    ("pleural_invasion", "No tumor is seen in the visceral pleura.", "absent"),
    ("pleural_invasion", "The lesion is subpleural. No. tumour is present on the pleural surface.", "absent"),
    ("vascular_invasion", "Tumor invades a pulmonary artery branch.", "present"),
    ("vascular_invasion", "Tumor invades a large vein.", "present"),
    ("vascular_invasion", "Tumor cells are seen in lymphatic channels.", "present"),
    ("vascular_invasion", "No carcinoma is identified in lymphovascular spaces.", "absent"),
    # a listed subject with one plural predicate; a vessel finding beside, not inside, a lymph-node statement
    (
        "pleural_invasion",
        "The visceral pleura, the resection margin of bronchi and vessels and all the lymph nodes removed are tumor-free.",
        "absent",
    ),
    (
        "margins",
        "The resection margin of the bronchus and vessels and all the lymph nodes removed are tumor-free.",
        "negative",
    ),
    ("pleural_invasion", "The visceral pleura and the bronchial margin are free of tumor.", "absent"),
    (
        "vascular_invasion",
        "Blood vessel invasion is present and there is tumour within an intrapulmonary peribronchial lymph node.",
        "present",
    ),
    ("vascular_invasion", "Metastatic carcinoma in one lymph node with extranodal lymphatic invasion.", "unknown"),
    ("adjacent_invasion", "Tumor extension: Confined within right upper lobe of lung.", "absent"),
    ("adjacent_invasion", "The tumor is confined to the left lower lobe.", "absent"),
    # uncertainty: a clinical "rule out", "could not be evaluated", a modal before the finding; "ruled out" is absent
    ("vascular_invasion", "Rule out lymphovascular invasion.", "unknown"),
    ("vascular_invasion", "Lymphovascular invasion is ruled out.", "absent"),
    ("pleural_invasion", "Pleural involvement could not be evaluated.", "unknown"),
    ("adjacent_invasion", "The tumor may invade the chest wall.", "unknown"),
]


@pytest.mark.parametrize("field, wording, expected", BANK, ids=[f"{f}:{w[:40]}" for f, w, _ in BANK])
def test_standard_wording_is_read(field, wording, expected):
    result = offline.extract(TEMPLATE.format(wording))
    assert result.labels[field] == expected, (wording, result.evidence[field])


def test_the_bank_covers_every_field_and_value():
    covered = {(f, e) for f, _, e in BANK}
    for f in ("vascular_invasion", "pleural_invasion", "adjacent_invasion", "stas"):
        assert {(f, v) for v in ("present", "absent", "unknown")} <= covered, f
    assert {("margins", v) for v in ("positive", "negative", "unknown")} <= covered
    assert {
        ("differentiation", v) for v in ("well", "moderate", "poor", "moderate_to_poor", "undifferentiated", "unknown")
    } <= covered


@pytest.mark.parametrize(
    "ocr, word",
    [
        ("pieura", "pleura"),
        ("P1EURA", "PLEURA"),
        ("vasculaz", "vascular"),
        ("Negattive", "Negative"),
        ("ifferentiated", "differentiated"),
        ("madiastinal", "mediastinal"),
        ("broncial", "bronchial"),
        ("cumor", "tumor"),
        ("identifed", "identified"),
        ("moderatly", "moderately"),
    ],
)
def test_the_lexicon_restores_one_letter_ocr_errors_keeping_case(ocr, word):
    assert ocr_lexicon.correct(f"x {ocr}, y") == f"x {word}, y"


@pytest.mark.parametrize(
    "word",
    [
        "tumors",
        "tumour",
        "involves",
        "viscera",
        "plastic",
        "through",
        "though",
        "space",
        "identifier",
        "plural",
        "prevent",
        "G3",
        "pT1a",
        "R0",
        "venous",
        "absent",
    ],
)
def test_the_lexicon_leaves_real_words_codes_and_terms_alone(word):
    assert ocr_lexicon.correct(word) == word


def test_a_word_one_edit_from_two_terms_is_left_alone():
    # "invadex" is one letter from both "invades" and "invaded": ambiguous, so kept as it is
    near = {t for t in ocr_lexicon.LEXICON if ocr_lexicon._distance_at_most_one("invadex", t)}
    assert near == {"invades", "invaded"} and ocr_lexicon.term_for("invadex") is None
    assert ocr_lexicon.term_for("margns") == "margins" and ocr_lexicon.term_for("margi") == "margin"


REPORT = (
    "FINAL DIAGNOSIS: RIGHT UPPER LOBE, LOBECTOMY: SQUAMOUS CELL CARCINOMA, MODERATELY DIFFERENTIATED. "
    "Visceral pleural invasion: present. Lymphovascular invasion: not identified. Spread through air spaces: "
    "not identified. The tumor invades the parietal pleura and chest wall. All margins are negative for carcinoma."
)


def test_corrupted_key_words_give_the_clean_answers():
    clean = offline.extract(REPORT).labels
    assert clean == {
        "differentiation": "moderate",
        "stas": "absent",
        "vascular_invasion": "absent",
        "pleural_invasion": "present",
        "adjacent_invasion": "present",
        "margins": "negative",
    }
    rng = random.Random(0)
    for _ in range(20):  # every key word with one letter dropped or doubled, at random places

        def edit(w: str) -> str:
            if w.lower().strip(".,:") not in ocr_lexicon.LEXICON or len(w) < 6:
                return w
            while True:
                i = rng.randrange(1, len(w) - 2)
                out = w[:i] + w[i + 1 :] if rng.random() < 0.5 else w[:i] + w[i] + w[i:]
                if out.lower().strip(".,:") not in ocr_lexicon.KNOWN:  # "through" -> "trough" is a real word
                    return out

        noisy = " ".join(edit(w) for w in REPORT.split(" "))
        assert noisy != REPORT
        assert offline.extract(noisy).labels == clean, noisy


@pytest.mark.parametrize(
    "ocr, word",
    [
        ("INVASI ON", "INVASION"),
        ("VESSE L", "VESSEL"),
        ("Lymphovascu lar", "Lymphovascular"),
        ("MEDIASTIN AL", "MEDIASTINAL"),
        ("differen tiation", "differentiation"),
        ("inva-\nsion", "invasion"),  # a line-end hyphen
        ("pleu-\nral", "pleural"),
        ("UNINVOL\nVED", "UNINVOLVED"),  # a line break
        ("I nvasion", "Invasion"),
        ("a bsent", "absent"),
    ],
)
def test_the_lexicon_rejoins_key_words_that_ocr_split(ocr, word):
    assert ocr_lexicon.correct(f"x {ocr}, y") == f"x {word}, y"


@pytest.mark.parametrize(
    "text",
    [
        "does not involve a bronchus",  # one edit from "involved": only exact joins
        "in the parenchyma. 4L lymph node",  # never across a full stop
        "no vascular invasion",  # pieces that are words themselves stay apart
        "Angio lymphatic",
        "pleura l",
        "tumor is present",
    ],
)
def test_the_lexicon_joins_only_pieces_that_spell_a_term_exactly(text):
    assert ocr_lexicon.join_split(text) == text


def test_split_key_words_give_the_clean_answers():
    clean = offline.extract(REPORT).labels
    rng = random.Random(1)
    for _ in range(20):  # every key word split in two at a random place, by a space, a line break or a hyphen

        def split(w: str) -> str:
            core = w.strip(".,:")
            if core.lower() not in ocr_lexicon.LEXICON:
                return w
            while True:
                i = rng.randrange(1, len(core))
                if not {core[:i].lower(), core[i:].lower()} & (ocr_lexicon.LEXICON | ocr_lexicon.KNOWN):
                    return w.replace(core, core[:i] + rng.choice((" ", "\n", "-\n")) + core[i:])

        noisy = " ".join(split(w) for w in REPORT.split(" "))
        assert noisy != REPORT
        assert offline.extract(noisy).labels == clean, noisy
