"""FiVE training speed on CPU: cached frozen-text encoding vs re-encoding every step, and a
full pre-training run with the config's epochs on a synthetic 32-slide cohort.

Baseline for the text side = the authors' approach (the text encoder encodes every candidate
description at every step); ours = each unique string encoded once (the encoder is frozen).
Last line: ``RESULT key=value ...``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_bags: the tests' synthetic cohort

from fiveflow.model.text import FrozenTextEncoder  # noqa: E402
from fiveflow.train.descriptions import draw_dropped_questions, perturb_descriptions  # noqa: E402
from fiveflow.train.pretrain import pretrain  # noqa: E402
from fiveflow.train.splits import make_split  # noqa: E402
from synthetic_bags import make_synthetic_cohort  # noqa: E402

TEXT_STEPS = 60


def text_steps(enc: FrozenTextEncoder, texts: list[str], cached: bool) -> float:
    """Steps per second of encoding one step's perturbed candidate descriptions."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(TEXT_STEPS):
        cand, _ = perturb_descriptions(texts, draw_dropped_questions(6, rng), rng)
        enc.encode(cand) if cached else enc._encode_uncached(cand)
    return TEXT_STEPS / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(2)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["train"]["device"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coh = make_synthetic_cohort(tmp / "cohort", n_slides=32, seed=0)
        split = make_split(coh["samples"], cfg["split"]["test_fraction"], cfg["split"]["seed"], tmp / "split.csv")
        labels = pd.read_parquet(coh["labels_parquet"])
        train_patients = set(split.loc[split.split == "train", "patient_id"])
        texts = sorted(set(labels.loc[labels.patient_id.isin(train_patients), "description"]))
        m = cfg["model"]
        uncached = text_steps(
            FrozenTextEncoder(m["text_encoder"], m["text_max_tokens"], m["text_mask_padding"]), texts, False
        )
        # the cached rate over the first steps (cold cache); later epochs only get faster
        cached = text_steps(
            FrozenTextEncoder(m["text_encoder"], m["text_max_tokens"], m["text_mask_padding"]), texts, True
        )
        t0 = time.perf_counter()
        summary = pretrain(
            tmp / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, tmp / "pretrain.pt", threads=2
        )
        wall = time.perf_counter() - t0
    epochs = max(summary["epochs"], 1)
    print(
        f"pretrain: {summary['n_slides']} slides x {summary['epochs']} epochs in {wall:.1f}s "
        f"(fit {summary['seconds']:.1f}s), final loss {summary['final_loss']:.3f}"
    )
    print(
        f"RESULT pretrain_s={wall:.2f} pretrain_fit_s_per_epoch={summary['seconds'] / epochs:.3f} "
        f"text_steps_per_s_uncached={uncached:.2f} text_steps_per_s_cached={cached:.2f} "
        f"text_cache_speedup={cached / uncached:.2f}"
    )


if __name__ == "__main__":
    main()
