"""How much one-letter OCR errors and split words change the offline extractor's answers, with and without
the OCR lexicon (fiveflow.reports.ocr_lexicon).

Real TCGA reports were scanned: key words come with one letter wrong, added or dropped ("pieura",
"vasculaz", "negattive"). This corrupts a share of the lexicon's words in every report with one random
edit (a letter changed to a look-alike or a random letter, dropped, or doubled), seeded, and scores how
often the six answers on the corrupted text equal the answers on the clean text ("consistency"), once
with the lexicon and once with it switched off. A second pass splits the same share of key words in two
at a random inner position, with a space, a line break or a line-end hyphen ("INVASI ON", "inva-\nsion"),
and scores the lexicon's rejoining (``ocr_lexicon.join_split``) the same way. It also counts the words
the lexicon restores in the real, uncorrupted reports. Reads only the report texts (no GPT-4 answers are
used).

Usage: .venv/bin/python benchmarks/reports_ocr_robustness.py [--csv reports.csv] [--rate 0.2] [--seed 0]
Last line: RESULT consistency_lexicon=... consistency_off=... ratio=... split_lexicon=... split_off=...
real_words_restored=... real_words_rejoined=... reports=...
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path
from unittest import mock

import pandas as pd

from fiveflow.reports import ocr_lexicon, offline
from fiveflow.reports.normalize import FIELDS

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = ROOT.parent / "shared" / "data" / "reports" / "tcga_lung_reports_dev.csv"
_LETTERS = re.compile(r"[A-Za-z]+")
LOOK_ALIKE = {"l": "1i", "i": "l1", "o": "0c", "c": "oe", "e": "ca", "n": "h", "u": "v", "m": "n", "r": "n", "s": "5"}


def corrupt_word(word: str, rng: random.Random) -> str:
    """One random edit of ``word`` that is not itself a lexicon term or a listed real word."""
    for _ in range(20):
        i = rng.randrange(len(word))
        kind = rng.choice(("swap", "drop", "double"))
        if kind == "swap":
            low = word[i].lower()
            c = rng.choice(LOOK_ALIKE.get(low, "abcdefghijklmnopqrstuvwxyz"))
            out = word[:i] + (c.upper() if word[i].isupper() else c) + word[i + 1 :]
        elif kind == "drop":
            out = word[:i] + word[i + 1 :]
        else:
            out = word[:i] + word[i] + word[i:]
        if out.lower() != word.lower() and out.lower() not in ocr_lexicon.LEXICON | ocr_lexicon.KNOWN:
            return out
    return word


def split_word(word: str, rng: random.Random) -> str:
    """``word`` split in two at a random inner position by a space, a line break or a line-end hyphen."""
    i = rng.randrange(1, len(word))
    return word[:i] + rng.choice((" ", "\n", "-\n")) + word[i:]


def corrupt(text: str, rate: float, rng: random.Random, how=corrupt_word) -> str:
    def edit(m: re.Match[str]) -> str:
        w = m.group(0)
        return how(w, rng) if w.lower() in ocr_lexicon.LEXICON and rng.random() < rate else w

    return _LETTERS.sub(edit, text)


def labels(texts: list[str], lexicon: bool) -> list[dict[str, str]]:
    if lexicon:
        return [offline.extract(t).labels for t in texts]
    with mock.patch.object(ocr_lexicon, "correct", lambda t: t):
        return [offline.extract(t).labels for t in texts]


def consistency(clean: list[dict[str, str]], bad: list[dict[str, str]]) -> dict[str, float]:
    return {f: sum(a[f] == b[f] for a, b in zip(clean, bad)) / len(clean) for f in FIELDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEV_CSV, help="reports CSV with a `text` column")
    ap.add_argument("--rate", type=float, default=0.2, help="share of the lexicon's words corrupted")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.csv.is_file():
        sys.exit(f"reports CSV not found: {args.csv} (the real data lives in ../shared/data)")
    texts = [str(t) for t in pd.read_csv(args.csv)["text"].fillna("")]
    restored = sum(
        ocr_lexicon.term_for(m.group(0).lower()) is not None for t in texts for m in ocr_lexicon._WORD.finditer(t)
    )
    # each rejoined word is one letter run fewer (the gap may be a space, a line break or a hyphen and a break)
    rejoined = sum(len(_LETTERS.findall(t)) - len(_LETTERS.findall(ocr_lexicon.join_split(t))) for t in texts)
    rng = random.Random(args.seed)
    noisy = [corrupt(t, args.rate, rng) for t in texts]
    split = [corrupt(t, args.rate, rng, how=split_word) for t in texts]
    out = {}
    for name, on in (("lexicon", True), ("off", False)):
        clean = labels(texts, on)
        for kind, bad_texts in (("edit", noisy), ("split", split)):
            per_field = consistency(clean, labels(bad_texts, on))
            out[kind, name] = sum(per_field.values()) / len(FIELDS)
            print(
                f"{kind:5s} {name:8s} "
                + " ".join(f"{f[:8]}={v:.3f}" for f, v in per_field.items())
                + f" mean={out[kind, name]:.3f}"
            )
    print(
        f"{len(texts)} reports, {args.rate:.0%} of key words corrupted by one edit, then as many split in two "
        f"(seed {args.seed}); in the uncorrupted reports the lexicon restores {restored} words and rejoins {rejoined}"
    )
    print(
        f"RESULT consistency_lexicon={out['edit', 'lexicon']:.4f} consistency_off={out['edit', 'off']:.4f} "
        f"ratio={(1 - out['edit', 'off']) / max(1e-9, 1 - out['edit', 'lexicon']):.2f} "
        f"split_lexicon={out['split', 'lexicon']:.4f} split_off={out['split', 'off']:.4f} "
        f"real_words_restored={restored} real_words_rejoined={rejoined} reports={len(texts)}"
    )


if __name__ == "__main__":
    main()
