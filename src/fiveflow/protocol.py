"""Where a run departs from FiVE as the authors ran it: one registry of every named flag.

Each :class:`Setting` is one config key, the value the authors' released code uses, and the
section of the method description (docs: FIVE_METHOD) it comes from. fiveflow's defaults
differ from the authors' where it says so in ``config.yaml``; ``config/presets/five_faithful.yaml``
sets every one of them to the authors' value (a test checks that the preset covers this list).

:func:`deviations` lists the settings of a config that are not the authors', and
:func:`protocol_label` turns that into the short label every FiVE row of the tables carries
(``authors`` or ``fiveflow (k deviations)``), so no reader takes a fiveflow row for the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    key: str  # dotted config path, e.g. "model.cross_residual"
    authors: Any  # the authors' value
    default: Any  # the value a config without the key behaves as (older configs, checkpoints)
    section: str  # where the method description states it
    what: str  # one line for tables and logs


_OPTIM = (
    # key, authors (pretrain), authors (finetune), default, section, what
    ("epochs", 100, 100, None, "4", "epochs"),
    ("lr", 3.0e-6, 3.0e-6, None, "4", "base learning rate (text side, prompts)"),
    ("aggregator_lr_mult", 10.0, 10.0, None, "4", "aggregator learning-rate multiplier"),
    ("weight_decay", 1.0e-3, 1.0e-3, None, "4", "AdamW weight decay"),
    ("warmup_epochs", 5, 5, None, "4", "warm-up epochs"),
    ("min_lr", 3.0e-8, 3.0e-8, None, "4", "cosine floor"),
    ("accumulate", 16, 16, None, "4", "slides per optimiser step (8 x 2 GPUs)"),
    ("instance_ratio", 1.0, 0.25, None, "3", "instance sampling ratio"),
    ("max_instances", 16384, 16384, None, "3", "instance cap (padding length)"),
    ("sampling", "integer_interval", "integer_interval", "segments", "3", "instance draw (N // M interval quirk)"),
    ("label_smoothing", 0.1, 0.1, 0.0, "4", "label smoothing (released checkpoint)"),
    ("lr_floor", "absolute", "absolute", "scaled", "4", "absolute lr floor for every group"),
    ("drop_last_group", True, True, False, "4", "incomplete accumulation groups discarded"),
    ("text_grad_candidates", 96, 96, 96, "4", "candidate texts with gradients per step (LoRA)"),
)

SETTINGS: tuple[Setting, ...] = (
    Setting("reports.name_histotype", False, False, "2", "descriptions do not name the histologic type"),
    Setting("model.dim", 512, None, "3", "width d"),
    Setting("model.heads", 8, None, "3", "attention heads"),
    Setting("model.n_prompts", 16, None, "3", "learnable prompts"),
    Setting("model.prompt_mode", "sequence", None, "3", "prompts as token sequences through the text encoder"),
    Setting("model.logit_scale", 300.0, None, "3", "fixed logit scale"),
    Setting("model.learn_logit_scale", False, None, "3", "logit scale not learnt"),
    Setting("model.position", "index", None, "3", "position = row index / N"),
    Setting("model.position_encoding", "sinusoid", "fourier", "3", "parameter-free sinusoid position encoding"),
    Setting("model.position_in_cross_keys", True, False, "3", "position added again to the cross-attention keys"),
    Setting("model.text_encoder", "emilyalsentzer/Bio_ClinicalBERT", None, "3", "text encoder"),
    Setting("model.text_max_tokens", 308, None, "3", "text context"),
    Setting("model.text_mask_padding", False, None, "3", "sentence mean includes padding"),
    Setting("model.text_lora_r", 8, 0, "3", "LoRA rank"),
    Setting("model.text_lora_alpha", 32, 32, "3", "LoRA alpha"),
    Setting("model.text_lora_dropout", 0.05, 0.05, "3", "LoRA dropout"),
    Setting(
        "model.text_lora_targets",
        ["query", "key", "value", "dense"],
        ["query", "key", "value", "dense"],
        "3",
        "LoRA target layers",
    ),
    Setting("model.pad_to_max_instances", True, False, "3", "every bag padded to max_instances"),
    Setting("model.attend_to_padding", True, False, "3", "pads attended as self-attention keys"),
    Setting("model.cross_residual", "none", "mlp", "3", "no residual in the cross-attention block"),
    Setting("model.feature_norm", "none", "none", "3", "raw patch features"),
    Setting("model.tfs", True, True, "3", "TFS cross-attention"),
    *(Setting(f"train.pretrain.{k}", a, d, s, f"pre-training: {w}") for k, a, _, d, s, w in _OPTIM),
    Setting("train.pretrain.symmetric_loss", False, False, "4", "pre-training: image->text loss only"),
    Setting("train.pretrain.merge_shuffled", False, False, "4", "pre-training: merge equal descriptions, then shuffle"),
    *(Setting(f"train.finetune.{k}", f, d, s, f"fine-tuning: {w}") for k, _, f, d, s, w in _OPTIM),
    Setting("train.finetune.faithful_empty_steps", True, False, "4", "fine-tuning: zero-loss steps kept"),
    Setting("train.zeroshot_epoch", "best_on_test", "final", "4", "zero-shot epoch chosen on the test set"),
)

_MISSING = object()


def get_key(cfg: Mapping, key: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``key`` of a nested config (``default`` when a level is missing)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-12 * max(abs(float(a)), abs(float(b)), 1.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def deviations(cfg: Mapping) -> list[tuple[Setting, Any]]:
    """``(setting, value)`` for every registry setting whose value in ``cfg`` is not the authors'.

    A key missing from ``cfg`` counts as its :attr:`Setting.default` (a setting with no default
    that is missing counts as a deviation, shown as ``None``)."""
    out = []
    for s in SETTINGS:
        value = get_key(cfg, s.key, s.default)
        if not _same(value, s.authors):
            out.append((s, value))
    return out


def protocol_label(cfg: Mapping) -> str:
    """``authors`` when every registry setting is the authors', else ``fiveflow (k deviations)``."""
    k = len(deviations(cfg))
    return "authors" if k == 0 else f"fiveflow ({k} deviation{'s' if k != 1 else ''})"


def describe_deviations(cfg: Mapping) -> list[str]:
    """One line per deviation: ``key = value (authors: x; section n)``."""
    return [f"{s.key} = {v!r} (authors: {s.authors!r}; FIVE_METHOD section {s.section})" for s, v in deviations(cfg)]


def table_protocol(cfg: Mapping) -> dict:
    """What the evaluation prints for FiVE's rows: ``{"label": protocol_label, "deviations": [keys]}``
    (the workflow's evaluate rule and ``fiveflow evaluate`` both pass it to ``evaluate_predictions``)."""
    return {"label": protocol_label(cfg), "deviations": [s.key for s, _ in deviations(cfg)]}
