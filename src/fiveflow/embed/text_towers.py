"""Text towers of the vision-language encoders: prompts -> embeddings in the image features' space.

A bag made by ``plip``/``clip-vit-b16`` holds projected CLIP image embeddings
(``get_image_features``), one made by ``quiltnet-b32`` holds open_clip's ``encode_image``. The text
tower returned here is the other half of the *same* model, so ``encode(texts)`` gives the projected
text embeddings (``get_text_features`` / ``encode_text``, not normalised) that those image features
are compared with by cosine (zero-shot, MI-Zero).

Weights follow the image side's rules (``encoders.base.resolve_weights``, same errors):

- ``random``: the published text-tower sizes, seeded. For open_clip the whole model is built under
  the seed exactly as the image encoder builds it, so image and text halves are one model. The
  transformers image encoder builds its vision tower alone; the text tower is then built alone under
  the same seed (random weights are for smoke tests only). Tokens come from the BPE vocabulary
  open_clip ships (the OpenAI CLIP vocabulary both model families use); without open_clip this fails.
- a local folder/file: the text half of the same checkpoint, with the folder's own tokenizer files
  for transformers CLIP (``vocab.json`` + ``merges.txt`` or ``tokenizer.json``).
- ``hf-hub:<id>`` / ``default``: the hub repo (network or the local hub cache).

CONCH is not supported: its bags hold the image embedding *before* the contrastive projection
(``proj_contrast=False``), which is not in its text tower's space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the encoders are imported on use: config validation imports this module
    import torch

#: encoders whose bag features live in the space of a text tower fiveflow can load
TEXT_TOWER_ENCODERS = ("plip", "clip-vit-b16", "quiltnet-b32")
_NOT_SUPPORTED = {
    "conch": "its bags hold CONCH's image embedding before the contrastive projection (proj_contrast=False), "
    "which is not in the text tower's space, and its package is not installable here",
}


def has_text_tower(encoder_name: str) -> bool:
    """True when bags of ``encoder_name`` can be scored against text (zero-shot, MI-Zero)."""
    return str(encoder_name) in TEXT_TOWER_ENCODERS


class TextTower:
    """``encode(texts) -> [T, dim]`` projected text embeddings (float32, on CPU, not normalised)."""

    def __init__(
        self,
        name: str,
        weights: str,
        model: torch.nn.Module,
        tokenize: Callable[[list[str]], dict],
        forward: Callable[..., torch.Tensor],
        device: torch.device,
    ) -> None:
        self.name, self.weights, self.model = name, weights, model.to(device).eval()
        self._tokenize, self._forward, self.device = tokenize, forward, device
        for p in self.model.parameters():
            p.requires_grad_(False)

    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        import torch

        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("no texts to encode")
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = {k: v.to(self.device) for k, v in self._tokenize(texts[i : i + batch_size]).items()}
                out.append(self._forward(**batch).float().cpu())
        return torch.cat(out)


def load_text_tower(
    encoder_name: str, weights: str = "default", seed: int = 0, device: str | torch.device = "cpu"
) -> TextTower:
    """The text tower matching the image features of ``encoder_name`` built with ``weights``/``seed``."""
    import torch

    from .encoders.base import EncoderError

    name, weights = str(encoder_name), str(weights)
    if name in _NOT_SUPPORTED:
        raise EncoderError(
            f"encoder {name!r} has no supported text tower: {_NOT_SUPPORTED[name]}. Fix: set "
            "`mizero.enabled: false`, or `embedding.encoder` to plip, clip-vit-b16 or quiltnet-b32."
        )
    if not has_text_tower(name):
        raise EncoderError(
            f"encoder {name!r} has no text tower (an image-only model). Fix: set `mizero.enabled: "
            "false`, or `embedding.encoder` to plip, clip-vit-b16 or quiltnet-b32."
        )
    device = torch.device(device)
    if name in ("plip", "clip-vit-b16"):
        return _transformers_clip(name, weights, int(seed), device)
    return _open_clip_tower(name, weights, int(seed), device)


# ---------------------------------------------------------------- transformers CLIP


def text_config(name: str):
    """The published CLIP ViT-B text tower (``config.json`` of vinid/plip and openai/clip-vit-base-patch16)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        projection_dim=512,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def _bundled_bpe(name: str, context_length: int) -> Callable[[list[str]], dict]:
    """open_clip's bundled OpenAI CLIP BPE tokenizer (the only one available offline for random weights)."""
    from .encoders.base import EncoderError

    try:
        import open_clip
    except ImportError:
        raise EncoderError(
            f"encoder {name!r} with `embedding.weights: random` needs open_clip's bundled CLIP "
            "vocabulary to tokenize prompts. Fix: `pip install open_clip_torch==3.3.0`, or set "
            "`embedding.weights` to a model folder with tokenizer files."
        ) from None
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
    return lambda texts: {"input_ids": tok(texts)}


def _clip_text_model(name: str, source: str):
    """``CLIPTextModelWithProjection`` from a folder or hub id holding a full ``CLIPModel``."""
    import torch
    from transformers import AutoConfig, CLIPTextModelWithProjection

    from .encoders.base import EncoderError
    from .encoders.clip import _quiet_load_report

    cfg = AutoConfig.from_pretrained(source)
    if cfg.model_type != "clip":
        raise EncoderError(
            f"{source}: a {cfg.model_type!r} model has no CLIP text tower (a full CLIPModel folder "
            "is needed). Fix: set `embedding.weights` to the folder of the whole model (image and "
            "text towers), or `mizero.enabled: false`."
        )
    tcfg = cfg.text_config
    tcfg.projection_dim = cfg.projection_dim
    try:
        with _quiet_load_report():
            model, info = CLIPTextModelWithProjection.from_pretrained(
                source, config=tcfg, dtype=torch.float32, output_loading_info=True
            )
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise EncoderError(
            f"{source}: text tower does not fit encoder {name!r} ({str(exc).splitlines()[0][:200]}). "
            "Fix: set `embedding.encoder` to the architecture the folder was saved from."
        ) from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise EncoderError(
            f"{source}: no complete CLIP text tower in this checkpoint (missing "
            f"{sorted(info.get('missing_keys', []))[:4]}). Fix: set `embedding.weights` to the folder "
            "of the whole CLIP model (image and text towers), or `mizero.enabled: false`."
        )
    return model


def _hf_tokenizer(name: str, source: str, max_length: int) -> Callable[[list[str]], dict]:
    from transformers import AutoTokenizer

    from .encoders.base import EncoderError

    fix = (
        "Fix: copy the model's tokenizer files (vocab.json + merges.txt or tokenizer.json, tokenizer_config.json) "
        "next to its config.json."
    )
    folder = Path(source)
    if folder.is_dir() and not (
        (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    ):
        raise EncoderError(f"encoder {name!r}: no tokenizer in {source}. {fix}")
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # unreadable tokenizer files
        raise EncoderError(
            f"encoder {name!r}: no tokenizer in {source} ({type(exc).__name__}: {str(exc)[:150]}). {fix}"
        ) from None
    if len(tok) <= len(set(tok.all_special_ids)):  # transformers 5 builds an empty-vocabulary tokenizer silently
        raise EncoderError(f"encoder {name!r}: the tokenizer in {source} has no vocabulary. {fix}")
    return lambda texts: dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def _transformers_clip(name: str, weights: str, seed: int, device: torch.device) -> TextTower:
    from transformers import CLIPTextModelWithProjection

    from .encoders import clip as clip_enc
    from .encoders.base import EncoderError, hub_error, hub_id, is_hub, resolve_weights, seeded

    weights = resolve_weights(name, weights, clip_enc.HUB[name], clip_enc.HOW)
    if weights == "random":
        with seeded(seed):
            model = CLIPTextModelWithProjection(text_config(name))
        tokenize = _bundled_bpe(name, int(model.config.max_position_embeddings))
    else:
        source = hub_id(weights) if is_hub(weights) else clip_enc.local_folder(name, weights)
        try:
            model = _clip_text_model(name, source)
            tokenize = _hf_tokenizer(name, source, int(model.config.max_position_embeddings))
        except EncoderError:
            raise
        except Exception as exc:  # failed download, unreadable folder
            if is_hub(weights):
                raise hub_error(name, weights, exc) from None
            raise EncoderError(
                f"encoder {name!r}: cannot load the text tower from {source} ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Fix: set `embedding.weights` to {clip_enc.HOW}."
            ) from None

    def forward(input_ids, attention_mask=None):
        return model(input_ids=input_ids, attention_mask=attention_mask).text_embeds

    return TextTower(name, weights, model, tokenize, forward, device)


# ---------------------------------------------------------------- open_clip


def _load_text_half(name: str, model: torch.nn.Module, path: Path) -> None:
    """Load every non-image weight (token embedding, transformer, projection) of a full open_clip checkpoint."""
    from .encoders.base import EncoderError, load_state_dict, strip_prefixes

    sd = strip_prefixes(load_state_dict(path), ("module.",))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("visual.")}
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise EncoderError(
            f"{path}: no complete text tower for encoder {name!r} (missing {missing[:4]}, wrong shape "
            f"{wrong[:4]}). Fix: set `embedding.weights` to the whole open_clip checkpoint (image and "
            "text towers), or `mizero.enabled: false`."
        )
    model.load_state_dict({k: sd[k] for k in own}, strict=False)


def _open_clip_tower(name: str, weights: str, seed: int, device: torch.device) -> TextTower:
    from .encoders import open_clip_enc
    from .encoders.base import EncoderError, checkpoint_file, hub_error, is_hub, resolve_weights, seeded

    arch, default = open_clip_enc.MODELS[name]
    open_clip = open_clip_enc._open_clip()
    weights = resolve_weights(name, weights, default, "an open_clip checkpoint such as `open_clip_pytorch_model.bin`")
    if is_hub(weights):
        try:
            model = open_clip.create_model(weights, require_pretrained=True)
            tok = open_clip.get_tokenizer(weights)
        except Exception as exc:
            raise hub_error(name, weights, exc) from None
    else:
        with seeded(seed):  # the same construction as the image encoder: one model, both halves
            model = open_clip.create_model(arch)
        if weights != "random":
            _load_text_half(name, model, checkpoint_file(weights, open_clip_enc._FILES))
        tok = open_clip.get_tokenizer(arch)
    if not hasattr(model, "encode_text"):
        raise EncoderError(f"encoder {name!r}: {type(model).__name__} has no text tower. Fix: `mizero.enabled: false`.")
    model.eval()

    def forward(input_ids):
        return model.encode_text(input_ids)

    return TextTower(name, weights, model, lambda texts: {"input_ids": tok(texts)}, forward, device)
