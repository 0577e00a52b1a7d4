"""What every encoder module shares: the ``Encoder`` record, preprocessing, weight sources, checksums.

An encoder module (one per encoder, see ``registry.py``) builds a ``torch.nn.Module`` that maps a
normalised float batch ``[B, 3, H, W]`` to features ``[B, dim]``, and declares the preprocessing from
its model card (resize, centre crop, mean/std). Weights come from one of:

- ``random``: seeded random weights (offline demos and tests);
- a local path: a checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``) or a saved model folder;
- ``hf-hub:<org>/<name>``: the Hugging Face hub (needs network; gated models need ``HF_TOKEN``);
- ``default``: the encoder's own published weights (a hub id, or a file the user must provide).

Every failure to get weights raises ``EncoderError`` with a message naming ``embedding.weights``
(and ``HF_TOKEN`` where relevant), so a job on an offline cluster node stops in seconds with the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HUB_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")


class EncoderError(RuntimeError):
    """The encoder cannot be built; the message says which config key or variable to set."""


@dataclass(frozen=True)
class Preprocess:
    """How a tile becomes the encoder's input, from the encoder's model card.

    The tile (``patch_size`` px at ``target_mpp``) is resized to ``size`` px (``None``: kept at the
    tile size), then centre-cropped to ``crop`` px (``None``: no crop), then scaled to [0, 1] and
    normalised with ``mean``/``std``. Shrinking always averages (area); enlarging uses
    ``interpolation``.
    """

    size: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")

    def resize_to(self, tile_px: int) -> int:
        return int(self.size or tile_px)

    def input_size(self, tile_px: int) -> int:
        return int(self.crop or self.resize_to(tile_px))


@dataclass(frozen=True)
class EncoderSpec:
    """A registry entry: what ``fiveflow encoders`` lists and what the docs table shows."""

    name: str
    summary: str
    dim: int
    preprocess: Preprocess
    default_weights: str | None = None  # what `weights: default` means (a hub id), None: user supplies a file
    gated: bool = False
    requires: str | None = None  # an optional package the encoder needs


@dataclass
class Encoder:
    """A ready encoder: ``model`` maps normalised ``[B, 3, H, W]`` float to ``[B, dim]``."""

    name: str
    model: torch.nn.Module
    preprocess: Preprocess
    dim: int
    weights: str
    weights_sha256: str
    family: str = "timm"

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess.std


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Checksum of the parameters and buffers (names, shapes and bytes), independent of file format."""
    h = hashlib.sha256()
    for key, val in sorted(model.state_dict().items()):
        h.update(key.encode())
        t = val.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def finish(name: str, model: torch.nn.Module, preprocess: Preprocess, dim: int, weights: str, family: str) -> Encoder:
    """Put ``model`` in inference mode (eval, no grads) and checksum its weights."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Encoder(
        name=name,
        model=model,
        preprocess=preprocess,
        dim=int(dim),
        weights=weights,
        weights_sha256=state_dict_sha256(model),
        family=family,
    )


def is_hub(weights: str) -> bool:
    return weights.startswith(HUB_PREFIX)


def hub_id(weights: str) -> str:
    return weights[len(HUB_PREFIX) :]


def resolve_weights(name: str, weights: str, default: str | None, how_to_get: str = "") -> str:
    """Replace ``default`` by the encoder's published weights; check local paths exist."""
    if weights == "default":
        if not default:
            raise EncoderError(
                f"encoder {name!r} has no public download. Fix: set `embedding.weights` to the checkpoint file"
                + (f" ({how_to_get})" if how_to_get else "")
                + ", or to `random` for a smoke test."
            )
        weights = default
    if weights == "random" or is_hub(weights):
        return weights
    path = Path(os.path.expanduser(weights))
    if not path.exists():
        raise EncoderError(
            f"encoder {name!r}: weights not found at {path}. Fix: set `embedding.weights` to an existing checkpoint "
            "file or model folder, `hf-hub:<org>/<model>`, `default`, or `random`."
        )
    return str(path)


def hub_error(name: str, weights: str, exc: BaseException) -> EncoderError:
    """A short, actionable error for a hub download that failed (offline node, gated model, typo)."""
    text = f"{type(exc).__name__}: {exc}"
    kind = type(exc).__name__
    if "Gated" in kind or "401" in text or "403" in text or "gated" in text.lower():
        why = (
            f"the model {hub_id(weights)!r} is gated: accept its terms on huggingface.co, then export HF_TOKEN "
            "(a token with access) before running"
        )
    elif "RepositoryNotFound" in kind or "404" in text:
        why = f"the hub has no model {hub_id(weights)!r} (check the id)"
    else:
        why = "the hub cannot be reached from this machine (offline node or no network)"
    return EncoderError(
        f"encoder {name!r}: could not download {weights!r}: {why}. Fix: download the weights on a machine with access "
        "(`huggingface-cli download <id>`), copy them here and set `embedding.weights` to the local file or folder; "
        f"or set HF_TOKEN for gated models. [{text.splitlines()[0][:200]}]"
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from ``state_dict``/``model`` containers."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        if len(found) != 1:
            raise EncoderError(
                f"{path}: expected one checkpoint file in the folder, found {[p.name for p in found]}. "
                "Fix: set `embedding.weights` to the file itself."
            )
        path = found[0]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except PermissionError:
        raise EncoderError(
            f"{path}: cannot read this checkpoint: permission denied. Fix: check its permissions "
            f"(ls -l {path}): the user running fiveflow needs read access."
        ) from None
    except Exception as exc:  # truncated download, pickle with code objects, wrong file
        raise EncoderError(
            f"{path}: cannot read this checkpoint ({type(exc).__name__}: {str(exc)[:200]}). "
            "Fix: re-download it, or set `embedding.weights` to a .pt/.pth/.safetensors file."
        ) from None
    for key in ("state_dict", "model", "model_state_dict", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderError(f"{path}: not a state dict of tensors. Fix: save `model.state_dict()`.")
    return dict(sd)


def checkpoint_file(path: str | Path, names: tuple[str, ...] = ("pytorch_model.bin",)) -> Path:
    """The first of ``names`` inside ``path`` when it is a (hub snapshot) folder, else ``path`` itself."""
    p = Path(path)
    if p.is_dir():
        for n in names:
            if (p / n).is_file():
                return p / n
    return p


def strip_prefixes(sd: dict[str, torch.Tensor], prefixes=("module.", "model.", "backbone.", "encoder.")) -> dict:
    """Remove wrapper prefixes (DataParallel ``module.``, Lightning ``model.``) shared by every key."""
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p) :]: v for k, v in sd.items()}
    return sd


def load_into(
    name: str,
    model: torch.nn.Module,
    sd: dict[str, torch.Tensor],
    source: str,
    ignore=("fc.", "head.", "classifier.", "head_drop."),
) -> None:
    """Load ``sd`` into ``model`` strictly, except for classification heads the encoder drops."""
    sd = {k: v for k, v in strip_prefixes(sd).items() if not k.startswith(tuple(ignore))}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise EncoderError(
            f"{source}: checkpoint does not fit encoder {name!r} (missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"wrong shape {wrong[:4]}). Fix: set `embedding.encoder` to the architecture the file was saved from."
        )
    model.load_state_dict(sd, strict=False)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build random weights reproducibly without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
