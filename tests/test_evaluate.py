from types import SimpleNamespace

import numpy as np
import pandas as pd

from fiveflow.evaluate.report import evaluate_predictions, to_latex, to_markdown


def fake_predictions(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for method, shots_list in (("FiVE", [0, 1, 4]), ("meanpool", [1, 4])):
        for shots in shots_list:
            rows = []
            for run in range(1 if shots == 0 else 3):
                for i in range(20):
                    label = "LUSC" if i % 2 else "LUAD"
                    p = float(np.clip((0.8 if label == "LUSC" else 0.2) + rng.normal(0, 0.25), 0, 1))
                    rows.append(dict(method=method, shots=shots, run=run, slide_id=f"s{i}", patient_id=f"p{i}",
                                     label=label, prob=p, pred="LUSC" if p >= 0.5 else "LUAD"))
            f = tmp_path / f"{method}_{shots}.parquet"
            pd.DataFrame(rows).to_parquet(f)
            files.append(str(f))
    return files


def test_tables_and_plot(tmp_path):
    files = fake_predictions(tmp_path)
    out = SimpleNamespace(csv=tmp_path / "t/f.csv", md=tmp_path / "t/f.md", tex=tmp_path / "t/f.tex",
                          runs=tmp_path / "t/runs.csv", plot=tmp_path / "p/f.png")
    table = evaluate_predictions(files, out, classes=["LUAD", "LUSC"])
    csv = pd.read_csv(out.csv)
    assert list(csv.columns[:9]) == ["method", "shots", "n_runs", "acc_mean", "acc_std", "auc_mean", "auc_std",
                                     "f1_mean", "f1_std"]
    assert len(csv) == 5 and csv.loc[csv["shots"] == 0, "n_runs"].item() == 1
    assert (csv["acc_mean"] > 0.6).all()
    runs = pd.read_csv(out.runs)
    assert len(runs) == 1 + 3 + 3 + 3 + 3
    # the table's mean is the mean of per-run metrics
    g = runs[(runs.method == "FiVE") & (runs.shots == 4)]
    assert np.isclose(g["acc"].mean(), table.loc[(table.method == "FiVE") & (table.shots == 4), "acc_mean"].item())
    md = out.md.read_text()
    assert md.count("\n") == 2 + 5 and "±" in md
    assert "\\toprule" in out.tex.read_text()
    assert out.plot.read_bytes()[:4] == b"\x89PNG"


def test_renderers_handle_nan():
    t = pd.DataFrame([dict(method="m", shots=1, n_runs=1, acc_mean=0.5, acc_std=float("nan"), auc_mean=float("nan"),
                           auc_std=float("nan"), f1_mean=0.5, f1_std=0.0)])
    assert "n/a" in to_markdown(t) and "n/a" in to_latex(t)
