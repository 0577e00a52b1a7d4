"""MI-Zero zero-shot baseline (Lu et al., CVPR 2023): instance-to-class-text cosine, top-k pooling.

For an encoder with a text tower (``plip``, ``clip-vit-b16``, ``quiltnet-b32``):

1. class embeddings by prompt ensembling: every template x class name of the prompt file is embedded
   by the text tower, L2-normalised, averaged per class and re-normalised;
2. instance scores: cosine of every instance feature with every class embedding, ``[N, C]``;
3. slide score of a class: the mean of its ``k = min(topk, N)`` highest instance scores;
4. ``P(class) = softmax(100 * slide scores)`` (100: CLIP's logit scale); the positive class is the
   second configured class. Nothing is trained: the same prediction for every shot count, written as
   ``predictions/MI-Zero_0.parquet``.

The bags must come from the very image tower whose text half is loaded (checked from their attributes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ..embed import embed_settings
from ..embed.bags import BagError, bag_attrs, read_usable_bag
from ..logs import logging_to
from ..settings import with_defaults
from ..train.common import resolve_device
from ..train.predictions import class_names_texts, prediction_frame, read_split, test_rows, write_predictions

METHOD = "MI-Zero"
#: CLIP's (clamped, learned) logit scale, used as the softmax temperature of the slide scores
LOGIT_SCALE = 100.0
#: the placeholder in prompt templates
CLASSNAME = "CLASSNAME"


def mizero_settings(cfg: dict) -> dict:
    """The ``mizero`` config section with its schema defaults filled in."""
    return with_defaults(cfg.get("mizero"), "mizero")


def mizero_enabled(cfg: dict) -> bool:
    """``auto``: when ``embedding.encoder`` has a text tower; ``true``/``false`` as given."""
    from ..embed.text_towers import has_text_tower

    enabled = mizero_settings(cfg)["enabled"]
    if enabled == "auto":
        return has_text_tower(cfg["embedding"]["encoder"])
    return bool(enabled)


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSet:
    templates: list[str]
    classnames: dict[str, list[str]]
    version: str = ""


def load_prompts(path: str | Path) -> PromptSet:
    """Read and check a prompt file: ``templates`` (each with CLASSNAME) and ``classes`` (name -> synonyms)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: MI-Zero prompt file not found. Fix: set `mizero.prompts` to an existing "
            "file (e.g. resources/prompts/mizero-lung.yaml)."
        ) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc}). Fix: correct the file named by `mizero.prompts`.") from None
    templates = data.get("templates") if isinstance(data, dict) else None
    classes = (data.get("classes") or {}) if isinstance(data, dict) else None
    if not templates or not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise ValueError(f"{path}: `templates` must be a non-empty list of strings. Fix: edit the prompt file.")
    bad = [t for t in templates if CLASSNAME not in t]
    if bad:
        raise ValueError(f"{path}: templates without the {CLASSNAME} placeholder: {bad[:3]}. Fix: add {CLASSNAME}.")
    if not isinstance(classes, dict) or not all(
        isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v) for v in classes.values()
    ):
        raise ValueError(
            f"{path}: `classes` must map each class name to a non-empty list of class-name strings. "
            "Fix: edit the prompt file."
        )
    return PromptSet(list(templates), {str(k): list(v) for k, v in classes.items()}, str(data.get("version", "")))


def class_prompts(class_names: Sequence[str], class_texts: Sequence[str], prompts: PromptSet) -> list[list[str]]:
    """Per class, every template filled with every synonym; a class absent from the file uses its
    config name in every template plus its config text as one more prompt."""
    out = []
    for name, text in zip(class_names, class_texts):
        names = prompts.classnames.get(name)
        extra = [] if names else [text]
        out.append([t.replace(CLASSNAME, n) for n in (names or [name]) for t in prompts.templates] + extra)
    return out


def class_embeddings(
    encode: Callable[[list[str]], torch.Tensor], prompts_per_class: Sequence[Sequence[str]]
) -> torch.Tensor:
    """MI-Zero prompt ensembling: normalise each prompt embedding, average per class, re-normalise -> ``[C, D]``."""
    flat = [p for ps in prompts_per_class for p in ps]
    emb = torch.nn.functional.normalize(encode(flat).float(), dim=-1)
    out, i = [], 0
    for ps in prompts_per_class:
        out.append(emb[i : i + len(ps)].mean(0))
        i += len(ps)
    return torch.nn.functional.normalize(torch.stack(out), dim=-1)


# ---------------------------------------------------------------- scoring


def instance_scores(features: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every instance with every class, ``[N, C]``."""
    f = torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=-1)
    return f @ torch.nn.functional.normalize(class_emb.float(), dim=-1).T


def topk_pool(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """Per class, the mean of its ``min(topk, N)`` highest instance scores, ``[C]``."""
    if scores.shape[0] == 0:
        raise ValueError("an empty bag has no instances to pool")
    k = max(1, min(int(topk), scores.shape[0]))
    return scores.topk(k, dim=0).values.mean(0)


def slide_probs(
    features: torch.Tensor, class_emb: torch.Tensor, topk: int, logit_scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """``softmax(logit_scale * top-k pooled cosine)`` over the classes, ``[C]``."""
    return torch.softmax(logit_scale * topk_pool(instance_scores(features, class_emb), topk), dim=-1)


def heatmap_scores(features: torch.Tensor, class_emb: torch.Tensor, topk: int, which: str = "positive") -> torch.Tensor:
    """Per-instance cosine ``[N]`` to the positive class (``which='positive'``, the second class) or
    to the slide's predicted class (``which='predicted'``), for heatmaps."""
    scores = instance_scores(features, class_emb)
    if which == "positive":
        return scores[:, 1]
    if which == "predicted":
        return scores[:, int(topk_pool(scores, topk).argmax())]
    raise ValueError(f"which must be 'positive' or 'predicted', got {which!r}")


# ---------------------------------------------------------------- bags and the run


def check_bag(
    path: str | Path, encoder: str, weights_sha256: str | None, dim: int, logger: logging.Logger | None = None
) -> None:
    """Refuse a bag made by another encoder or other weights than the text tower's model."""
    attrs = bag_attrs(path)
    made_by = attrs.get("encoder")
    if made_by is not None and str(made_by) != encoder:
        raise BagError(
            f"{path}: made by encoder {made_by!r}, but MI-Zero scores it with the text tower of "
            f"`embedding.encoder` {encoder!r}. Fix: set `embedding.encoder` to {made_by!r} or re-embed "
            f"the slides with {encoder!r} (delete the bag)."
        )
    bag_sha = attrs.get("weights_sha256")
    if weights_sha256 and bag_sha and str(bag_sha) != weights_sha256:
        raise BagError(
            f"{path}: embedded with other {encoder!r} weights ({attrs.get('weights')!r}, sha256 "
            f"{str(bag_sha)[:12]}) than the configured ones (sha256 {weights_sha256[:12]}), so its "
            "features are not in the text tower's space. Fix: set `embedding.weights`/`embedding.seed` "
            "to what made the bags, or delete the bags and re-run the embedding stage."
        )
    if not bag_sha and logger is not None:
        logger.warning(
            "%s: no weights checksum in the bag (imported?); trusting `embedding.encoder`=%s and "
            "`embedding.weights` for MI-Zero",
            path,
            encoder,
        )
    feature_dim = attrs.get("feature_dim")
    if feature_dim is not None and int(feature_dim) != int(dim):
        raise BagError(
            f"{path}: {int(feature_dim)}-d features, but the {encoder!r} text tower gives {dim}-d "
            "embeddings. Fix: re-embed the slides with the configured encoder and weights."
        )


def image_weights_sha256(encoder: str, weights: str, seed: int) -> str:
    """Checksum of the image tower the configured weights give (what a bag made with them records)."""
    from ..embed.encoders import build_encoder

    enc = build_encoder(encoder, weights, seed)
    sha = enc.weights_sha256
    del enc
    return sha


def run_mizero(
    split_csv: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    out_parquet: str | Path | None,
    log=None,
    root: str | Path | None = None,
    attention_dir: str | Path | None = None,
) -> pd.DataFrame:
    """MI-Zero predictions of the test split -> ``predictions/MI-Zero_0.parquet`` (method ``MI-Zero``, shots 0);
    with ``attention_dir``, each test slide's instance cosine to the positive class (:func:`heatmap_scores`)."""
    from ..config import resolve_path
    from ..embed.text_towers import load_text_tower

    with logging_to(log) as logger:
        names, texts = class_names_texts(cfg)
        test = test_rows(read_split(split_csv, names))
        missing = [s for s in test["slide_id"] if s not in bag_paths]
        if missing:
            raise KeyError(f"no feature bag for test slides {missing[:5]}. Fix: run the embedding stage first.")
        emb = embed_settings(cfg["embedding"], root)
        settings = mizero_settings(cfg)
        encoder, weights, seed = str(emb["encoder"]), str(emb["weights"]), int(emb["seed"])
        prompt_file = resolve_path(settings["prompts"], root) if root else resolve_path(settings["prompts"])
        prompts = load_prompts(prompt_file)
        device = resolve_device(str((cfg.get("train") or {}).get("device") or "auto"))
        expected = image_weights_sha256(encoder, weights, seed)
        tower = load_text_tower(encoder, weights, seed, device)
        per_class = class_prompts(names, texts, prompts)
        class_emb = class_embeddings(tower.encode, per_class)
        logger.info(
            "MI-Zero: encoder %s (%s), %s prompts per class from %s, top-k %d",
            encoder,
            weights,
            [len(p) for p in per_class],
            prompt_file,
            int(settings["topk"]),
        )
        del tower
        probs, scores = [], []
        for sid in test["slide_id"]:
            path = bag_paths[sid]
            check_bag(path, encoder, expected, class_emb.shape[1], logger)
            feats, _, _ = read_usable_bag(path)
            if feats.shape[1] != class_emb.shape[1]:
                raise BagError(
                    f"{path}: {feats.shape[1]}-d features, but the {encoder!r} text tower gives "
                    f"{class_emb.shape[1]}-d embeddings. Fix: re-embed with the configured encoder."
                )
            probs.append(
                slide_probs(torch.from_numpy(feats).to(device), class_emb.to(device), int(settings["topk"]))
                .cpu()
                .numpy()
            )
            if attention_dir is not None:
                scores.append(
                    heatmap_scores(torch.from_numpy(feats).to(device), class_emb.to(device), int(settings["topk"]))
                    .float()
                    .cpu()
                    .numpy()
                )
        probs = np.stack(probs).astype(np.float64)
        logger.info("MI-Zero: %d test slides", len(test))
        if attention_dir is not None:
            from ..evaluate.attention import save_run_attention

            ids = test["slide_id"].tolist()
            n = len(
                save_run_attention(
                    attention_dir,
                    bag_paths,
                    ids,
                    scores,
                    probs[:, 1],
                    METHOD,
                    "instance_cosine",
                    logger,
                    labels=dict(zip(ids, test["label"])),
                    shots=0,
                    run=0,
                    seed=None,
                )
            )
            logger.info("MI-Zero: instance scores of %d/%d test slides -> %s", n, len(ids), attention_dir)
        return write_predictions([prediction_frame(METHOD, 0, 0, test, probs[:, 1], names)], out_parquet)
