"""train.zeroshot_epoch: best_on_test: zero-shot on the test split after every pre-training epoch, the
optimistic FiVE-bestepoch row (the epoch with the best test accuracy), resume after a kill, the workflow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fiveflow.evaluate.optimistic import SELECTION_KEY
from fiveflow.train.pretrain import EPOCH_EVAL_KEY, epoch_eval_path, pretrain, resume_path
from fiveflow.train.splits import make_split

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
NOTE = "epoch chosen on the test set: optimistic"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from synthetic_bags import make_synthetic_cohort

    out = tmp_path_factory.mktemp("bestepoch")
    coh = make_synthetic_cohort(out / "cohort", n_slides=12, dim=24, n_range=(20, 40), signal=3.0)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert cfg["train"]["zeroshot_epoch"] == "final"  # the default
    cfg["model"].update(dim=16, heads=2, n_prompts=2, text_max_tokens=48)
    cfg["train"]["device"] = "cpu"
    cfg["train"]["pretrain"].update(epochs=EPOCHS, warmup_epochs=1, accumulate=2)
    make_split(coh["samples"], 0.3, 0, out / "split.csv")
    return out, coh, cfg


def _run(cohort, name, **kw):
    out, coh, cfg = cohort
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / name, **kw)
    return torch.load(out / name, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(cohort):
    """(plain checkpoint, checkpoint pre-trained with the per-epoch test evaluation)."""
    return _run(cohort, "plain.pt"), _run(cohort, "each.pt", zeroshot_each_epoch=True)


def _same_weights(a, b):
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_per_epoch_zeroshot_leaves_training_unchanged_and_equals_the_zeroshot_rule(cohort, runs):
    from fiveflow.train.fewshot import run_zeroshot

    out, coh, cfg = cohort
    plain, each = runs
    _same_weights(plain, each)  # evaluating after every epoch does not perturb training
    assert plain["extra"]["summary"]["epoch_loss"] == each["extra"]["summary"]["epoch_loss"]
    assert EPOCH_EVAL_KEY not in plain["extra"]
    assert plain["extra"]["config_sha256"] != each["extra"]["config_sha256"]
    ev = each["extra"][EPOCH_EVAL_KEY]
    assert ev["epochs"] == list(range(1, EPOCHS + 1)) and len(ev["prob"]) == EPOCHS
    split = pd.read_csv(out / "split.csv", dtype=str)
    test = split[split["split"] == "test"]
    assert ev["slide_ids"] == test["slide_id"].tolist() and all(len(p) == len(test) for p in ev["prob"])
    # the last epoch's test probabilities are exactly the zero-shot rule's (same model, same evaluation)
    zs = run_zeroshot(out / "each.pt", out / "split.csv", coh["bag_paths"], cfg, None)
    np.testing.assert_allclose(ev["prob"][-1], zs["prob"].to_numpy(), rtol=0, atol=1e-12)
    assert not epoch_eval_path(out / "each.pt").exists() and not resume_path(out / "each.pt").exists()


def test_bestepoch_row_is_the_argmax_accuracy_epoch_and_is_labelled(cohort, runs, tmp_path):
    from fiveflow.evaluate.metrics import compute_metrics
    from fiveflow.evaluate.tables import evaluate_predictions
    from fiveflow.train.fewshot import run_zeroshot, run_zeroshot_bestepoch

    out, coh, cfg = cohort
    _, each = runs
    split = pd.read_csv(out / "split.csv", dtype=str)
    test = split[split["split"] == "test"].reset_index(drop=True)
    y = (test["label"] == cfg["classes"][1]["name"]).to_numpy()
    # crafted per-epoch probabilities: epoch 1 all wrong, 2 and 3 all right (a tie: the earlier wins), 4 half
    right, wrong = np.where(y, 0.9, 0.1), np.where(y, 0.1, 0.9)
    half = np.where(np.arange(len(y)) % 2 == 0, right, wrong)
    crafted = dict(
        each,
        extra={
            **each["extra"],
            EPOCH_EVAL_KEY: {
                **each["extra"][EPOCH_EVAL_KEY],
                "prob": [wrong.tolist(), right.tolist(), (right * 0.99).tolist(), half.tolist()],
            },
        },
    )
    torch.save(crafted, tmp_path / "crafted.pt")
    pred = run_zeroshot_bestepoch(
        tmp_path / "crafted.pt", out / "split.csv", cfg, tmp_path / "FiVE-bestepoch_0.parquet"
    )
    assert set(pred["method"]) == {"FiVE-bestepoch"} and set(pred["shots"]) == {0} and set(pred["run"]) == {0}
    np.testing.assert_array_equal(pred["prob"].to_numpy(), right)
    import pyarrow.parquet as pq

    sel = json.loads(pq.read_schema(tmp_path / "FiVE-bestepoch_0.parquet").metadata[SELECTION_KEY.encode()])
    assert (sel["epoch"], sel["n_epochs"], sel["accuracy"]) == (2, EPOCHS, [0.0, 1.0, 1.0, 0.5])
    # on the real checkpoint: the epoch whose predictions have the best accuracy (compute_metrics), the first of ties
    real = run_zeroshot_bestepoch(out / "each.pt", out / "split.csv", cfg, tmp_path / "real.parquet")
    accs = [compute_metrics(y, np.asarray(p))["acc"] for p in each["extra"][EPOCH_EVAL_KEY]["prob"]]
    best = int(np.argmax(accs))
    np.testing.assert_array_equal(real["prob"].to_numpy(), each["extra"][EPOCH_EVAL_KEY]["prob"][best])
    # the tables label the row optimistic, with the chosen epoch, beside the honest final-epoch FiVE row
    run_zeroshot(out / "each.pt", out / "split.csv", coh["bag_paths"], cfg, tmp_path / "FiVE_0.parquet")
    t = tmp_path / "t"
    o = SimpleNamespace(
        csv=t / "f.csv", md=t / "f.md", tex=t / "f.tex", html=t / "f.html", runs=t / "r.csv", plot=t / "f.png"
    )
    evaluate_predictions(
        [str(tmp_path / "FiVE_0.parquet"), str(tmp_path / "FiVE-bestepoch_0.parquet")],
        o,
        classes=[c["name"] for c in cfg["classes"]],
        n_boot=0,
    )
    csv = pd.read_csv(o.csv, keep_default_na=False).set_index("method")
    assert csv.loc["FiVE-bestepoch", "note"] == f"{NOTE} (epoch 2 of {EPOCHS})" and csv.loc["FiVE", "note"] == ""
    assert csv.loc["FiVE-bestepoch", "acc_mean"] == 1.0
    md = o.md.read_text()
    assert "| FiVE-bestepoch † |" in md and f"† FiVE-bestepoch: {NOTE} (epoch 2 of {EPOCHS})" in md
    assert "**" not in md.split("| FiVE-bestepoch † |")[1].splitlines()[0]  # never bold
    # a checkpoint pre-trained without the evaluation: a clear error naming the setting
    with pytest.raises(ValueError, match="zeroshot_epoch: best_on_test"):
        run_zeroshot_bestepoch(out / "plain.pt", out / "split.csv", cfg, None)


class _Killed(Exception):
    pass


def test_per_epoch_results_survive_a_kill_and_resume(cohort, runs):
    out, coh, cfg = cohort
    _, each = runs

    def stop_at(k):
        def stop(epoch):  # runs before the evaluation of its epoch: killed between the state save and it
            if epoch == k:
                raise _Killed

        return stop

    ckpt = out / "cut.pt"
    with pytest.raises(_Killed):
        pretrain(
            out / "split.csv",
            coh["labels_parquet"],
            coh["bag_paths"],
            cfg,
            ckpt,
            zeroshot_each_epoch=True,
            on_epoch=stop_at(2),
        )
    side = epoch_eval_path(ckpt)
    assert torch.load(resume_path(ckpt), weights_only=False)["epoch"] == 2
    assert sorted(yaml.safe_load(side.read_text())["prob"]) == ["1"]  # epoch 2 never evaluated
    cut = _run(cohort, "cut.pt", zeroshot_each_epoch=True, log=out / "cut.log")
    log = (out / "cut.log").read_text()
    assert "resumed after epoch 2/4" in log and "after epoch 2 (resumed state)" in log  # caught up from the state
    _same_weights(each, cut)
    assert cut["extra"][EPOCH_EVAL_KEY] == each["extra"][EPOCH_EVAL_KEY]
    assert not side.exists() and not resume_path(ckpt).exists()
    # the side file lost: training cannot resume without the earlier epochs' results, so it starts over
    with pytest.raises(_Killed):
        pretrain(
            out / "split.csv",
            coh["labels_parquet"],
            coh["bag_paths"],
            cfg,
            out / "lost.pt",
            zeroshot_each_epoch=True,
            on_epoch=stop_at(3),
        )
    epoch_eval_path(out / "lost.pt").unlink()
    lost = _run(cohort, "lost.pt", zeroshot_each_epoch=True, log=out / "lost.log")
    assert "training starts over" in (out / "lost.log").read_text()
    _same_weights(each, lost)
    assert lost["extra"][EPOCH_EVAL_KEY] == each["extra"][EPOCH_EVAL_KEY]


def _dry_run_jobs(tmp_path, *configfiles) -> str:
    cmd = ["bash", "tools/snakemake.sh", "-n", "--quiet", "rules"]
    if configfiles:
        cmd += ["--configfile", "config.yaml", *map(str, configfiles)]
    r = subprocess.run(
        cmd + ["--config", f"results_dir={tmp_path}/results"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_workflow_plans_the_bestepoch_row_only_when_asked(tmp_path):
    from conftest import job_stats

    default = job_stats(_dry_run_jobs(tmp_path))
    assert "zeroshot_bestepoch" not in default and default["zeroshot"] >= 1
    overlay = tmp_path / "best.yaml"
    overlay.write_text("train:\n  zeroshot_epoch: best_on_test\n")
    best = job_stats(_dry_run_jobs(tmp_path, overlay))
    assert best["zeroshot_bestepoch"] == 1
    assert {k: v for k, v in best.items() if k not in ("zeroshot_bestepoch", "total")} == {
        k: v for k, v in default.items() if k != "total"
    }
