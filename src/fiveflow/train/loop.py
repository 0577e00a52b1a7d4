"""The training loop shared by pre-training and few-shot fine-tuning, and batch-free prediction.

One slide per forward pass (no padding needed, unless ``model.pad_to_max_instances`` pads every
bag to the stage's ``max_instances`` as the authors), gradients accumulated over ``accumulate``
slides per optimiser step. Every forward draws its own dropped questions (authors: batch 1
per GPU). With ``symmetric_loss`` the slides of one accumulation group share one draw so the
text->image direction can compare them (the image->text term is unchanged).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..fileio import atomic_path
from ..model.five import FiVEModel
from ..settings import with_defaults
from .data import Bag, BagStore
from .descriptions import all_variants, draw_dropped_questions, n_variants, perturb_descriptions
from .sampling import SAMPLING_MODES, sample_instances
from .schedule import build_optimizer, set_lr

log = logging.getLogger("fiveflow.train")

#: pre-encode every reachable description variant when there are at most this many
MAX_PRECOMPUTED_VARIANTS = 300_000


def precompute_variants(model: FiVEModel, texts: Sequence[str], n_forward: int, logger: logging.Logger) -> int:
    """Encode all strings question dropping/shuffling can produce, once, in large batches.

    The text encoder is frozen, so this is exact (not an approximation). It pays off when
    training requests many times more strings than there are variants (long runs, large
    cohorts: ``n_forward * len(texts)`` at least 4x the variant count; measured on the demo
    cohort, 600 steps over 18 descriptions request 7.9k strings of which only 2.2k are distinct,
    out of 5.8k variants). Otherwise, and above the cap, variants are encoded lazily and cached.
    """
    total = sum(n_variants(t) for t in texts)
    if total > min(MAX_PRECOMPUTED_VARIANTS, n_forward * len(texts) // 4):
        logger.info("%d description variants: encoding lazily", total)
        return 0
    t0 = time.perf_counter()
    variants = [v for t in texts for v in all_variants(t)]
    n = model.text_encoder.warm(variants)
    logger.info("pre-encoded %d description variants in %.1fs", n, time.perf_counter() - t0)
    return n


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def slide_embedding(
    model: FiVEModel,
    bag: Bag,
    bank: torch.Tensor,
    ratio: float,
    max_instances: int,
    train: bool,
    rng: np.random.Generator | None,
    sampling: str = "segments",
) -> torch.Tensor:
    """Sample a bag's instances and aggregate them into a unit vector ``[1, d]`` (float32).

    Only the aggregator runs under autocast (bf16 on CUDA); text embeddings and the cosine
    logits stay float32, since at s = 300 bf16 rounding of a cosine would move logits by ~1.
    """
    idx = torch.from_numpy(sample_instances(bag.n, ratio, max_instances, train, rng, sampling))
    feats = bag.features[idx].unsqueeze(0).to(model.device, non_blocking=True)
    pos = bag.pos[idx].unsqueeze(0).to(model.device, non_blocking=True)
    with _autocast(model.device):
        # model.pad_to_max_instances: padded to this stage's max_instances, pads at M / N (FiVEModel docstring)
        out = model.encode_slide(feats, pos, bank, max_instances=max_instances, bag_size=bag.n)
    return F.normalize(out.float(), dim=-1) if out.dtype != torch.float32 else out


def slides_embedding(
    model: FiVEModel,
    bags: Sequence[Bag],
    bank: torch.Tensor,
    ratio: float,
    max_instances: int,
    train: bool,
    rng: np.random.Generator | None,
    sampling: str = "segments",
) -> torch.Tensor:
    """Batched :func:`slide_embedding`: unit vectors ``[B, d]`` (float32) for several bags in one forward.

    Each bag is sampled in turn with the same ``rng`` (so the draws equal calling
    :func:`slide_embedding` per bag in sequence); bags of different lengths are padded with the
    model's learned ``pad_token`` and masked (:meth:`FiVEModel.encode_slides`).
    """
    feats, poss = [], []
    for bag in bags:
        idx = torch.from_numpy(sample_instances(bag.n, ratio, max_instances, train, rng, sampling))
        feats.append(bag.features[idx].to(model.device, non_blocking=True))
        poss.append(bag.pos[idx].to(model.device, non_blocking=True))
    with _autocast(model.device):
        out = model.encode_slides(feats, poss, bank, max_instances=max_instances, bag_sizes=[b.n for b in bags])
    return F.normalize(out.float(), dim=-1) if out.dtype != torch.float32 else out


def _keep(n_questions: int, dropped: Sequence[int]) -> list[int]:
    d = set(dropped)
    return [i for i in range(n_questions) if i not in d]


def _symmetric_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean of image->text CE (label-smoothed by ``label_smoothing``) and multi-positive
    text->image CE over the group's slides."""
    i2t = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    lt = logits.t()  # [T, G]
    present = torch.unique(targets)
    pos = targets.unsqueeze(0) == present.unsqueeze(1)  # [P, G]
    rows = lt[present]
    t2i = (torch.logsumexp(rows, 1) - torch.logsumexp(rows.masked_fill(~pos, float("-inf")), 1)).mean()
    return 0.5 * (i2t + t2i)


def fit(
    model: FiVEModel,
    store: BagStore,
    items: Sequence[tuple[str, int]],
    texts: Sequence[str],
    optim_cfg: dict,
    seed: int,
    label: str = "train",
    logger: logging.Logger | None = None,
    resume: str | Path | None = None,
    run_key: str | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` so each slide of ``items`` (slide_id, index into ``texts``) matches its text.

    ``texts`` are the candidate descriptions (pre-training: the unique fine-grained
    descriptions of the training patients; fine-tuning: the class texts). Returns a summary.

    ``resume``: a file where the full training state (model, optimiser, step, every random
    stream, the summary so far) is written atomically after each epoch. When it exists and
    was written for the same ``run_key`` (see :func:`fit_key`), training continues from it,
    and the result is identical to an uninterrupted run (same seed, same device). A state
    written for another key is ignored (and overwritten). The caller removes the file once the
    final model is saved. ``on_epoch(epoch)`` is called after each epoch's state is saved.

    The authors' training quirks, each behind a key of ``optim_cfg`` (absent = ours):
    ``sampling`` (``segments`` | ``integer_interval``, :func:`sample_instances`; evaluation by
    :func:`predict_probs` should get the same), ``label_smoothing`` (of the image->text
    cross-entropy), ``lr_floor`` (:func:`build_optimizer`), ``drop_last_group`` (an incomplete
    accumulation group at the end of an epoch is discarded: no forward, no step; the schedule
    then counts ``n // accumulate`` steps per epoch) and ``text_grad_candidates`` (with LoRA:
    candidates per step encoded with gradients, :meth:`FiVEModel.text_vectors`; 0 = all).
    """
    logger = logger or log
    # separate streams: slide order, text perturbation, instance sampling; so the order and
    # the dropped questions do not depend on whether empty steps are skipped or kept
    seeds = np.random.SeedSequence(seed)
    order_rng, text_rng, rng = (np.random.default_rng(s) for s in seeds.spawn(3))
    # a fourth stream (spawn key 3, so the three above are unchanged): which candidate texts carry
    # gradients through a LoRA encoder; never drawn from with a frozen encoder
    cand_rng = np.random.default_rng(seeds.spawn(1)[0])
    torch.manual_seed(seed)
    epochs = int(optim_cfg["epochs"])
    accumulate = int(optim_cfg["accumulate"])
    ratio, max_inst = float(optim_cfg["instance_ratio"]), int(optim_cfg["max_instances"])
    optim_cfg = with_defaults(optim_cfg, "train.pretrain")  # older configs and checkpoints lack the newer keys
    faithful_empty = bool(optim_cfg["faithful_empty_steps"])
    symmetric = bool(optim_cfg["symmetric_loss"])
    merge_shuffled = bool(optim_cfg["merge_shuffled"])
    # the authors' quirks (FIVE_METHOD.md 3-4)
    sampling = str(optim_cfg["sampling"])
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"{label}: sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    label_smoothing = float(optim_cfg["label_smoothing"])
    drop_last = bool(optim_cfg["drop_last_group"])
    grad_cands = int(optim_cfg["text_grad_candidates"])
    nq = len(model.questions)
    n = len(items)
    if n == 0 and epochs > 0:
        raise ValueError(f"{label}: no training slides")
    lr = 0.0
    # drop_last_group: only whole groups run (and count in the schedule); the rest is discarded
    steps_per_epoch = (n // accumulate if drop_last else math.ceil(n / accumulate)) if n else 0
    n_run = steps_per_epoch * accumulate if drop_last else n  # slides of an epoch that are trained on
    if drop_last and epochs and n and steps_per_epoch == 0:
        logger.warning(
            "%s: drop_last_group is on and %d training slide(s) are fewer than accumulate (%d): every "
            "epoch is one incomplete accumulation group, which is discarded, so this run makes 0 "
            "optimiser updates and the model is returned untrained. Fix: lower accumulate to at most "
            "%d, or set drop_last_group: false.",
            label,
            n,
            accumulate,
            n,
        )
    elif drop_last and epochs and n % accumulate:
        logger.info(
            "%s: drop_last_group: %d of %d slides per epoch (an incomplete group of accumulate %d) are discarded",
            label,
            n % accumulate,
            n,
            accumulate,
        )
    total, warmup = epochs * steps_per_epoch, int(optim_cfg["warmup_epochs"]) * steps_per_epoch
    optimizer = build_optimizer(model, optim_cfg)
    if epochs and n:
        precompute_variants(model, texts, epochs * n, logger)
    model.train()
    t0 = time.perf_counter()
    summary = {
        "label": label,
        "n_slides": n,
        "n_texts": len(texts),
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "n_updates": 0,
        "n_forward": 0,
        "n_empty": 0,
        "n_empty_skipped": 0,
        "n_discarded_groups": 0,
        "n_discarded_slides": 0,
        "epoch_loss": [],
    }
    step, start_epoch = 0, 0
    streams = (order_rng, text_rng, rng, cand_rng)
    if resume is not None:
        state = load_train_state(resume, run_key, logger)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for g, st in zip(streams, state["numpy_rngs"]):
                g.bit_generator.state = st
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            step, start_epoch = int(state["step"]), int(state["epoch"])
            summary.update(state["summary"])
            t0 -= float(state["summary"].get("seconds", 0.0))
            logger.info("%s: resumed after epoch %d/%d from %s", label, start_epoch, epochs, resume)
    for epoch in range(start_epoch, epochs):
        order = order_rng.permutation(n)
        losses: list[float] = []
        for g0 in range(0, n_run, accumulate):
            group = [items[i] for i in order[g0 : g0 + accumulate]]
            lr = set_lr(optimizer, step, total, warmup)
            step += 1
            optimizer.zero_grad(set_to_none=True)
            used = (train_group_symmetric if symmetric else train_group)(
                model,
                store,
                group,
                texts,
                nq,
                ratio,
                max_inst,
                text_rng,
                rng,
                faithful_empty,
                summary,
                losses,
                merge_shuffled,
                sampling=sampling,
                label_smoothing=label_smoothing,
                grad_candidates=grad_cands,
                cand_rng=cand_rng,
            )
            if used:
                optimizer.step()
                summary["n_updates"] += 1
        if n_run < n:
            summary["n_discarded_groups"] += 1
            summary["n_discarded_slides"] += n - n_run
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        summary["epoch_loss"].append(mean_loss)
        logger.info(
            "%s epoch %d/%d loss %.4f lr %.2e (%d texts, %.1fs)",
            label,
            epoch + 1,
            epochs,
            mean_loss,
            lr,
            len(texts),
            time.perf_counter() - t0,
        )
        if resume is not None and epoch + 1 < epochs:
            summary["seconds"] = time.perf_counter() - t0
            save_train_state(resume, run_key, epoch + 1, step, model, optimizer, streams, summary)
        if on_epoch is not None:
            on_epoch(epoch + 1)
    model.eval()
    summary["seconds"] = time.perf_counter() - t0
    summary["final_loss"] = summary["epoch_loss"][-1] if summary["epoch_loss"] else float("nan")
    return summary


def fit_key(**parts) -> str:
    """SHA-256 of everything that determines a training run (config sections, seed, slides,
    texts, model shape): checkpoints carry it, and a resume state is only used for the same key."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def save_train_state(
    path: str | Path,
    run_key: str | None,
    epoch: int,
    step: int,
    model: FiVEModel,
    optimizer: torch.optim.Optimizer,
    streams: Sequence[np.random.Generator],
    summary: dict,
) -> None:
    """Write the state needed to continue training after ``epoch`` epochs (atomically)."""
    state = {
        "run_key": run_key,
        "epoch": int(epoch),
        "step": int(step),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "numpy_rngs": [g.bit_generator.state for g in streams],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "summary": copy.deepcopy(summary),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | Path, run_key: str | None, logger: logging.Logger) -> dict | None:
    """The saved state when ``path`` exists, is readable and was written for ``run_key``; else None."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        logger.warning("ignoring unreadable training state %s (%s); starting from scratch", p, exc)
        return None
    if not isinstance(state, dict) or state.get("run_key") != run_key:
        logger.warning(
            "ignoring training state %s: it was written for other settings or data; starting from scratch", p
        )
        return None
    return state


def train_group(
    model,
    store,
    group,
    texts,
    nq,
    ratio,
    max_inst,
    text_rng,
    rng,
    faithful_empty,
    summary,
    losses,
    merge_shuffled: bool = False,
    *,
    sampling: str = "segments",
    label_smoothing: float = 0.0,
    grad_candidates: int = 0,
    cand_rng: np.random.Generator | None = None,
) -> bool:
    """Forward and backward for one accumulation group, one slide per forward, each with its own
    dropped questions (the authors' batch of 1 per GPU). Returns whether any gradient was made
    (False when every step of the group was an empty, skipped step).

    ``sampling``: instance sampling mode; ``label_smoothing``: of the cross-entropy;
    ``grad_candidates`` / ``cand_rng``: with LoRA, how many candidate texts carry gradients and
    the stream that picks them (:meth:`FiVEModel.text_vectors`; 0 = all)."""
    used = False
    for slide_id, target in group:
        dropped = draw_dropped_questions(nq, text_rng)
        cand, remap = perturb_descriptions(texts, dropped, text_rng, merge_shuffled=merge_shuffled)
        if len(cand) < 2:
            summary["n_empty"] += 1
            if not faithful_empty:  # every candidate merged into one: the loss would be 0
                summary["n_empty_skipped"] += 1
                continue
        bank = model.prompt_bank(_keep(nq, dropped))
        slide = slide_embedding(model, store.get(slide_id), bank, ratio, max_inst, True, rng, sampling)
        logits = model.logits(slide, model.encode_texts(cand, grad_subset=grad_candidates, rng=cand_rng))
        loss = F.cross_entropy(
            logits, torch.tensor([remap[target]], device=model.device), label_smoothing=label_smoothing
        )
        (loss / len(group)).backward()
        losses.append(float(loss.detach()))
        summary["n_forward"] += 1
        used = True
    return used


def train_group_symmetric(
    model,
    store,
    group,
    texts,
    nq,
    ratio,
    max_inst,
    text_rng,
    rng,
    faithful_empty,
    summary,
    losses,
    merge_shuffled: bool = False,
    *,
    sampling: str = "segments",
    label_smoothing: float = 0.0,
    grad_candidates: int = 0,
    cand_rng: np.random.Generator | None = None,
) -> bool:
    """Like :func:`train_group` with the symmetric image<->text loss: the group shares one draw."""
    dropped = draw_dropped_questions(nq, text_rng)
    cand, remap = perturb_descriptions(texts, dropped, text_rng, merge_shuffled=merge_shuffled)
    if len(cand) < 2:
        summary["n_empty"] += len(group)
        if not faithful_empty:
            summary["n_empty_skipped"] += len(group)
            return False
    bank = model.prompt_bank(_keep(nq, dropped))
    slides = torch.cat(
        [slide_embedding(model, store.get(s), bank, ratio, max_inst, True, rng, sampling) for s, _ in group]
    )
    logits = model.logits(slides, model.encode_texts(cand, grad_subset=grad_candidates, rng=cand_rng))
    targets = torch.tensor([remap[t] for _, t in group], device=model.device)
    loss = _symmetric_loss(logits, targets, label_smoothing)
    loss.backward()
    losses.append(float(loss.detach()))
    summary["n_forward"] += len(group)
    return True


@torch.no_grad()
def predict_probs(
    model: FiVEModel,
    store: BagStore,
    slide_ids: Sequence[str],
    texts: Sequence[str],
    ratio: float,
    max_instances: int,
    sampling: str = "segments",
) -> np.ndarray:
    """Softmax over ``texts`` at the logit scale for each slide, ``[n_slides, n_texts]``.

    Evaluation uses the full prompt bank, the texts as given and segment-centre sampling
    (the centre of each ``sampling`` segment: pass the training stage's ``sampling``).
    """
    model.eval()
    bank = model.prompt_bank(None)
    text = model.encode_texts(list(texts))
    out = []
    for sid in slide_ids:
        slide = slide_embedding(model, store.get(sid), bank, ratio, max_instances, False, None, sampling)
        out.append(model.logits(slide, text).double().cpu())
    # float64 softmax: at s = 300 float32 probabilities saturate to exactly 0/1 and tie in AUC
    return torch.softmax(torch.cat(out), dim=-1).numpy() if out else np.zeros((0, len(texts)))
