"""Training protocols: patient-level splits, few-shot draws, pre-training, zero/few-shot runs.

Names are imported lazily: Snakemake imports ``fiveflow.train.ablations`` while it parses the
workflow, which must not pull in torch (parse time, and the driver env, see envs/snakemake.yaml).
"""

from importlib import import_module

_LAZY = {"load_bag": ".data", "make_split": ".splits", "make_fewshot_draws": ".splits"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
