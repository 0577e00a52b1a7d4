"""The settings layer: every optional config key's default lives in the schema, validation fills it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from fiveflow import settings
from fiveflow.config import validate_config
from fiveflow.layout import EvaluateOutputs, Layout

ROOT = Path(__file__).resolve().parents[1]


def _config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _drop_optional(cfg: dict, schema: dict, node: dict) -> list[str]:
    """Remove every key of ``cfg`` that has a schema default; return their dotted names."""
    dropped = []

    def walk(values, sub, path):
        sub = settings.resolve_ref(schema, sub)
        if not isinstance(values, dict):
            return
        for key, prop in sub.get("properties", {}).items():
            prop_r = settings.resolve_ref(schema, prop)
            if key not in values:
                continue
            if "default" in prop_r and prop_r.get("type") != "object":
                del values[key]
                dropped.append(".".join((*path, key)))
            else:
                walk(values[key], prop_r, (*path, key))

    walk(cfg, node, ())
    return dropped


def test_validation_fills_every_dropped_default_with_the_schema_value():
    schema = settings.load_schema()
    full = _config()
    validate_config(copy.deepcopy(full), root=ROOT)
    cfg = copy.deepcopy(full)
    dropped = _drop_optional(cfg, schema, schema)
    assert len(dropped) >= 40 and "model.tfs" in dropped and "train.pretrain.sampling" in dropped
    validate_config(cfg, root=ROOT)
    for key in dropped:
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == settings.default(key), key


def test_absent_sections_are_created_and_present_values_kept():
    cfg = _config()
    for section in ("evaluate", "heatmaps", "mizero"):
        del cfg[section]
    cfg["model"].pop("tfs")
    cfg["embedding"]["shard_size"] = 4
    validate_config(cfg, root=ROOT)
    assert cfg["evaluate"] == {"n_boot": 1000, "boot_seed": 0}
    assert cfg["heatmaps"]["alpha"] == 0.5 and cfg["heatmaps"]["shots"] is None
    assert cfg["mizero"]["enabled"] == "auto"
    assert cfg["model"]["tfs"] is True and cfg["embedding"]["shard_size"] == 4
    # an optional section without a default stays absent (its presence means something: backend openai)
    cfg = _config()
    del cfg["reports"]["openai"]
    validate_config(cfg, root=ROOT)
    assert "openai" not in cfg["reports"]


def test_with_defaults_and_default_read_the_schema():
    assert settings.with_defaults(None, "train.finetune")["lr_floor"] == "scaled"
    assert settings.with_defaults({"lr_floor": "absolute"}, "train.pretrain")["lr_floor"] == "absolute"
    assert settings.default("reports.openai.model") == "gpt-4"
    assert settings.defaults("tiling.mask")["reject_pen"] == ["green", "blue", "black"]
    with pytest.raises(KeyError, match="no config section"):
        settings.defaults("nope")
    with pytest.raises(KeyError, match="has no default"):
        settings.default("model.dim")
    # the copies handed out are fresh: changing one does not change the schema's
    settings.defaults("tiling.mask")["reject_pen"].append("red")
    assert settings.defaults("tiling.mask")["reject_pen"] == ["green", "blue", "black"]


def test_workflow_rules_read_resolved_config_without_get_defaults():
    """No `config[...].get(key, default)` in the rules: defaults come from the schema, filled at validation."""
    pattern = re.compile(r"config(?:\[[^\]]+\])*\.get\(\s*[\"'][\w-]+[\"']\s*,")
    hits = [
        f"{p.name}: {line.strip()}"
        for p in sorted((ROOT / "workflow").rglob("*"))
        if p.suffix in (".smk", ".py") or p.name == "Snakefile"
        for line in p.read_text().splitlines()
        if pattern.search(line)
    ]
    assert not hits, hits


def test_layout_paths_and_evaluate_outputs():
    lay = Layout("out/")
    assert lay.coords("{slide}") == "out/coords/{slide}.parquet"
    assert lay.bag("uni", "S1") == "out/features/uni/S1.h5"
    assert lay.predictions("FiVE", 0) == "out/predictions/FiVE_0.parquet"
    files = lay.evaluate.files()
    assert len(files) == 13 and files["ablation_tex"] == "out/tables/ablation.tex"
    ev = lay.evaluate
    assert EvaluateOutputs.of(ev) is ev

    class Partial:
        csv, md, tex, runs = "a.csv", "a.md", "a.tex", "r.csv"

    with pytest.raises(ValueError, match="`plot` is missing"):
        EvaluateOutputs.of(Partial())
