"""Zero-shot prediction and few-shot fine-tuning on class texts (FIVE_METHOD.md section 4)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..model import load_checkpoint
from .common import log_to, resolve_device, seed_everything, set_threads
from .data import BagStore
from .loop import fit, predict_probs
from .predictions import class_names_texts, draws_for, prediction_frame, read_split, test_rows, write_predictions

METHOD = "FiVE"


def run_zeroshot(ckpt: str | Path, split_csv: str | Path, bag_paths: dict[str, str], cfg: dict,
                 out_parquet: str | Path | None, log=None) -> pd.DataFrame:
    """Classify the test split by cosine to the class texts straight after pre-training."""
    with log_to(log) as logger:
        names, texts = class_names_texts(cfg)
        test = test_rows(read_split(split_csv, names))
        model, payload = load_checkpoint(ckpt, resolve_device(cfg["train"]["device"]))
        store = BagStore(bag_paths, payload["model_cfg"]["position"])
        pre = cfg["train"]["pretrain"]
        probs = predict_probs(model, store, test["slide_id"].tolist(), texts, pre["instance_ratio"], pre["max_instances"])
        logger.info("zero-shot: %d test slides", len(test))
        return write_predictions([prediction_frame(METHOD, 0, 0, test, probs[:, 1], names)], out_parquet)


def run_fewshot(ckpt: str | Path, split_csv: str | Path, draws_csv: str | Path, bag_paths: dict[str, str], cfg: dict,
                shots: int, out_parquet: str | Path | None, threads: int = 1, log=None) -> pd.DataFrame:
    """For every draw of ``shots``: reload the checkpoint, fine-tune on the drawn slides' class
    texts (seeded by the draw's recorded seed), predict the test split."""
    with log_to(log) as logger:
        set_threads(threads)
        device = resolve_device(cfg["train"]["device"])
        names, texts = class_names_texts(cfg)
        split = read_split(split_csv, names)
        test = test_rows(split)
        label_of = dict(zip(split["slide_id"], split["label"]))
        ft = cfg["train"]["finetune"]
        store = None
        frames = []
        for run, (seed, slide_ids) in draws_for(draws_csv, shots, split).items():
            seed_everything(seed)
            model, payload = load_checkpoint(ckpt, device)
            store = store or BagStore(bag_paths, payload["model_cfg"]["position"])
            items = [(s, names.index(label_of[s])) for s in slide_ids]
            summary = fit(model, store, items, texts, ft, seed, f"{shots}-shot run {run}", logger)
            probs = predict_probs(model, store, test["slide_id"].tolist(), texts, ft["instance_ratio"], ft["max_instances"])
            frames.append(prediction_frame(METHOD, shots, run, test, probs[:, 1], names))
            logger.info("%d-shot run %d: %d updates, %d/%d empty steps skipped, %.1fs", shots, run,
                        summary["n_updates"], summary["n_empty_skipped"], summary["n_empty"], summary["seconds"])
        return write_predictions(frames, out_parquet)
