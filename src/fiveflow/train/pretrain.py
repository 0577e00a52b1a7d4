"""Pre-training FiVE on fine-grained descriptions of the training patients (FIVE_METHOD.md 4)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..model import build_model, load_questions, save_checkpoint
from .common import log_to, resolve_device, seed_everything, set_threads
from .data import BagStore
from .descriptions import split_segments
from .loop import fit, fit_key
from .predictions import class_names_texts, read_split


def training_descriptions(split: pd.DataFrame, labels: pd.DataFrame, logger: logging.Logger) -> pd.DataFrame:
    """Training slides joined to their patient's description; slides without one are dropped."""
    lab = labels[["patient_id", "description"]].copy()
    lab["patient_id"] = lab["patient_id"].astype(str)
    lab["description"] = lab["description"].astype("string").str.strip()
    lab = lab[lab["description"].notna() & (lab["description"] != "")].drop_duplicates("patient_id")
    train = split[split["split"] == "train"].merge(lab, on="patient_id", how="left")
    missing = train["description"].isna()
    if missing.any():
        logger.warning("pretrain: dropping %d training slide(s) whose patient has no description: %s",
                       int(missing.sum()), train.loc[missing, "slide_id"].tolist()[:10])
    return train[~missing].reset_index(drop=True)


def resume_path(out: str | Path, tag: str = "") -> Path:
    """Where a training job keeps its per-epoch state: next to its output, hidden; ``tag``
    tells apart several runs writing one output (the few-shot draws)."""
    out = Path(out)
    return out.with_name(f".{out.name}{tag}.resume")


TARGETS = ("descriptions", "class_texts")


def pretrain(split_csv: str | Path, labels_parquet: str | Path, bag_paths: dict[str, str], cfg: dict,
             out_ckpt: str | Path, threads: int = 1, log: str | os.PathLike | logging.Logger | None = None,
             on_epoch=None, targets: str = "descriptions") -> dict:
    """Pre-train on the training split's fine-grained labels and save the checkpoint atomically.

    The training state is saved after every epoch (:func:`resume_path`); a rerun after a
    kill continues from the last epoch and ends with the same checkpoint as an uninterrupted
    run. The checkpoint's ``extra.config_sha256`` identifies the settings and data it was
    trained on. Returns a summary: slide/description counts, per-epoch losses, seconds, empty steps.

    ``targets="class_texts"`` is the ablation without fine-grained pre-training: the same
    slides, the same schedule and augmentation, but each slide's target is its class text
    instead of its report description.
    """
    if targets not in TARGETS:
        raise ValueError(f"pretrain targets must be one of {TARGETS}, got {targets!r}")
    with log_to(log) as logger:
        set_threads(threads)
        device = resolve_device(cfg["train"]["device"])
        split = read_split(split_csv)
        train = training_descriptions(split, pd.read_parquet(labels_parquet), logger)
        questions = load_questions()
        if targets == "class_texts":
            names, texts = class_names_texts(cfg)
            items = [(s, names.index(lab)) for s, lab in zip(train["slide_id"], train["label"])]
        else:
            texts = sorted(train["description"].unique())
            odd = sum(len(split_segments(t)) != len(questions) for t in texts)
            if odd:
                logger.warning("pretrain: %d description(s) do not have %d ';'-separated answers", odd, len(questions))
            index = {t: i for i, t in enumerate(texts)}
            items = [(s, index[d]) for s, d in zip(train["slide_id"], train["description"])]
        if len(set(texts)) < 2:
            raise ValueError(f"pretrain: {len(set(texts))} distinct target text(s) among training slides; need at least 2")
        store = BagStore(bag_paths, cfg["model"]["position"])
        feature_dim = store.feature_dim(items[0][0])
        seed = int(cfg["train"]["seed"])
        seed_everything(seed)
        model = build_model(cfg["model"], feature_dim, questions, device)
        if model.feature_norm == "standardize":
            model.set_feature_stats(*store.feature_stats([s for s, _ in items]))
        logger.info("pretrain (%s): %d slides, %d target texts, feature dim %d, device %s",
                    targets, len(items), len(texts), feature_dim, device)
        key = fit_key(stage="pretrain", targets=targets, model=cfg["model"], optim=cfg["train"]["pretrain"], seed=seed, items=items,
                      texts=texts, questions=questions, feature_dim=feature_dim, device=device.type)
        resume = resume_path(out_ckpt)
        summary = fit(model, store, items, texts, cfg["train"]["pretrain"], seed, "pretrain", logger,
                      resume=resume, run_key=key, on_epoch=on_epoch)
        summary.update(n_dropped_slides=int((split["split"] == "train").sum()) - len(items), device=str(device))
        save_checkpoint(model, cfg["model"], cfg["classes"], feature_dim, out_ckpt,
                        extra={"summary": summary, "train_slides": [s for s, _ in items], "config_sha256": key,
                               "targets": targets})
        resume.unlink(missing_ok=True)
        logger.info("pretrain: done in %.1fs, final loss %.4f -> %s", summary["seconds"], summary["final_loss"], out_ckpt)
        return summary
