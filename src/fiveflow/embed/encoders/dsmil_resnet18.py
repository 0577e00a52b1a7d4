"""DSMIL's SimCLR ResNet18 (Li et al. 2021): the 512-d features the FiVE paper trains on.

Architecture as in DSMIL's ``compute_feats.py``: torchvision ResNet18 with ``InstanceNorm2d`` (no
affine, no running statistics) in place of batch norm and the classifier removed. Its input is the
tile scaled to [0, 1] with no mean/std normalisation (DSMIL applies only ``ToTensor``); DSMIL tiled
TCGA at 20x in 224 px tiles, so use ``tiling.target_mpp: 0.5`` and ``tiling.patch_size: 224``.

DSMIL publishes no hub copy: set ``embedding.weights`` to one of its files, in any of three layouts:
- the SimCLR checkpoint (``simclr/runs/*/checkpoints/model.pth``: ``features.N.*`` + ``l1``/``l2``);
- an "embedder" saved from ``IClassifier`` (``feature_extractor.*`` + ``fc.*``, e.g. ``embedder.pth``);
- a plain torchvision ResNet18 state dict.
"""

from __future__ import annotations

import torch

from .base import EncoderError, EncoderSpec, Preprocess, finish, load_into, load_state_dict, resolve_weights, seeded

PREPROCESS = Preprocess(size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
SPECS = {
    "dsmil-resnet18": EncoderSpec(
        "dsmil-resnet18",
        "DSMIL's SimCLR ResNet18 with instance norm (512-d, the FiVE paper's features)",
        512,
        PREPROCESS,
        default_weights=None,
    )
}
HOW = "DSMIL's embedder, e.g. `embedder/tcga-lung/embedder.pth` or `simclr/runs/<run>/checkpoints/model.pth`"
#: ResNet children in the order DSMIL's SimCLR wraps them as ``features = Sequential(*children[:-1])``
_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")


def architecture() -> torch.nn.Module:
    import torchvision

    model = torchvision.models.resnet18(weights=None, norm_layer=torch.nn.InstanceNorm2d)
    model.fc = torch.nn.Identity()
    return model


def to_resnet_keys(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Translate DSMIL's SimCLR (``features.N.``) or IClassifier (``feature_extractor.``) keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("l1.", "l2.", "fc.")):  # SimCLR projection head / instance classifier
            continue
        if k.startswith("feature_extractor."):
            k = k[len("feature_extractor.") :]
        elif k.startswith("features."):
            idx, _, rest = k[len("features.") :].partition(".")
            if not idx.isdigit() or int(idx) >= len(_CHILDREN):
                raise EncoderError(f"{source}: unexpected SimCLR key {k!r}. Fix: point `embedding.weights` at {HOW}.")
            k = f"{_CHILDREN[int(idx)]}.{rest}"
        out[k] = v
    return out


def build(name: str, weights: str, seed: int):
    weights = resolve_weights(name, weights, None, HOW)
    with seeded(seed):
        model = architecture()
    if weights != "random":
        load_into(name, model, to_resnet_keys(load_state_dict(weights), weights), weights)
    return finish(name, model, PREPROCESS, 512, weights, "dsmil")
