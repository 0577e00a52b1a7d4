"""Zero-shot prediction and few-shot fine-tuning on class texts (FIVE_METHOD.md section 4)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..evaluate.optimistic import SELECTION_KEY, bestepoch_method, optimistic_note
from ..logs import LOGGER_NAME, logging_to
from ..model import load_checkpoint
from ..settings import with_defaults
from .common import resolve_device
from .data import BagStore
from .draws import run_draws
from .loop import fit, fit_key, predict_probs
from .predictions import class_names_texts, prediction_frame, read_split, test_rows, write_predictions
from .pretrain import EPOCH_EVAL_KEY, resume_path

METHOD = "FiVE"


# What FiVE stores per tile for heatmaps (config ``heatmaps.five_score``) -> the attention file's ``kind``.
FIVE_SCORES = {"evidence": "instance_evidence", "attention": "attention"}


def five_score_kind(score: str) -> str:
    if score not in FIVE_SCORES:
        raise ValueError(
            f"heatmaps.five_score must be one of {sorted(FIVE_SCORES)}, not {score!r}. Fix: "
            "evidence (each tile's logit margin for the predicted class) or attention (the "
            "prompt bank's cross-attention)."
        )
    return FIVE_SCORES[score]


@torch.no_grad()
def instance_attentions(model, store: BagStore, slide_ids) -> list[np.ndarray]:
    """FiVE's cross-attention of the full prompt bank over every instance of each bag, ``[N_i]`` each."""
    model.eval()
    bank = model.prompt_bank(None)
    out = []
    for sid in slide_ids:
        bag = store.get(sid)
        out.append(model.instance_attention(bag.features, bag.pos, bank).float().cpu().numpy())
    return out


@torch.no_grad()
def instance_evidences(model, store: BagStore, slide_ids, texts, probs: np.ndarray) -> list[np.ndarray]:
    """Each tile's evidence for its slide's predicted class (``argmax`` of the slide's row of ``probs
    [n_slides, n_texts]``; :meth:`FiVEModel.instance_evidence`), ``[N_i]`` each."""
    model.eval()
    bank = model.prompt_bank(None)
    text = model.encode_texts(list(texts))
    probs = np.asarray(probs)
    if probs.shape != (len(slide_ids), len(texts)):
        raise ValueError(
            f"instance_evidences: probabilities {probs.shape} for {len(slide_ids)} slides x {len(texts)} texts"
        )
    out = []
    for sid, row in zip(slide_ids, probs):
        bag = store.get(sid)
        out.append(
            model.instance_evidence(bag.features, bag.pos, text, int(np.argmax(row)), bank).float().cpu().numpy()
        )
    return out


def instance_scores(model, store: BagStore, slide_ids, texts, probs: np.ndarray, score: str) -> list[np.ndarray]:
    """The per-tile heatmap scores ``heatmaps.five_score`` names, after the slides were predicted."""
    five_score_kind(score)
    if score == "evidence":
        return instance_evidences(model, store, slide_ids, texts, probs)
    return instance_attentions(model, store, slide_ids)


def run_zeroshot(
    ckpt: str | Path,
    split_csv: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    out_parquet: str | Path | None,
    log=None,
    method: str = METHOD,
    attention_dir: str | Path | None = None,
    five_score: str = "evidence",
) -> pd.DataFrame:
    """Classify the test split by cosine to the class texts straight after pre-training (and, with
    ``attention_dir``, save each test slide's per-tile ``five_score`` there for heatmaps)."""
    with logging_to(log) as logger:
        names, texts = class_names_texts(cfg)
        test = test_rows(read_split(split_csv, names))
        model, payload = load_checkpoint(ckpt, resolve_device(cfg["train"]["device"]))
        store = BagStore(bag_paths, payload["model_cfg"]["position"])
        pre = cfg["train"]["pretrain"]
        probs = predict_probs(
            model,
            store,
            test["slide_id"].tolist(),
            texts,
            pre["instance_ratio"],
            pre["max_instances"],
            sampling=with_defaults(pre, "train.pretrain")["sampling"],
        )
        logger.info("zero-shot: %d test slides", len(test))
        if attention_dir is not None:
            from ..evaluate.attention import save_run_attention

            ids = test["slide_id"].tolist()
            scores = instance_scores(model, store, ids, texts, probs, five_score)
            n = len(
                save_run_attention(
                    attention_dir,
                    bag_paths,
                    ids,
                    scores,
                    probs[:, 1],
                    method,
                    five_score_kind(five_score),
                    logger,
                    labels=dict(zip(ids, test["label"])),
                    shots=0,
                    run=0,
                    seed=None,
                )
            )
            logger.info("zero-shot attention of %d/%d test slides -> %s", n, len(ids), attention_dir)
        return write_predictions([prediction_frame(method, 0, 0, test, probs[:, 1], names)], out_parquet)


def run_zeroshot_bestepoch(
    ckpt: str | Path,
    split_csv: str | Path,
    cfg: dict,
    out_parquet: str | Path | None,
    log=None,
    method: str | None = None,
) -> pd.DataFrame:
    """The authors' zero-shot model selection (``train.zeroshot_epoch: best_on_test``): the predictions of
    the pre-training epoch with the best accuracy on the test split (ties: the earliest), method
    ``FiVE-bestepoch``. Optimistic by construction (the epoch is chosen on the slides it is scored on;
    :mod:`fiveflow.evaluate.optimistic` labels it in every table); the honest ``FiVE`` zero-shot row is
    the final epoch. Reads the per-epoch test probabilities pre-training stored in the checkpoint
    (``extra["zeroshot_epochs"]``), so it needs neither the bags nor a GPU. The chosen epoch and every
    epoch's accuracy go into the parquet metadata ``fiveflow_selection``."""
    with logging_to(log) as logger:
        names, _ = class_names_texts(cfg)
        test = test_rows(read_split(split_csv, names))
        payload = torch.load(str(ckpt), map_location="cpu", weights_only=False)
        ev = (payload.get("extra") or {}).get(EPOCH_EVAL_KEY)
        if not ev or not ev.get("epochs"):
            raise ValueError(
                f"{ckpt}: the checkpoint holds no per-epoch zero-shot test predictions. Fix: pre-train "
                "with train.zeroshot_epoch: best_on_test (the pretrain rule then reruns), or set it to "
                "final."
            )
        pos = {str(sid): i for i, sid in enumerate(ev["slide_ids"])}
        missing = sorted(set(test["slide_id"]) - set(pos))
        if missing:
            raise ValueError(
                f"{ckpt}: pre-training evaluated another test split ({len(missing)} test slide(s) "
                f"without per-epoch predictions, e.g. {missing[:5]}). Fix: rerun the pretrain rule."
            )
        probs = np.asarray(ev["prob"], dtype=np.float64)[:, [pos[sid] for sid in test["slide_id"]]]
        y = (test["label"].astype(str) == names[1]).to_numpy()
        acc = ((probs >= 0.5) == y[None, :]).mean(axis=1)  # the accuracy of compute_metrics, per epoch
        best = int(np.argmax(acc))  # the first maximum: the earliest of tied epochs
        epochs = [int(e) for e in ev["epochs"]]
        method = method or bestepoch_method(METHOD)
        selection = {
            "method": method,
            "epoch": epochs[best],
            "n_epochs": len(epochs),
            "criterion": "best accuracy on the test split (ties: the earliest epoch)",
            "epochs": epochs,
            "accuracy": [float(a) for a in acc],
            "note": optimistic_note(method),
        }
        logger.info(
            "%s: epoch %d of %d has the best test accuracy %.4f (final epoch: %.4f); %s",
            method,
            epochs[best],
            len(epochs),
            acc[best],
            acc[-1],
            optimistic_note(method) or "selected on the test set",
        )
        return write_predictions(
            [prediction_frame(method, 0, 0, test, probs[best], names)], out_parquet, metadata={SELECTION_KEY: selection}
        )


def run_fewshot(
    ckpt: str | Path,
    split_csv: str | Path,
    draws_csv: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    shots: int,
    out_parquet: str | Path | None,
    threads: int = 1,
    log=None,
    method: str = METHOD,
    attention_dir: str | Path | None = None,
    attention_runs=(0,),
    five_score: str = "evidence",
) -> pd.DataFrame:
    """For every draw of ``shots``: reload the checkpoint, fine-tune on the drawn slides' class
    texts (seeded by the draw's recorded seed), predict the test split. With ``attention_dir``, the
    fine-tuned model's per-tile ``five_score`` of the runs ``attention_runs`` is saved for heatmaps."""
    kind = five_score_kind(five_score)
    _, texts = class_names_texts(cfg)
    ft = cfg["train"]["finetune"]
    position = torch.load(str(ckpt), map_location="cpu", weights_only=False)["model_cfg"]["position"]
    logger = log if isinstance(log, logging.Logger) else logging.getLogger(LOGGER_NAME)

    def fit_predict(store, slide_ids, y, test_ids, seed, device):
        model, payload = load_checkpoint(ckpt, device)
        items = list(zip(slide_ids, y.tolist()))
        key = fit_key(
            stage="finetune",
            pretrained=payload["extra"].get("config_sha256"),
            model=payload["model_cfg"],
            optim=ft,
            seed=seed,
            items=items,
            texts=texts,
            device=torch.device(device).type,
        )
        resume = resume_path(out_parquet or ckpt, f".seed{seed}")  # one per draw
        summary = fit(model, store, items, texts, ft, seed, f"{shots}-shot", logger, resume=resume, run_key=key)
        resume.unlink(missing_ok=True)
        logger.info(
            "%d-shot draw (seed %d): %d updates, %d/%d empty steps skipped, %.1fs",
            shots,
            seed,
            summary["n_updates"],
            summary["n_empty_skipped"],
            summary["n_empty"],
            summary["seconds"],
        )
        probs = predict_probs(
            model,
            store,
            list(test_ids),
            texts,
            ft["instance_ratio"],
            ft["max_instances"],
            sampling=with_defaults(ft, "train.finetune")["sampling"],
        )
        if attention_dir is None:
            return probs[:, 1]
        # after predicting: the same predictions with or without heatmap scores
        return probs[:, 1], instance_scores(model, store, list(test_ids), texts, probs, five_score)

    return run_draws(
        method,
        fit_predict,
        split_csv,
        draws_csv,
        bag_paths,
        cfg,
        shots,
        out_parquet,
        threads,
        log,
        position=position,
        attention_dir=attention_dir,
        attention_runs=attention_runs,
        attention_kind=kind,
    )
