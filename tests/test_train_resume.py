"""Training resumes after a kill from its last per-epoch state, with results identical to an
uninterrupted run (CPU, fixed seed); a state written for other settings is ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fiveflow.train.pretrain import pretrain, resume_path
from fiveflow.train.splits import make_fewshot_draws, make_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from synthetic_bags import make_synthetic_cohort

    out = tmp_path_factory.mktemp("resume")
    coh = make_synthetic_cohort(out / "cohort", n_slides=12, dim=24, n_range=(20, 40), signal=3.0)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["model"].update(dim=16, heads=2, n_prompts=2, text_max_tokens=48)
    cfg["train"]["device"] = "cpu"
    cfg["train"]["pretrain"].update(epochs=5, warmup_epochs=1, accumulate=2)
    cfg["train"]["finetune"].update(epochs=3, warmup_epochs=1)
    make_split(coh["samples"], 0.3, 0, out / "split.csv")
    make_fewshot_draws(pd.read_csv(out / "split.csv", dtype=str), [2], 2, 0, out / "draws.csv")
    return out, coh, cfg


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_checkpoint(a: Path, b: Path) -> None:
    pa, pb = _state(a), _state(b)
    assert pa["state_dict"].keys() == pb["state_dict"].keys()
    for k in pa["state_dict"]:
        assert torch.equal(pa["state_dict"][k], pb["state_dict"][k]), k
    sa, sb = pa["extra"]["summary"], pb["extra"]["summary"]
    for k in ("epoch_loss", "n_updates", "n_forward", "n_empty"):
        assert sa[k] == sb[k], k
    assert pa["extra"]["config_sha256"] == pb["extra"]["config_sha256"]


def _metrics(out: Path, coh: dict, cfg: dict, ckpt: Path, tag: str) -> pd.DataFrame:
    from fiveflow.train.fewshot import run_fewshot, run_zeroshot

    zs = run_zeroshot(ckpt, out / "split.csv", coh["bag_paths"], cfg, out / f"zs_{tag}.parquet")
    fs = run_fewshot(ckpt, out / "split.csv", out / "draws.csv", coh["bag_paths"], cfg, 2, out / f"fs_{tag}.parquet")
    return pd.concat([zs, fs], ignore_index=True)


@pytest.fixture(scope="module")
def uninterrupted(cohort):
    out, coh, cfg = cohort
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "full.pt")
    assert not resume_path(out / "full.pt").exists()  # the state file goes once the model is saved
    return out / "full.pt", _metrics(out, coh, cfg, out / "full.pt", "full")


class _Killed(Exception):
    pass


def test_interrupted_in_process_resumes_identically(cohort, uninterrupted):
    out, coh, cfg = cohort
    full_ckpt, full_metrics = uninterrupted

    def stop_after_2(epoch):
        if epoch == 2:
            raise _Killed

    with pytest.raises(_Killed):
        pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "cut.pt", on_epoch=stop_after_2)
    assert resume_path(out / "cut.pt").is_file() and not (out / "cut.pt").exists()
    assert _state(resume_path(out / "cut.pt"))["epoch"] == 2
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "cut.pt", log=out / "cut.log")
    assert "resumed after epoch 2/5" in (out / "cut.log").read_text()
    _same_checkpoint(full_ckpt, out / "cut.pt")
    pd.testing.assert_frame_equal(full_metrics, _metrics(out, coh, cfg, out / "cut.pt", "cut"))


def test_sigkill_then_rerun_gives_the_same_metrics(cohort, uninterrupted):
    """A real SIGKILL of the training process mid-run, then a rerun of the same command."""
    out, coh, cfg = cohort
    full_ckpt, full_metrics = uninterrupted
    (out / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = out / "killed.pt"
    script = textwrap.dedent(f"""
        import time, yaml
        from fiveflow.train.pretrain import pretrain
        cfg = yaml.safe_load(open({str(out / "cfg.yaml")!r}))
        bags = {dict(coh["bag_paths"])!r}
        pretrain({str(out / "split.csv")!r}, {str(coh["labels_parquet"])!r}, bags, cfg, {str(ckpt)!r},
                 on_epoch=lambda e: time.sleep(30))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    state = resume_path(ckpt)
    try:
        deadline = time.monotonic() + 240
        while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.is_file(), "the training process never saved a state"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not ckpt.exists()
    assert _state(state)["epoch"] == 1
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, ckpt)
    assert not state.exists()
    _same_checkpoint(full_ckpt, ckpt)
    pd.testing.assert_frame_equal(full_metrics, _metrics(out, coh, cfg, ckpt, "killed"))


def test_state_from_other_settings_is_ignored(cohort, uninterrupted):
    out, coh, cfg = cohort
    full_ckpt, _ = uninterrupted
    other = yaml.safe_load(yaml.safe_dump(cfg))
    other["train"]["pretrain"]["lr"] = 1e-3

    def stop(epoch):
        raise _Killed

    with pytest.raises(_Killed):
        pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], other, out / "mixed.pt", on_epoch=stop)
    assert resume_path(out / "mixed.pt").is_file()
    # same output path, the original settings: the stale state must not leak in
    pretrain(out / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, out / "mixed.pt", log=out / "mixed.log")
    assert "ignoring training state" in (out / "mixed.log").read_text()
    _same_checkpoint(full_ckpt, out / "mixed.pt")
    assert not resume_path(out / "mixed.pt").exists()


def test_finetune_draw_resumes_identically(cohort, uninterrupted):
    """The fine-tuning loop of a few-shot draw resumes the same way (fit-level state)."""
    from fiveflow.model import load_checkpoint
    from fiveflow.train.data import BagStore
    from fiveflow.train.loop import fit, fit_key

    out, coh, cfg = cohort
    full_ckpt, _ = uninterrupted
    texts = [c["text"] for c in cfg["classes"]]
    items = [(s, i % 2) for i, s in enumerate(sorted(coh["bag_paths"])[:4])]
    store = BagStore(coh["bag_paths"])
    ft = cfg["train"]["finetune"]
    key = fit_key(items=items, ft=ft)
    ref, _ = load_checkpoint(full_ckpt)
    s_ref = fit(ref, store, items, texts, ft, seed=5)
    cut, _ = load_checkpoint(full_ckpt)
    state = out / ".ft.resume"

    def stop(epoch):
        raise _Killed

    with pytest.raises(_Killed):
        fit(cut, store, items, texts, ft, seed=5, resume=state, run_key=key, on_epoch=stop)
    resumed, _ = load_checkpoint(full_ckpt)
    s_res = fit(resumed, store, items, texts, ft, seed=5, resume=state, run_key=key)
    assert s_res["epoch_loss"] == s_ref["epoch_loss"]
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
