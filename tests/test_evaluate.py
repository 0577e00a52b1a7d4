from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fiveflow.evaluate.tables import evaluate_predictions, to_latex, to_markdown


def fake_predictions(tmp_path, methods=(("FiVE", [0, 1, 4]), ("meanpool", [1, 4])), noise=0.25):
    """Prediction parquets per (method, shots): 20 slides, 3 runs (1 for zero-shot), seeded probabilities."""
    rng = np.random.default_rng(0)
    files = []
    for method, shots_list in methods:
        for shots in shots_list:
            rows = []
            for run in range(1 if shots == 0 else 3):
                for i in range(20):
                    label = "LUSC" if i % 2 else "LUAD"
                    p = float(np.clip((0.8 if label == "LUSC" else 0.2) + rng.normal(0, noise), 0, 1))
                    rows.append(
                        dict(
                            method=method,
                            shots=shots,
                            run=run,
                            slide_id=f"s{i}",
                            patient_id=f"p{i}",
                            label=label,
                            prob=p,
                            pred="LUSC" if p >= 0.5 else "LUAD",
                        )
                    )
            f = tmp_path / f"{method}_{shots}.parquet"
            pd.DataFrame(rows).to_parquet(f)
            files.append(str(f))
    return files


def test_tables_and_plot(tmp_path):
    files = fake_predictions(tmp_path)
    out = SimpleNamespace(
        csv=tmp_path / "t/f.csv",
        md=tmp_path / "t/f.md",
        tex=tmp_path / "t/f.tex",
        runs=tmp_path / "t/runs.csv",
        plot=tmp_path / "p/f.png",
    )
    table = evaluate_predictions(files, out, classes=["LUAD", "LUSC"])
    csv = pd.read_csv(out.csv)
    assert list(csv.columns[:9]) == [
        "method",
        "shots",
        "n_runs",
        "acc_mean",
        "acc_std",
        "auc_mean",
        "auc_std",
        "f1_mean",
        "f1_std",
    ]
    assert len(csv) == 5 and csv.loc[csv["shots"] == 0, "n_runs"].item() == 1
    assert (csv["acc_mean"] > 0.6).all()
    runs = pd.read_csv(out.runs)
    assert len(runs) == 1 + 3 + 3 + 3 + 3
    # the table's mean is the mean of per-run metrics
    g = runs[(runs.method == "FiVE") & (runs.shots == 4)]
    assert np.isclose(g["acc"].mean(), table.loc[(table.method == "FiVE") & (table.shots == 4), "acc_mean"].item())
    md = out.md.read_text()
    # paper layout: one table per metric (accuracy, AUC, the authors' F1, ours), one row per method in each
    assert md.count("| FiVE |") == 4 and md.count("| meanpool |") == 4 and "±" in md
    assert "| Method (authors' F1: positive class, ROC-optimal threshold, %) |" in md
    assert "| Method (our F1: macro at 0.5, %) |" in md
    f1auth = csv.set_index(["method", "shots"]).loc[("meanpool", 4), "f1auth_mean"]
    assert f"{100 * f1auth:.2f} ±" in md.split("authors' F1")[1].split("our F1")[0]
    assert "\\toprule" in out.tex.read_text()
    assert out.plot.read_bytes()[:4] == b"\x89PNG"


def test_renderers_handle_nan():
    t = pd.DataFrame(
        [
            dict(
                method="m",
                shots=1,
                n_runs=1,
                acc_mean=0.5,
                acc_std=float("nan"),
                auc_mean=float("nan"),
                auc_std=float("nan"),
                f1_mean=0.5,
                f1_std=0.0,
            )
        ]
    )
    assert "n/a" in to_markdown(t) and "n/a" in to_latex(t)


# --- issue 7: paper-layout tables and the ablation table ------------------------------------------

import re  # noqa: E402

from fiveflow.evaluate.tables import ablation_latex, ablation_markdown, ablation_table, method_order  # noqa: E402


def _summary():
    rows = []
    for method, vals in (
        ("meanpool", {1: 0.70, 4: 0.80}),
        ("FiVE", {0: 0.60, 1: 0.75, 4: 0.85}),
        ("clam_sb", {1: 0.72, 4: 0.86}),
        ("FiVE-classtexts", {0: 0.55, 1: 0.74, 4: 0.80}),
    ):
        for s, v in vals.items():
            rows.append(
                dict(
                    method=method,
                    shots=s,
                    n_runs=3,
                    acc_mean=v,
                    acc_std=0.01,
                    auc_mean=v + 0.05,
                    auc_std=0.02,
                    f1_mean=v,
                    f1_std=0.01,
                    f1auth_mean=v - 0.01,
                    f1auth_std=0.01,
                )
            )
    return pd.DataFrame(rows)


def _md_block(md, title):
    block = md.split(f"| Method ({title}) |")[1].split("\n\n")[0].splitlines()
    block[0] = "| Method |" + block[0]
    header = [c.strip() for c in block[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in block[2:]]
    return header, body


def test_markdown_paper_layout_bolds_best_per_column():
    md = to_markdown(_summary())
    header, body = _md_block(md, "accuracy, %")
    assert header == ["Method", "zero-shot", "1-shot", "4-shot"]
    assert [r[0] for r in body] == ["FiVE", "FiVE-classtexts", "meanpool", "clam_sb"]
    assert method_order(["transmil", "dsmil", "abmil", "FiVE-x", "zzz", "FiVE"]) == [
        "FiVE",
        "FiVE-x",
        "abmil",
        "dsmil",
        "transmil",
        "zzz",
    ]
    bold = {(r[0], header[j]) for r in body for j, c in enumerate(r) if c.startswith("**")}
    assert bold == {("FiVE", "zero-shot"), ("FiVE", "1-shot"), ("clam_sb", "4-shot")}
    assert body[2][1] == "-" and body[3][1] == "-"  # baselines have no zero-shot
    assert body[0][1] == "**60.00 ± 1.00**"
    _, auc = _md_block(md, "ROC AUC, %")
    assert auc[0][1] == "**65.00 ± 2.00**"
    _, f1auth = _md_block(md, "authors' F1: positive class, ROC-optimal threshold, %")
    assert f1auth[0][1] == "**59.00 ± 1.00**"
    assert md.count("**") == 2 * 4 * 3 and md.startswith("| Method")  # 3 bold cells in each of 4 blocks
    assert "†" not in md  # no optimistic rows, no footnote


def test_latex_paper_layout_bolds_best_per_column():
    tex = to_latex(_summary())
    assert "Method & zero-shot & 1-shot & 4-shot" in tex and r"\toprule" in tex
    assert "clam\\_sb" in tex  # escaped
    acc = tex.split("Accuracy")[1].split("ROC AUC")[0]
    assert len(re.findall(r"\\textbf\{", acc)) == 3
    row = next(line for line in acc.splitlines() if line.startswith("FiVE &"))
    assert row.startswith(r"FiVE & \textbf{60.00 $\pm$ 1.00} & \textbf{75.00 $\pm$ 1.00} & 85.00")
    assert next(line for line in acc.splitlines() if line.startswith("meanpool")).startswith("meanpool & - &")


def test_ablation_table_has_difference_rows(tmp_path):
    t = _summary()
    abl = ablation_table(t)
    assert list(abl.columns) == ["row", "shots", "n_runs", "acc_mean", "acc_std"]
    diff = abl[abl["row"] == "difference (FiVE - FiVE-classtexts)"].set_index("shots")["acc_mean"]
    assert diff.to_dict() == pytest.approx({0: 0.05, 1: 0.01, 4: 0.05})
    assert set(abl["row"]) == {"FiVE", "FiVE-classtexts", "difference (FiVE - FiVE-classtexts)"}
    md = ablation_markdown(abl)
    assert "| difference (FiVE - FiVE-classtexts) | +5.00 | +1.00 | +5.00 |" in md
    assert "| FiVE | 60.00 ± 1.00 | 75.00 ± 1.00 | 85.00 ± 1.00 |" in md
    tex = ablation_latex(abl).splitlines()
    assert tex[:3] == [r"\begin{tabular}{lccc}", r"\toprule", r"Accuracy (\%) & zero-shot & 1-shot & 4-shot \\"]
    assert r"FiVE & 60.00 $\pm$ 1.00 & 75.00 $\pm$ 1.00 & 85.00 $\pm$ 1.00 \\" in tex
    i = tex.index(r"difference (FiVE - FiVE-classtexts) & +5.00 & +1.00 & +5.00 \\")
    assert tex[i - 1] == r"\midrule" and tex[-2:] == [r"\bottomrule", r"\end{tabular}"]
    # through evaluate_predictions, with runs: paired std of the differences
    files = fake_predictions(tmp_path)
    df = pd.read_parquet(files[2])  # FiVE 4 shots, 3 runs
    df["method"], df["prob"] = "FiVE-classtexts", 1 - df["prob"]
    df.to_parquet(tmp_path / "abl.parquet")
    out = SimpleNamespace(
        csv=tmp_path / "f.csv",
        md=tmp_path / "f.md",
        tex=tmp_path / "f.tex",
        runs=tmp_path / "r.csv",
        plot=tmp_path / "p.png",
        ablation_csv=tmp_path / "a.csv",
        ablation_md=tmp_path / "a.md",
        ablation_tex=tmp_path / "a.tex",
    )
    evaluate_predictions(files + [str(tmp_path / "abl.parquet")], out, classes=["LUAD", "LUSC"], n_boot=50)
    a = pd.read_csv(out.ablation_csv)
    d = a[a["row"].str.startswith("difference")]
    assert d["shots"].tolist() == [4] and d["acc_mean"].item() > 0.3 and not np.isnan(d["acc_std"].item())
    assert "difference (FiVE - FiVE-classtexts)" in out.ablation_md.read_text()
    assert r"difference (FiVE - FiVE-classtexts) & - & - & +83.33 $\pm$ 4.71 \\" in out.ablation_tex.read_text()
    csv = pd.read_csv(out.csv)
    assert {"bacc_mean", "acc_ci_low", "auc_ci_high", "f1auth_ci_low", "note"} <= set(csv.columns)


# --- ROC curves and confusion matrices -------------------------------------------------------------

from fiveflow.evaluate.plots import confusion_counts, default_confusion_shots, plot_confusion, plot_roc  # noqa: E402


def _plot_predictions():
    """2 methods x shots {0, 2} x 2 runs x 10 slides, fixed seed."""
    rng = np.random.default_rng(1)
    rows = []
    for method in ("FiVE", "meanpool"):
        for shots in (0, 2):
            for run in range(2):
                for i in range(10):
                    label = "LUSC" if i % 2 else "LUAD"
                    p = float(np.clip((0.75 if label == "LUSC" else 0.25) + rng.normal(0, 0.3), 0, 1))
                    rows.append(
                        dict(
                            method=method,
                            shots=shots,
                            run=run,
                            slide_id=f"s{i}",
                            patient_id=f"p{i}",
                            label=label,
                            prob=p,
                            pred="LUSC" if p >= 0.5 else "LUAD",
                        )
                    )
    return pd.DataFrame(rows)


def _assert_nonblank_png(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:4] == b"\x89PNG"
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.05
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporaries


def test_confusion_counts_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    pred = _plot_predictions()
    classes = ["LUAD", "LUSC"]
    cm = confusion_counts(pred, classes)
    assert cm.shape == (2, 2) and cm.sum() == len(pred)
    np.testing.assert_array_equal(cm, confusion_matrix(pred["label"], pred["pred"], labels=classes))
    g = pred[(pred.method == "FiVE") & (pred.shots == 2)]
    np.testing.assert_array_equal(
        confusion_counts(g, classes[::-1]), confusion_matrix(g["label"], g["pred"], labels=classes[::-1])
    )
    # labels outside `classes` are ignored, like sklearn's labels=
    odd = pd.concat([g, g.head(1).assign(label="other")])
    np.testing.assert_array_equal(confusion_counts(odd, classes), confusion_counts(g, classes))
    assert default_confusion_shots(pred) == [0, 2]
    assert default_confusion_shots(pred[pred.shots == 2]) == [2]


def test_roc_and_confusion_plots(tmp_path):
    pred = _plot_predictions()
    classes = ["LUAD", "LUSC"]
    plot_roc(pred, classes, tmp_path / "a/roc.png")
    plot_confusion(pred, classes, tmp_path / "a/confusion.png")
    plot_roc(pred, classes, tmp_path / "b/roc2.png", shots=2)
    for name in ("a/roc.png", "a/confusion.png", "b/roc2.png"):
        _assert_nonblank_png(tmp_path / name)
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # figures closed
    # through evaluate_predictions, when the output object names them
    files = []
    for (m, s), g in pred.groupby(["method", "shots"]):
        files.append(str(tmp_path / f"{m}_{s}.parquet"))
        g.to_parquet(files[-1])
    out = SimpleNamespace(
        csv=tmp_path / "t/f.csv",
        md=tmp_path / "t/f.md",
        tex=tmp_path / "t/f.tex",
        runs=tmp_path / "t/runs.csv",
        plot=tmp_path / "p/f.png",
        roc=tmp_path / "p/roc.png",
        confusion=tmp_path / "p/confusion.png",
    )
    evaluate_predictions(files, out, classes=classes, n_boot=20)
    _assert_nonblank_png(out.roc)
    _assert_nonblank_png(out.confusion)


# --- optimistic rows (train.zeroshot_epoch: best_on_test) -------------------------------------------

from fiveflow.evaluate.optimistic import OPTIMISTIC, display_name, is_optimistic, optimistic_note  # noqa: E402
from fiveflow.evaluate.tables import footnotes, to_html  # noqa: E402

NOTE = "epoch chosen on the test set: optimistic"


def test_optimistic_registry():
    assert OPTIMISTIC == {"-bestepoch": NOTE}
    assert is_optimistic("FiVE-bestepoch") and is_optimistic("FiVE+histotype-bestepoch")
    assert not any(is_optimistic(m) for m in ("FiVE", "FiVE-noTFS", "meanpool", "-bestepoch"))
    assert optimistic_note("FiVE-bestepoch") == NOTE and optimistic_note("FiVE") == ""
    assert display_name("FiVE-bestepoch") == "FiVE-bestepoch †" and display_name("abmil") == "abmil"


def test_optimistic_row_is_labelled_in_every_table_and_never_bold():
    t = _summary()
    best = t[(t.method == "FiVE") & (t.shots == 0)].assign(
        method="FiVE-bestepoch", acc_mean=0.95, auc_mean=0.97, f1_mean=0.95, f1auth_mean=0.95
    )
    t = pd.concat([t, best], ignore_index=True)
    note = f"{NOTE} (epoch 7 of 10)"
    t["note"] = [note if m == "FiVE-bestepoch" else "" for m in t["method"]]
    assert method_order(t["method"])[:3] == ["FiVE", "FiVE-bestepoch", "FiVE-classtexts"]  # right after FiVE
    assert footnotes(t) == [f"† FiVE-bestepoch: {note}"]
    md = to_markdown(t)
    header, body = _md_block(md, "accuracy, %")
    assert [r[0] for r in body][:2] == ["FiVE", "FiVE-bestepoch †"]
    assert body[1][1] == "95.00 ± 1.00" and body[0][1] == "**60.00 ± 1.00**"  # the honest FiVE keeps the bold
    assert md.rstrip().endswith(f"† FiVE-bestepoch: {note}") and md.count("| FiVE-bestepoch † |") == 4
    tex = to_latex(t)
    # acc, authors' F1, our F1 (its AUC is 97)
    assert tex.count(r"FiVE-bestepoch$^\dagger$ & 95.00 $\pm$ 1.00") == 3
    assert r"\textbf{95.00" not in tex and r"\textbf{97.00" not in tex
    assert r"\multicolumn{4}{l}{\footnotesize $^\dagger$ FiVE-bestepoch: " + note + "}" in tex
    assert tex.index(r"\bottomrule") < tex.index(r"\footnotesize") < tex.index(r"\end{tabular}")
    html = to_html(t)
    assert html.count("<td>FiVE-bestepoch †</td><td>95.00 ± 1.00</td>") == 3
    assert f"<p class='note'>† FiVE-bestepoch: {note}</p>" in html
    # the ablation table is FiVE and its ablations only
    assert "FiVE-bestepoch" not in set(ablation_table(t)["row"])


def test_bestepoch_predictions_get_the_note_and_epoch_through_evaluate(tmp_path):
    from fiveflow.evaluate.optimistic import SELECTION_KEY
    from fiveflow.train.predictions import write_predictions

    files = fake_predictions(tmp_path)
    zero = pd.read_parquet(files[0])  # FiVE zero-shot
    write_predictions(
        [zero.assign(method="FiVE-bestepoch")],
        tmp_path / "FiVE-bestepoch_0.parquet",
        metadata={SELECTION_KEY: {"method": "FiVE-bestepoch", "epoch": 3, "n_epochs": 5}},
    )
    out = SimpleNamespace(
        csv=tmp_path / "t/f.csv",
        md=tmp_path / "t/f.md",
        tex=tmp_path / "t/f.tex",
        html=tmp_path / "t/f.html",
        runs=tmp_path / "t/runs.csv",
        plot=tmp_path / "p/f.png",
        ablation_csv=tmp_path / "t/a.csv",
    )
    evaluate_predictions(files + [str(tmp_path / "FiVE-bestepoch_0.parquet")], out, classes=["LUAD", "LUSC"], n_boot=0)
    csv = pd.read_csv(out.csv, keep_default_na=False).set_index(["method", "shots"])
    assert csv.loc[("FiVE-bestepoch", 0), "note"] == f"{NOTE} (epoch 3 of 5)"
    assert (csv.drop(index=("FiVE-bestepoch", 0))["note"] == "").all()
    for f in (out.md, out.tex, out.html):
        assert "FiVE-bestepoch" in f.read_text() and f"{NOTE} (epoch 3 of 5)" in f.read_text(), f.name
    assert "FiVE-bestepoch" not in out.ablation_csv.read_text()


def test_every_table_says_which_protocol_fives_rows_ran_under(tmp_path):
    """FiVE's rows carry the protocol label (authors' settings or fiveflow's, with the deviating keys)
    in the csv and a note under the md / tex / html tables; baselines are labelled as such."""
    import yaml

    from conftest import PROJECT_ROOT
    from fiveflow.protocol import deviations, protocol_label

    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    proto = {"label": protocol_label(cfg), "deviations": [s.key for s, _ in deviations(cfg)]}
    files = fake_predictions(tmp_path, methods=(("FiVE", [0, 1]), ("FiVE+histotype-noTFS", [1]), ("meanpool", [1])))
    out = SimpleNamespace(
        csv=tmp_path / "t/f.csv",
        md=tmp_path / "t/f.md",
        tex=tmp_path / "t/f.tex",
        html=tmp_path / "t/f.html",
        runs=tmp_path / "t/r.csv",
        plot=tmp_path / "p/f.png",
    )
    evaluate_predictions(files, out, classes=["LUAD", "LUSC"], n_boot=0, protocol=proto)
    table = pd.read_csv(out.csv, keep_default_na=False)
    labels = dict(zip(table["method"], table["protocol"]))
    assert labels == {"FiVE": proto["label"], "FiVE+histotype-noTFS": proto["label"], "meanpool": "baseline"}
    assert proto["label"].startswith("fiveflow (") and "model.cross_residual" in proto["deviations"]
    for path in (out.md, out.tex, out.html):
        text = Path(path).read_text()
        assert f"protocol {proto['label']}" in text and "model.cross_residual" in text.replace("\\_", "_")
    # the authors' settings: the note says so and names no key
    evaluate_predictions(
        files, out, classes=["LUAD", "LUSC"], n_boot=0, protocol={"label": "authors", "deviations": []}
    )
    assert "FiVE rows: protocol authors\n" in Path(out.md).read_text()


def test_predictions_missing_columns_or_bad_probabilities_are_one_line_errors(tmp_path, capsys):
    """A hand-made predictions file without `method`, or with prob outside [0, 1], is a user error naming
    the file (it used to end in KeyError: 'method' with a traceback)."""
    import numpy as np
    import pandas as pd

    from fiveflow.cli import main
    from fiveflow.evaluate.tables import load_predictions

    good = pd.DataFrame(
        {
            "method": "FiVE",
            "shots": np.int64(1),
            "run": np.arange(4, dtype=np.int64),
            "slide_id": list("abcd"),
            "patient_id": list("abcd"),
            "label": ["LUAD", "LUSC"] * 2,
            "prob": [0.1, 0.9, 0.2, 0.8],
            "pred": ["LUAD", "LUSC"] * 2,
        }
    )
    no_method = tmp_path / "no_method.parquet"
    good.drop(columns=["method"]).to_parquet(no_method)
    bad_prob = tmp_path / "bad_prob.parquet"
    good.assign(prob=[0.1, 1.7, 0.2, float("nan")]).to_parquet(bad_prob)
    with pytest.raises(ValueError, match=r"no_method\.parquet.*missing column\(s\) \['method'\]"):
        load_predictions([str(no_method)])
    with pytest.raises(ValueError, match=r"bad_prob\.parquet: row 1: `prob` is 1\.7.*2 such row"):
        load_predictions([str(bad_prob)])
    cfg = str(Path(__file__).resolve().parents[1] / "config.yaml")
    assert main(["evaluate", str(no_method), "--out", str(tmp_path / "out"), "--config", cfg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fiveflow evaluate: error: ") and "no_method.parquet" in err[0]
    assert not (tmp_path / "out").exists()
