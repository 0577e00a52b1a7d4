"""Training protocols: patient-level splits, few-shot draws, pre-training, zero/few-shot runs."""
from .data import load_bag
from .splits import make_fewshot_draws, make_split

__all__ = ["load_bag", "make_split", "make_fewshot_draws"]
