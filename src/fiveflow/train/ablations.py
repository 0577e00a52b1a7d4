"""FiVE ablations: extra FiVE rows trained like FiVE with one thing changed (``ablations`` in the config).

- ``class_texts`` -> ``FiVE-classtexts``: pre-training on each slide's class text instead of its
  fine-grained report description (FiVE without fine-grained pre-training).
- ``no_tfs`` -> ``FiVE-noTFS``: the TFS cross-attention branch is removed (``model.tfs: false``):
  the slide embedding is the self-attended instances' mean only, no prompt bank; pre-training,
  zero-shot and fine-tuning all use that model.
- ``ratio_<r>`` (e.g. ``ratio_0.25``) -> ``FiVE-ratio0.25``: pre-training samples ``r x N``
  instances per bag instead of ``train.pretrain.instance_ratio`` (zero-shot evaluates with the
  same ratio); fine-tuning keeps ``train.finetune``.

With ``reports.name_histotype: true`` (descriptions that name the histologic type: an extension that
puts the class label into pre-training), FiVE is named ``FiVE+histotype`` (:func:`five_method`) and
so are the ablations pre-trained on those descriptions (``FiVE+histotype-noTFS``, ...), so no table
row of that kind reads as FiVE; ``FiVE-classtexts`` uses no descriptions and keeps its name.

Each ablation has its own checkpoint ``models/pretrain_{name}.pt`` and prediction files
``predictions/{method}_{shots}.parquet``; the evaluation stage puts them in ``tables/ablation.*``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from ..settings import with_defaults

_RATIO = re.compile(r"^ratio_(\d+(?:\.\d+)?)$")
FIXED = {"class_texts": "FiVE-classtexts", "no_tfs": "FiVE-noTFS"}
BASE = "FiVE"
#: method-name marker of FiVE pre-trained on descriptions that name the histologic type
HISTOTYPE = "+histotype"
SCHEMA_PATTERN = r"^(class_texts|no_tfs|ratio_\d+(\.\d+)?)$"


@dataclass(frozen=True)
class Ablation:
    name: str
    method: str
    targets: str = "descriptions"  # pre-training targets: descriptions | class_texts
    model: tuple = ()  # (key, value) overrides of the `model` section
    pretrain: tuple = ()  # (key, value) overrides of `train.pretrain`


def five_method(cfg: dict | None = None) -> str:
    """FiVE's method name under ``cfg``: ``FiVE``, or ``FiVE+histotype`` when ``reports.name_histotype``
    is on (the descriptions then name the diagnosis: not the authors' FiVE)."""
    named = bool(with_defaults((cfg or {}).get("reports"), "reports")["name_histotype"])
    return BASE + (HISTOTYPE if named else "")


def is_five(method: str) -> bool:
    """Whether ``method`` is FiVE or one of its variants (ablations, ``+histotype``, ``-bestepoch``)."""
    return method == BASE or method.startswith((BASE + "-", BASE + "+"))


def parse_ablation(name: str, base: str = BASE) -> Ablation:
    """The :class:`Ablation` for a config entry; ``ValueError`` naming the fix for an unknown one.
    ``base`` is :func:`five_method` (the class-text ablation uses no descriptions and keeps ``FiVE``)."""
    if name == "class_texts":
        return Ablation(name, FIXED[name], targets="class_texts")
    if name == "no_tfs":
        return Ablation(name, f"{base}-noTFS", model=(("tfs", False),))
    m = _RATIO.match(str(name))
    if m:
        r = float(m.group(1))
        if not 0 < r <= 1:
            raise ValueError(f"ablation {name!r}: the sampling ratio must be in (0, 1]. Fix: e.g. ratio_0.25.")
        return Ablation(name, f"{base}-ratio{r:g}", pretrain=(("instance_ratio", r),))
    raise ValueError(
        f"unknown ablation {name!r}. Fix: use class_texts, no_tfs or ratio_<r> (e.g. ratio_0.25) in `ablations`."
    )


def ablation_method(name: str, base: str = BASE) -> str:
    """Method name (prediction files, table rows) of ablation ``name``."""
    return parse_ablation(name, base).method


def ablation_for_method(method: str, names, base: str = BASE) -> Ablation | None:
    """The configured ablation whose method is ``method`` (``None`` for FiVE itself)."""
    for n in names:
        a = parse_ablation(n, base)
        if a.method == method:
            return a
    return None


def apply_ablation(cfg: dict, ablation: Ablation | str | None) -> tuple[dict, str]:
    """``(cfg with the ablation's overrides, pre-training targets)``; ``cfg`` itself is not changed."""
    if ablation is None:
        return cfg, "descriptions"
    a = parse_ablation(ablation) if isinstance(ablation, str) else ablation
    out = copy.deepcopy(cfg)
    out["model"].update(dict(a.model))
    out["train"]["pretrain"].update(dict(a.pretrain))
    return out, a.targets
