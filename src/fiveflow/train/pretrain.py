"""Pre-training FiVE on fine-grained descriptions of the training patients (FIVE_METHOD.md 4).

With ``train.zeroshot_epoch: best_on_test`` pre-training also classifies the test split zero-shot
after every epoch (:class:`EpochZeroshot`), so that the authors' model selection (the epoch best on
the file they report on) can be reported beside the honest final epoch, as an optimistic row
(:func:`fiveflow.train.fewshot.run_zeroshot_bestepoch`). The training itself is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import reading
from ..fileio import atomic_write_text
from ..logs import logging_to
from ..model import build_model, load_questions, save_checkpoint
from ..settings import with_defaults
from .common import resolve_device, seed_everything, set_threads
from .data import BagStore
from .descriptions import split_segments
from .loop import fit, fit_key, load_train_state, predict_probs
from .predictions import class_names_texts, read_split, test_rows

#: checkpoint ``extra`` key of the per-epoch zero-shot test probabilities (``train.zeroshot_epoch: best_on_test``)
EPOCH_EVAL_KEY = "zeroshot_epochs"


def training_descriptions(split: pd.DataFrame, labels: pd.DataFrame, logger: logging.Logger) -> pd.DataFrame:
    """Training slides joined to their patient's description; slides without one are dropped."""
    lab = labels[["patient_id", "description"]].copy()
    lab["patient_id"] = lab["patient_id"].astype(str)
    lab["description"] = lab["description"].astype("string").str.strip()
    lab = lab[lab["description"].notna() & (lab["description"] != "")].drop_duplicates("patient_id")
    train = split[split["split"] == "train"].merge(lab, on="patient_id", how="left")
    missing = train["description"].isna()
    if missing.any():
        logger.warning(
            "pretrain: dropping %d training slide(s) whose patient has no description: %s",
            int(missing.sum()),
            train.loc[missing, "slide_id"].tolist()[:10],
        )
    return train[~missing].reset_index(drop=True)


def resume_path(out: str | Path, tag: str = "") -> Path:
    """Where a training job keeps its per-epoch state: next to its output, hidden; ``tag``
    tells apart several runs writing one output (the few-shot draws)."""
    out = Path(out)
    return out.with_name(f".{out.name}{tag}.resume")


TARGETS = ("descriptions", "class_texts")

_QUIET = logging.getLogger("fiveflow.train.pretrain.quiet")  # peeking at the resume state: fit reports on it
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def epoch_eval_path(out_ckpt: str | Path) -> Path:
    """The side file of :class:`EpochZeroshot` (hidden, next to the resume state; removed with it)."""
    return resume_path(out_ckpt, ".zeroshot")


class EpochZeroshot:
    """Zero-shot on the test split after every pre-training epoch (``fit``'s ``on_epoch``), exactly as the
    zero-shot rule evaluates: class texts, the full prompt bank, evaluation sampling at the pre-training
    ``instance_ratio`` / ``max_instances`` / ``sampling``. Keeps P(positive class) per test slide and epoch.

    The evaluation does not touch training: the model goes back to train mode and the torch random
    streams are restored, so the checkpoint equals one trained without it. The results survive a kill:
    they are written after every epoch to :func:`epoch_eval_path`, tagged with the training run's key;
    ``fit`` saves its state *before* calling ``on_epoch``, so a run killed in between resumes from an
    epoch that was never evaluated, and :meth:`catch_up` evaluates it from the saved state first.
    """

    def __init__(
        self,
        model,
        store: BagStore,
        test: pd.DataFrame,
        class_names,
        class_texts,
        ratio: float,
        max_instances: int,
        path: str | Path,
        run_key: str,
        logger: logging.Logger,
        sampling: str = "segments",
    ):
        self.model, self.store, self.logger = model, store, logger
        self.slide_ids = test["slide_id"].astype(str).tolist()
        self.labels = test["label"].astype(str).tolist()
        self.class_names, self.class_texts = list(class_names), list(class_texts)
        self.ratio, self.max_instances, self.sampling = float(ratio), int(max_instances), str(sampling)
        self.path, self.run_key = Path(path), run_key
        self.prob: dict[int, list[float]] = {}
        self._y = np.array([lab == self.class_names[1] for lab in self.labels])
        try:
            rec = json.loads(self.path.read_text()) if self.path.is_file() else None
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict) and rec.get("run_key") == run_key and rec.get("slide_ids") == self.slide_ids:
            self.prob = {int(e): [float(x) for x in v] for e, v in rec["prob"].items()}

    def accuracy(self, epoch: int) -> float:
        return float(((np.asarray(self.prob[epoch]) >= 0.5) == self._y).mean())

    def evaluate(self) -> list[float]:
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        was_training = self.model.training
        try:
            probs = predict_probs(
                self.model,
                self.store,
                self.slide_ids,
                self.class_texts,
                self.ratio,
                self.max_instances,
                sampling=self.sampling,
            )
        finally:
            self.model.train(was_training)
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
        return [float(x) for x in probs[:, 1]]

    def _save(self) -> None:
        atomic_write_text(
            self.path,
            json.dumps(
                {
                    "run_key": self.run_key,
                    "slide_ids": self.slide_ids,
                    "prob": {str(e): v for e, v in sorted(self.prob.items())},
                }
            ),
        )

    def __call__(self, epoch: int) -> None:
        self.prob[int(epoch)] = self.evaluate()
        self._save()
        self.logger.info(
            "zero-shot on the test split after epoch %d: accuracy %.4f (train.zeroshot_epoch: "
            "best_on_test; selecting on it is optimistic)",
            epoch,
            self.accuracy(int(epoch)),
        )

    def catch_up(self, resume: str | Path) -> None:
        """Before ``fit``: align the kept results with the state ``fit`` will resume from (none: start
        over; epoch k: drop later epochs, which are retrained, and evaluate epoch k itself when the
        run was killed before doing so). Earlier epochs that are missing cannot be recomputed: the
        state is then deleted and training starts over (with a warning)."""
        state = load_train_state(resume, self.run_key, _QUIET)
        if state is None:
            self.prob = {}
            return
        k = int(state["epoch"])
        self.prob = {e: v for e, v in self.prob.items() if e <= k}
        missing = [e for e in range(1, k) if e not in self.prob]
        if missing:  # before the model is touched: training then starts from its initial weights
            self.logger.warning(
                "per-epoch zero-shot results of epoch(s) %s are missing (%s): training starts "
                "over instead of resuming from epoch %d",
                missing,
                self.path,
                k,
            )
            Path(resume).unlink(missing_ok=True)
            self.prob = {}
            return
        if k not in self.prob:
            self.model.load_state_dict(state["model"])  # fit loads the same state again
            self.prob[k] = self.evaluate()
            self._save()
            self.logger.info(
                "zero-shot on the test split after epoch %d (resumed state): accuracy %.4f", k, self.accuracy(k)
            )

    def record(self, epochs: int) -> dict:
        """What the checkpoint keeps (``extra[EPOCH_EVAL_KEY]``): every epoch's test probabilities."""
        missing = [e for e in range(1, epochs + 1) if e not in self.prob]
        if missing:
            raise RuntimeError(f"per-epoch zero-shot results missing for epoch(s) {missing}")
        ep = list(range(1, epochs + 1))
        return {
            "slide_ids": self.slide_ids,
            "labels": self.labels,
            "classes": self.class_names,
            "epochs": ep,
            "prob": [self.prob[e] for e in ep],
            "accuracy": [self.accuracy(e) for e in ep],
            "instance_ratio": self.ratio,
            "max_instances": self.max_instances,
            "sampling": self.sampling,
        }


def pretrain(
    split_csv: str | Path,
    labels_parquet: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    out_ckpt: str | Path,
    threads: int = 1,
    log: str | os.PathLike | logging.Logger | None = None,
    on_epoch=None,
    targets: str = "descriptions",
    zeroshot_each_epoch: bool = False,
) -> dict:
    """Pre-train on the training split's fine-grained labels and save the checkpoint atomically.

    The training state is saved after every epoch (:func:`resume_path`); a rerun after a
    kill continues from the last epoch and ends with the same checkpoint as an uninterrupted
    run. The checkpoint's ``extra.config_sha256`` identifies the settings and data it was
    trained on. Returns a summary: slide/description counts, per-epoch losses, seconds, empty steps.

    ``targets="class_texts"`` is the ablation without fine-grained pre-training: the same
    slides, the same schedule and augmentation, but each slide's target is its class text
    instead of its report description.

    ``zeroshot_each_epoch`` (``train.zeroshot_epoch: best_on_test``, FiVE only): after every epoch the
    test split is classified zero-shot (:class:`EpochZeroshot`, after ``on_epoch``) and the
    checkpoint keeps every epoch's test probabilities in ``extra["zeroshot_epochs"]``; the model
    itself is the same as without it.
    """
    if targets not in TARGETS:
        raise ValueError(f"pretrain targets must be one of {TARGETS}, got {targets!r}")
    with logging_to(log) as logger:
        set_threads(threads)
        device = resolve_device(cfg["train"]["device"])
        split = read_split(split_csv)
        with reading(labels_parquet, "labels parquet", "point at the labels parquet `fiveflow reports` wrote"):
            labels = pd.read_parquet(labels_parquet)
        train = training_descriptions(split, labels, logger)
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
            raise ValueError(
                f"pretrain: {len(set(texts))} distinct target text(s) among training slides; need at least 2"
            )
        store = BagStore(bag_paths, cfg["model"]["position"])
        feature_dim = store.feature_dim(items[0][0])
        seed = int(cfg["train"]["seed"])
        seed_everything(seed)
        model = build_model(cfg["model"], feature_dim, questions, device)
        if model.feature_norm == "standardize":
            model.set_feature_stats(*store.feature_stats([s for s, _ in items]))
        logger.info(
            "pretrain (%s): %d slides, %d target texts, feature dim %d, device %s",
            targets,
            len(items),
            len(texts),
            feature_dim,
            device,
        )
        # the per-epoch evaluation joins the key only when on: a default run's key (and checkpoint) is unchanged,
        # and a state written without the evaluations is never resumed by a run that needs them
        key = fit_key(
            stage="pretrain",
            targets=targets,
            model=cfg["model"],
            optim=cfg["train"]["pretrain"],
            seed=seed,
            items=items,
            texts=texts,
            questions=questions,
            feature_dim=feature_dim,
            device=device.type,
            **({"zeroshot_each_epoch": True} if zeroshot_each_epoch else {}),
        )
        resume = resume_path(out_ckpt)
        callback, tracker = on_epoch, None
        if zeroshot_each_epoch:
            names, class_texts = class_names_texts(cfg)
            pre = cfg["train"]["pretrain"]
            tracker = EpochZeroshot(
                model,
                store,
                test_rows(read_split(split_csv, names)),
                names,
                class_texts,
                pre["instance_ratio"],
                pre["max_instances"],
                epoch_eval_path(out_ckpt),
                key,
                logger,
                sampling=with_defaults(pre, "train.pretrain")["sampling"],
            )  # as run_zeroshot
            tracker.catch_up(resume)

            def callback(epoch: int) -> None:
                if on_epoch is not None:
                    on_epoch(epoch)
                tracker(epoch)

        summary = fit(
            model,
            store,
            items,
            texts,
            cfg["train"]["pretrain"],
            seed,
            "pretrain",
            logger,
            resume=resume,
            run_key=key,
            on_epoch=callback,
        )
        summary.update(n_dropped_slides=int((split["split"] == "train").sum()) - len(items), device=str(device))
        extra = {"summary": summary, "train_slides": [s for s, _ in items], "config_sha256": key, "targets": targets}
        if tracker is not None:
            extra[EPOCH_EVAL_KEY] = tracker.record(int(summary["epochs"]))
        save_checkpoint(model, cfg["model"], cfg["classes"], feature_dim, out_ckpt, extra=extra)
        resume.unlink(missing_ok=True)
        epoch_eval_path(out_ckpt).unlink(missing_ok=True)
        logger.info(
            "pretrain: done in %.1fs, final loss %.4f -> %s", summary["seconds"], summary["final_loss"], out_ckpt
        )
        return summary
