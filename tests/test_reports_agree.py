"""agreement(): per-question agreement, confusions and disagreements of two labels tables; the reports CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import PROJECT_ROOT, shared_path
from fiveflow.reports.agree import agreement, format_agreement, read_labels
from fiveflow.reports.normalize import FIELDS

DEV_CSV = "reports/tcga_lung_reports_dev.csv"


def labels(rows: dict[str, tuple[str, ...]], flags: dict[str, str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame([{"patient_id": p, **dict(zip(FIELDS, v))} for p, v in rows.items()])
    df["flag"] = [(flags or {}).get(p, "") for p in rows]
    return df


PRED = labels(
    {
        "P1": ("well", "absent", "present", "absent", "unknown", "negative"),
        "P2": ("poor", "unknown", "absent", "present", "unknown", "positive"),
        "P3": ("moderate", "unknown", "unknown", "absent", "absent", "negative"),
        "P4": ("well", "unknown", "present", "absent", "unknown", "negative"),
        "P5": ("unknown",) * 6,  # an unreadable report: left out
    },
    flags={"P5": "unreadable"},
)
REF = labels(
    {
        "P1": ("well", "absent", "present", "absent", "unknown", "negative"),
        "P2": ("moderate", "unknown", "absent", "present", "unknown", "negative"),
        "P3": ("moderate", "unknown", "present", "unknown", "absent", "negative"),
        "P5": ("poor",) + ("unknown",) * 5,
        "P6": ("well",) + ("unknown",) * 5,
    }
)


def test_agreement_on_a_hand_made_pair(tmp_path):
    PRED.to_parquet(tmp_path / "pred.parquet")
    REF.to_csv(tmp_path / "ref.csv", index=False)
    res = agreement(tmp_path / "pred.parquet", tmp_path / "ref.csv")
    assert (
        res.n_both == 3 and res.only_pred == ["P4"] and res.only_ref == ["P6"]
    )  # P5 was left out of pred, not missing
    assert res.excluded == {"pred": 1, "ref": 0}
    t = res.per_field.set_index("field")
    assert t.loc["differentiation", ["n", "agree"]].tolist() == [3, 2]
    assert t.loc["differentiation", "agreement"] == pytest.approx(2 / 3)
    assert t.loc["stas", "agree"] == 3 and t.loc["stas", "n_known"] == 1
    # vascular: P3 unknown vs present -> 2/3 agree; both known on P1, P2, both agree
    assert t.loc["vascular_invasion", ["agree", "n_known", "agree_known"]].tolist() == [2, 2, 2]
    assert t.loc["margins", "agreement"] == pytest.approx(2 / 3)
    assert t.loc["margins", "kappa"] == pytest.approx(0.0)  # ref is all negative: chance agreement only
    cm = res.confusion["differentiation"]
    assert cm.loc["poor", "moderate"] == 1 and cm.loc["moderate", "moderate"] == 1 and cm.to_numpy().sum() == 3
    assert list(cm.index) == ["well", "moderate", "poor"]  # categories in their natural order
    d = res.disagreements
    assert d.values.tolist() == [
        ["P2", "differentiation", "poor", "moderate"],
        ["P3", "vascular_invasion", "unknown", "present"],
        ["P3", "pleural_invasion", "absent", "unknown"],
        ["P2", "margins", "positive", "negative"],
    ]
    text = format_agreement(res, show=2)
    assert "patients compared: 3; only in pred: 1; only in ref: 1" in text
    assert (
        "differentiation: confusions" in text
        and "disagreements: 4" in text
        and "positive" not in text.split("first 2:")[1]
    )


def test_answers_csv_is_normalised_and_empty_answers_left_out(tmp_path):
    pd.DataFrame(
        {
            "patient_filename": ["P1.a", "P2.b", "P3.c"],
            "answer": [
                "Well differentiated; Unknown; Vascular invasion is present; No pleural invasion; Unknown; R0",
                "Poorly differentiated; Unknown; Unknown; Unknown; Unknown; Margins involved (R1)",
                "",
            ],
        }
    ).to_csv(tmp_path / "answers.csv", index=False)
    got, left_out = read_labels(tmp_path / "answers.csv")
    assert got["patient_id"].tolist() == ["P1", "P2"] and left_out == ["P3"]
    assert got.iloc[0][list(FIELDS)].tolist() == ["well", "unknown", "present", "absent", "unknown", "negative"]
    assert got.iloc[1]["margins"] == "positive"


def test_bad_labels_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_labels(tmp_path / "nope.parquet")
    pd.DataFrame({"patient_id": ["P1"], "differentiation": ["well"]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"x\.csv.*missing columns.*answer"):
        read_labels(tmp_path / "x.csv")


@pytest.mark.shared_data
def test_cli_extract_rules_then_agree_with_gpt4(tmp_path, capsys):
    from fiveflow.cli import main

    dev = shared_path(DEV_CSV)
    out = tmp_path / "labels.parquet"
    cfg = ["--config", str(PROJECT_ROOT / "config.yaml")]
    assert main(["reports", "extract", "--backend", "rules", "--input", str(dev), "--output", str(out), *cfg]) == 0
    assert "300 patients" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert len(df) == 300 and set(df["backend"]) == {"offline"} and df["status"].eq("ok").all()
    assert main(["reports", "agree", "--pred", str(out), "--ref", str(dev), "--show", "5"]) == 0
    text = capsys.readouterr().out
    assert "patients compared: 287; only in pred: 0; only in ref: 0" in text and "ref 13" in text
    table = {
        ln.split()[0]: float(ln.split()[3])
        for ln in text.splitlines()
        if ln.split() and ln.split()[0] in FIELDS and len(ln.split()) == 8
    }
    assert set(table) == set(FIELDS)
    assert table["differentiation"] >= 0.93 and table["margins"] >= 0.91
    assert "first 5:" in text
    # the old form still works, and `import` maps to the precomputed backend
    old = tmp_path / "old.parquet"
    assert main(["reports", str(dev), "--out", str(old), "--backend", "offline", *cfg]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(old), df)
    imp = tmp_path / "imp.parquet"
    assert (
        main(["reports", "extract", "--backend", "import", "--answers", str(dev), "-i", str(dev), "-o", str(imp), *cfg])
        == 0
    )
    assert set(pd.read_parquet(imp)["backend"]) == {"precomputed"}
    capsys.readouterr()
    assert main(["reports", "agree", "--pred", str(imp), "--ref", str(dev)]) == 0
    assert "no disagreements" in capsys.readouterr().out


def test_cli_extract_folder_and_errors(tmp_path, capsys):
    from fiveflow.cli import main

    d = tmp_path / "reports"
    d.mkdir()
    (d / "TCGA-AA-0001.txt").write_text("Adenocarcinoma, poorly differentiated. Margins: negative.")
    (d / "TCGA-AA-0002.txt").write_text("")
    out = tmp_path / "l.parquet"
    assert main(["reports", "extract", "--backend", "rules", "--input", str(d), "--output", str(out)]) == 0
    assert "2 patients" in capsys.readouterr().out
    assert pd.read_parquet(out)["status"].tolist() == ["ok", "empty"]
    assert main(["reports", "extract", "--backend", "import", "--input", str(d), "--output", str(out)]) == 2
    assert "--answers" in capsys.readouterr().err
    assert main(["reports", "extract", "--input", str(tmp_path / "missing.csv"), "--output", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err
