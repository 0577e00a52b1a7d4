"""Paired differences (issue 18): FiVE minus each method on the same draws and test slides, with a paired
bootstrap CI, checked against a direct computation (slides repeated per resample, sklearn metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from fiveflow.evaluate.metrics import bootstrap_counts
from fiveflow.evaluate.paired import diff_text, paired_differences, paired_grid


def _preds(rng, method, shots, runs, slides, labels, skill):
    rows = []
    for r in runs:
        noise = rng.normal(0, 0.35, len(slides))
        score = np.where(labels == "LUSC", skill, -skill) + noise
        prob = 1 / (1 + np.exp(-score))
        rows += [
            {
                "method": method,
                "shots": shots,
                "run": r,
                "slide_id": s,
                "patient_id": f"P{s}",
                "label": lab,
                "prob": p,
                "pred": "LUSC" if p >= 0.5 else "LUAD",
            }
            for s, lab, p in zip(slides, labels, prob)
        ]
    return rows


@pytest.fixture
def pred():
    rng = np.random.default_rng(3)
    slides = np.array([f"S{i:02d}" for i in range(24)])
    labels = np.array(["LUAD"] * 13 + ["LUSC"] * 11)
    rows = []
    for shots in (1, 4):
        rows += _preds(rng, "FiVE", shots, range(5), slides, labels, 0.6 if shots == 1 else 1.2)
        rows += _preds(rng, "abmil", shots, range(5), slides, labels, 0.2)
        rows += _preds(rng, "FiVE-bestepoch", shots, range(5), slides, labels, 2.0)  # optimistic: never compared
    rows += _preds(rng, "FiVE", 0, [0], slides, labels, 0.5) + _preds(rng, "MI-Zero", 0, [0], slides, labels, 0.3)
    return pd.DataFrame(rows)


def _direct(pred, ref, method, shots, metric, n_boot, seed):
    """Each resample: the common test slides repeated by their bootstrap counts, the metric by sklearn for every
    common run of both methods, the run differences averaged; then the percentile interval."""
    a = pred[(pred.method == ref) & (pred.shots == shots)]
    b = pred[(pred.method == method) & (pred.shots == shots)]
    runs = sorted(set(a.run) & set(b.run))
    slides = np.array(sorted(set(a.slide_id) & set(b.slide_id)))
    y = a.drop_duplicates("slide_id").set_index("slide_id").loc[slides, "label"].eq("LUSC").to_numpy()
    counts = np.vstack([np.ones(len(slides), int), bootstrap_counts(y, n_boot, seed)])
    fn = {"acc": lambda yy, pp: accuracy_score(yy, pp >= 0.5), "auc": roc_auc_score}[metric]
    avgs = []
    for w in counts:
        d = []
        for r in runs:
            vals = []
            for g in (a, b):
                g = g[g.run == r].set_index("slide_id").loc[slides]
                yy = np.repeat(g["label"].eq("LUSC").to_numpy(), w)
                pp = np.repeat(g["prob"].to_numpy(), w)
                vals.append(fn(yy, pp))
            d.append(vals[0] - vals[1])
        avgs.append(np.mean(d))
    avgs = np.array(avgs)
    return avgs[0], np.percentile(avgs[1:], 2.5), np.percentile(avgs[1:], 97.5)


@pytest.mark.parametrize("metric", ["acc", "auc"])
def test_paired_differences_match_a_direct_computation(pred, metric):
    got = paired_differences(pred, classes=["LUAD", "LUSC"], n_boot=200, seed=7)
    assert set(zip(got.method, got.shots)) == {("abmil", 1), ("abmil", 4), ("MI-Zero", 0)}  # no optimistic row
    assert got["reference"].eq("FiVE").all()
    for _, row in got[got.metric == metric].iterrows():
        diff, lo, hi = _direct(pred, "FiVE", row.method, row.shots, metric, 200, 7)
        assert row["diff"] == pytest.approx(diff, abs=1e-12)
        assert (row.ci_low, row.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
        assert row.significant == (lo > 0 or hi < 0)
        assert row.n_runs == (1 if row.shots == 0 else 5) and row.n_slides == 24


def test_the_point_estimate_is_the_difference_of_the_run_means(pred):
    got = paired_differences(pred, classes=["LUAD", "LUSC"], n_boot=0)
    acc = lambda g: (g.prob.ge(0.5) == g.label.eq("LUSC")).groupby(g.run).mean().mean()  # noqa: E731
    for shots in (1, 4):
        want = acc(pred[(pred.method == "FiVE") & (pred.shots == shots)]) - acc(
            pred[(pred.method == "abmil") & (pred.shots == shots)]
        )
        row = got[(got.method == "abmil") & (got.shots == shots) & (got.metric == "acc")].iloc[0]
        assert row["diff"] == pytest.approx(want) and pd.isna(row.ci_low) and not row.significant


def test_identical_methods_differ_by_zero_and_a_clear_gap_is_marked(pred):
    twin = pred[pred.method == "FiVE"].assign(method="twin")
    got = paired_differences(pd.concat([pred, twin]), classes=["LUAD", "LUSC"], n_boot=300)
    t = got[(got.method == "twin") & (got.metric == "acc")]
    assert (t["diff"] == 0).all() and (t.ci_low == 0).all() and (t.ci_high == 0).all() and not t.significant.any()
    gap = got[(got.method == "abmil") & (got.shots == 4) & (got.metric == "acc")].iloc[0]
    assert gap["diff"] > 0.2 and gap.ci_low > 0 and gap.significant
    assert diff_text(gap).endswith("*") and diff_text(gap).startswith("+")


def test_only_common_runs_and_test_slides_are_paired(pred):
    other = pred[(pred.method == "abmil") & (pred.shots == 4) & (pred.run < 3) & (pred.slide_id != "S00")]
    base = pred[(pred.method == "FiVE") & (pred.shots == 4)]
    got = paired_differences(pd.concat([base, other]), classes=["LUAD", "LUSC"], n_boot=50, seed=1)
    row = got[got.metric == "acc"].iloc[0]
    assert (row.n_runs, row.n_slides) == (3, 23)
    diff, lo, hi = _direct(pd.concat([base, other]), "FiVE", "abmil", 4, "acc", 50, 1)
    assert (row["diff"], row.ci_low, row.ci_high) == (pytest.approx(diff), pytest.approx(lo), pytest.approx(hi))


def test_grid_rows_name_the_pair_and_fall_back_to_fiVE_histotype(pred):
    got = paired_differences(pred.replace({"method": {"FiVE": "FiVE+histotype"}}), classes=["LUAD", "LUSC"], n_boot=20)
    shots, rows = paired_grid(got, "acc")
    assert shots == [0, 1, 4]
    assert [name for name, _ in rows] == ["FiVE+histotype − abmil", "FiVE+histotype − MI-Zero"]
    assert rows[0][1][0] == "-" and rows[1][1][1:] == ["-", "-"]  # abmil has no zero-shot row; MI-Zero only that


def test_evaluate_writes_paired_csv_and_shows_the_differences_in_every_table(pred, tmp_path):
    from types import SimpleNamespace

    from fiveflow.evaluate.tables import evaluate_predictions

    files = []
    for (m, s), g in pred.groupby(["method", "shots"]):
        f = tmp_path / f"{m}_{s}.parquet"
        g.to_parquet(f)
        files.append(str(f))
    out = SimpleNamespace(
        **{k: tmp_path / "t" / f"f.{k}" for k in ("csv", "md", "tex", "html", "paired")},
        runs=tmp_path / "t" / "runs.csv",
        plot=tmp_path / "t" / "p.png",
    )
    evaluate_predictions(files, out, classes=["LUAD", "LUSC"], n_boot=100, seed=2)
    got = pd.read_csv(out.paired)
    want = paired_differences(pred, classes=["LUAD", "LUSC"], n_boot=100, seed=2)
    assert len(got) == len(want) == 6
    assert np.allclose(got[["diff", "ci_low", "ci_high"]], want[["diff", "ci_low", "ci_high"]], atol=1e-4)
    row = want[(want.method == "abmil") & (want.shots == 4) & (want.metric == "acc")].iloc[0]
    cell = diff_text(row)
    assert cell.endswith("*")  # FiVE's clear gap at 4 shots
    md, tex, html = (out.md.read_text(), out.tex.read_text(), out.html.read_text())
    assert "| Paired difference (accuracy, percentage points, paired 95% CI) |" in md
    assert "| FiVE − abmil | - | " in md and cell in md and "the CI excludes 0" in md
    assert "FiVE $-$ abmil" in tex and cell.replace("*", "$^*$") in tex and r"95\% CI" in tex
    assert "FiVE − abmil" in html and f"<b>{cell}</b>" in html
    assert "FiVE-bestepoch" not in set(got["method"])


def test_benchmark_result_line_reads_the_tables_it_names(pred, tmp_path):
    """benchmarks/bench_methods.py's RESULT numbers come from the run's own tables: FiVE's and the best
    baseline's mean accuracy, the paired CI of FiVE minus that baseline, FiVE minus FiVE-classtexts, and
    the best 1-shot accuracy of any method."""
    import importlib.util

    from conftest import PROJECT_ROOT
    from fiveflow.evaluate.metrics import summarize

    spec = importlib.util.spec_from_file_location("bench_methods", PROJECT_ROOT / "benchmarks" / "bench_methods.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(5)
    slides = np.array([f"S{i:02d}" for i in range(24)])
    labels = np.array(["LUAD"] * 13 + ["LUSC"] * 11)
    extra = pd.DataFrame(
        _preds(rng, "meanpool", 4, range(5), slides, labels, 1.5)
        + _preds(rng, "FiVE-classtexts", 4, range(5), slides, labels, 0.9)
        + _preds(rng, "meanpool", 1, range(5), slides, labels, 3.0)
    )
    allp = pd.concat([pred, extra])
    summarize(allp, ["LUAD", "LUSC"], n_boot=50).to_csv(tmp_path / "fewshot.csv", index=False)
    paired = paired_differences(allp, classes=["LUAD", "LUSC"], n_boot=50)
    paired.to_csv(tmp_path / "paired.csv", index=False)
    res = bench.summarise(tmp_path, shots=4)
    acc = lambda m, s: allp[(allp.method == m) & (allp.shots == s)].pipe(  # noqa: E731
        lambda g: (g.prob.ge(0.5) == g.label.eq("LUSC")).groupby(g.run).mean().mean()
    )
    best = max(("abmil", "meanpool"), key=lambda m: acc(m, 4))
    assert res["five_acc"] == pytest.approx(acc("FiVE", 4), abs=1e-4)
    assert res["best_baseline"] == best and res["best_baseline_acc"] == pytest.approx(acc(best, 4), abs=1e-4)
    row = paired[(paired.method == best) & (paired.shots == 4) & (paired.metric == "acc")].iloc[0]
    assert (res["ci_low"], res["ci_high"]) == (row.ci_low, row.ci_high)
    gap = paired[(paired.method == "FiVE-classtexts") & (paired.shots == 4) & (paired.metric == "acc")].iloc[0]
    assert res["ablation_gap"] == pytest.approx(acc("FiVE", 4) - acc("FiVE-classtexts", 4)) == gap["diff"]
    one = {m: acc(m, 1) for m in ("FiVE", "abmil", "meanpool")}  # not the optimistic FiVE-bestepoch (2.0 skill)
    assert res["max_acc_1"] == pytest.approx(max(one.values()), abs=1e-4)
    assert res["max_acc_1_method"] == max(one, key=one.get)
    md = bench.ci_table(tmp_path).splitlines()
    five = next(line for line in md if line.startswith("| FiVE |"))
    assert f"{100 * acc('FiVE', 4):.1f} [" in five and "FiVE-bestepoch" not in "\n".join(md)
    paired_rows = md[md.index("") + 3 :]  # after the blank line and the second table's header
    gap_line = next(line for line in paired_rows if line.startswith("| FiVE-classtexts |"))
    cell = f"{100 * gap['diff']:+.1f} [{100 * gap.ci_low:+.1f}, {100 * gap.ci_high:+.1f}]"
    assert gap_line.split(" | ")[3].startswith(cell)  # columns: method, 0, 1, 4 shots
