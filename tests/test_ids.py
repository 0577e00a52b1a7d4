"""fiveflow.ids: the one id policy (clean_id, clean_ids with collision checks)."""

from __future__ import annotations

import pytest

from fiveflow.fileio import sanitize_id
from fiveflow.ids import IdError, clean_id, clean_ids


def test_clean_id_folds_accents_and_keeps_the_old_rule():
    assert sanitize_id is clean_id
    assert clean_id("José 01") == "Jose_01"
    assert clean_id("Jose\u0301 01") == "Jose_01"  # decomposed accent: the same id
    assert clean_id("  P1 ") == "P1"
    assert clean_id("../../etc/passwd") == "_.._etc_passwd"
    assert clean_id("TCGA-AA-1234-01Z-00-DX1.ABC") == "TCGA-AA-1234-01Z-00-DX1.ABC"
    assert clean_id("Ｐ１") == "P1"  # full-width forms fold too
    for once in ("José 01", "a b (1)", ".hidden", "Ø-1"):
        assert clean_id(clean_id(once)) == clean_id(once)
    for bad in ("", "  ", "..", "..."):
        with pytest.raises(IdError):
            clean_id(bad)


def test_clean_ids_refuses_two_different_ids_that_become_one():
    with pytest.raises(IdError, match=r"s\.csv: patient ids 'A B' \(line 2\) and 'A_B' \(line 4\) both become 'A_B'"):
        clean_ids(["A B", "P2", "A_B"], "patient", "s.csv", lines=[2, 3, 4])
    with pytest.raises(IdError, match=r"report patient ids 'José' and 'Jose' both become 'Jose'"):
        clean_ids(["José", "Jose"], "report patient")


def test_clean_ids_allows_the_same_id_repeated():
    assert clean_ids(["José 01", "José 01", " José 01", "Jose\u0301 01"], "patient") == ["Jose_01"] * 4
    with pytest.raises(IdError, match=r"x\.csv: slide id '\.\.' \(line 3\) is empty"):
        clean_ids(["a", ".."], "slide", "x.csv", lines=[2, 3])
