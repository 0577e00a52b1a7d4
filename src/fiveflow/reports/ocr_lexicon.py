"""OCR-tolerant key words: restore the words the extractor's rules anchor on when OCR broke one letter.

Scanned TCGA reports spell key words with one letter wrong, added or dropped ("pieura", "vasculaz",
"negattive", "ifferentiated", "madiastinal"). Each such word is rare, so no rule written from a
development set catches them; one lexicon does, for every field at once. :func:`correct` replaces a
word by a :data:`LEXICON` term when

- the word is at least :data:`MIN_LEN` letters long and is neither a lexicon term nor a listed real
  word (:data:`KNOWN`: inflections and English words one edit away from a term, such as ``tumors``,
  ``involves``, ``viscera``, ``plastic``),
- exactly one term lies within one edit (a letter changed, added or dropped; Levenshtein distance 1),

keeping the word's case style (``PLEURA``, ``Pleura``, ``pleura``). Words are found with the
symmetric-delete index (every term with each one letter removed), then each candidate is checked
with the exact distance. Deterministic and offline; the rules see the corrected text.

OCR also splits a word with a stray space or line break ("INVASI ON", "VESSE L", "Lymphovascu lar") and PDF
text keeps the hyphenation of a line end ("inva-\nsion"). :func:`join_split` rejoins two pieces when
together they spell a lexicon term exactly and neither piece is itself a term or a listed real word; pieces
joined across a full stop, or only one edit away from a term, are left apart ("does not involve a
bronchus", "parenchyma. 4L" stay as they are). :func:`correct` does both.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: words the rules anchor on (lower case); a misspelling of one of them becomes the word
LEXICON: frozenset[str] = frozenset(
    """
    invasion invasive invades invading invaded pleura pleural visceral parietal vascular lymphovascular
    angiolymphatic lymphatic venous arterial vessel differentiated differentiation undifferentiated
    moderately poorly margin margins identified negative positive present absent bronchial bronchus
    involved involvement uninvolved carcinoma adenocarcinoma squamous diaphragm pericardium pericardial
    mediastinum mediastinal resection parenchymal extension elastic tumor spread through spaces
    """.split()
)
#: real words one edit away from a term: never "corrected"
KNOWN: frozenset[str] = (
    frozenset(
        """
    tumors tumour tumours humor rumor vessels involve involves invade invasions invader invaders evades
    adenocarcinomas carcinomas carcinomata elastica elastin elastics lymphatics spreads presents presence
    presented absents absence resections bronchi bronchia viscera identifies identify identifier identifiers
    parenchyma pleurae plural margined marginal plastic poorer venules venule venosus venom venus arteries
    vascularity differentiate extensions positives negatives trough thorough though tough prevent space spaced
    spacer spares spices spades
    """.split()
    )
    - LEXICON
)
#: shorter words are left alone (too many real words lie one edit from a short term)
MIN_LEN = 5

_WORD = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*")  # digits inside a word are OCR letters ("p1eura")


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))} | {word}


@lru_cache(maxsize=1)
def _index() -> dict[str, frozenset[str]]:
    idx: dict[str, set[str]] = {}
    for term in LEXICON:
        for d in _deletes(term):
            idx.setdefault(d, set()).add(term)
    return {k: frozenset(v) for k, v in idx.items()}


def _distance_at_most_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


@lru_cache(maxsize=65536)
def term_for(word: str) -> str | None:
    """The lexicon term ``word`` (lower case) is a one-letter OCR error of, or None."""
    if len(word) < MIN_LEN or word in LEXICON or word in KNOWN or sum(c.isalpha() for c in word) < len(word) - 1:
        return None
    idx = _index()
    found = {t for d in _deletes(word) for t in idx.get(d, ()) if _distance_at_most_one(word, t)}
    return next(iter(found)) if len(found) == 1 else None


def _same_case(template: str, word: str) -> str:
    if template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# a stray space or line break between two pieces of one word, or a line-end hyphen
_SPLIT_GAP = re.compile(r"[ ]|[ ]?\n[ ]?|-[ ]?\n[ ]?")
_LETTERS = re.compile(r"[A-Za-z]+")


def _piece_is_word(piece: str) -> bool:
    return piece in LEXICON or piece in KNOWN


def join_split(text: str) -> str:
    """``text`` with lexicon words that OCR split in two rejoined ("INVASI ON" -> "INVASION"; see the module
    docstring). The joined word keeps the first piece's case style (both pieces' when the first is one letter)."""
    out: list[str] = []
    pos = 0
    prev: re.Match[str] | None = None
    for m in _LETTERS.finditer(text):
        if prev is not None and _SPLIT_GAP.fullmatch(text[prev.end() : m.start()]):
            a, b = prev.group(0), m.group(0)
            word = (a + b).lower()
            if word in LEXICON and not _piece_is_word(a.lower()) and not _piece_is_word(b.lower()):
                out.append(text[pos : prev.start()])
                out.append(_same_case(a if len(a) > 1 else a + b, word))
                pos = m.end()
                prev = None  # a joined word is not joined again
                continue
        prev = m
    out.append(text[pos:])
    return "".join(out)


def correct(text: str) -> str:
    """``text`` with split lexicon words rejoined and one-letter OCR errors of them undone (see the module
    docstring)."""

    def fix(m: re.Match[str]) -> str:
        w = m.group(0)
        term = term_for(w.lower())
        return w if term is None else _same_case(w, term)

    return _WORD.sub(fix, join_split(text))
