"""The encoder registry: specs, every real weight-loading path (tiny checkpoints saved here), errors.

Nothing here downloads: hub behaviour is checked offline (``HF_HUB_OFFLINE=1`` in a fresh process
with an empty cache), and the large published architectures are checked on the meta device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import ClassVar

import pytest
import torch

from fiveflow.embed.encoders import EncoderError, build_encoder, open_clip_enc, spec, specs, uni
from fiveflow.embed.encoders import clip as clip_enc
from fiveflow.embed.encoders.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, hub_error
from fiveflow.embed.encoders.registry import MODULES

#: name -> (dim, input px for a 256 px tile, mean) from the model cards (see each module's docstring)
EXPECTED = {
    "demo": (512, 256, IMAGENET_MEAN),
    "resnet50-trunc": (1024, 256, IMAGENET_MEAN),
    "dsmil-resnet18": (512, 256, (0.0, 0.0, 0.0)),
    "uni": (1024, 224, IMAGENET_MEAN),
    "uni2-h": (1536, 224, IMAGENET_MEAN),
    "conch": (512, 448, CLIP_MEAN),
    "plip": (512, 224, CLIP_MEAN),
    "clip-vit-b16": (512, 224, CLIP_MEAN),
    "quiltnet-b32": (512, 224, CLIP_MEAN),
}


def _x(n: int = 2, px: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, px, px, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _features(enc, x):
    with torch.no_grad():
        return enc.model(x)


# ---------------------------------------------------------------- registry


def test_every_registered_encoder_has_a_sane_spec():
    listed = specs()
    assert list(listed) == list(MODULES) and set(EXPECTED) <= set(listed)
    for name, s in listed.items():
        assert s.name == name and s.summary and s.dim > 0
        assert len(s.preprocess.mean) == 3 and all(v > 0 for v in s.preprocess.std)
        if s.gated:
            assert s.default_weights and s.default_weights.startswith("hf-hub:")
        if name in EXPECTED:
            dim, px, mean = EXPECTED[name]
            assert (s.dim, s.preprocess.input_size(256), s.preprocess.mean) == (dim, px, mean), name
    assert spec("resnet18") is None and spec("uni").gated and spec("conch").requires == "conch"


# ---------------------------------------------------------------- timm / resnet / dsmil


def test_timm_checkpoint_in_any_wrapper_and_format(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("resnet18", num_classes=5).eval()  # classifier head is dropped on load
    sd = src.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "plain.safetensors")
    x = _x(px=64)
    with torch.no_grad():
        ref = src.forward_head(src.forward_features(x), pre_logits=True)
    for f in ("wrapped.pth", "plain.safetensors"):
        enc = build_encoder("resnet18", str(tmp_path / f))
        assert enc.dim == 512 and enc.weights == str(tmp_path / f)
        _close(_features(enc, x), ref)


def test_resnet50_trunc_from_a_full_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(2)
    tv = torchvision.models.resnet50(weights=None).eval()
    torch.save(tv.state_dict(), tmp_path / "r50.pth")  # layer4 and fc included: both are dropped
    enc = build_encoder("resnet50-trunc", str(tmp_path / "r50.pth"))
    x = _x(px=64)
    with torch.no_grad():
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        ref = torch.flatten(tv.avgpool(tv.layer3(tv.layer2(tv.layer1(h)))), 1)
    assert enc.dim == 1024 and ref.shape == (2, 1024)
    _close(_features(enc, x), ref)


def test_dsmil_resnet18_from_all_three_layouts(tmp_path):
    import torchvision

    torch.manual_seed(3)
    ref_model = torchvision.models.resnet18(weights=None, norm_layer=torch.nn.InstanceNorm2d).eval()
    sd = ref_model.state_dict()  # instance norm without affine: conv and fc weights only
    simclr = {
        f"features.{i}.{k.split('.', 1)[1]}": v
        for k, v in sd.items()
        for i, child in enumerate(("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"))
        if k.split(".", 1)[0] == child
    }
    simclr.update(
        {
            "l1.weight": torch.zeros(512, 512),
            "l1.bias": torch.zeros(512),
            "l2.weight": torch.zeros(256, 512),
            "l2.bias": torch.zeros(256),
        }
    )
    iclassifier = {f"feature_extractor.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    iclassifier.update({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)})
    x = _x(px=64)
    ref_model.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = ref_model(x)
    for fname, layout in (("model.pth", simclr), ("embedder.pth", iclassifier), ("plain.pth", sd)):
        torch.save(layout, tmp_path / fname)
        _close(_features(build_encoder("dsmil-resnet18", str(tmp_path / fname)), x), ref)


# ---------------------------------------------------------------- UNI / UNI2-h


def _tiny_uni(real):
    """The model card's architecture with every option kept but the sizes shrunk."""

    def architecture(name):
        arch, kw = real(name)
        return arch, {
            **kw,
            "img_size": 28 if kw["patch_size"] == 14 else 32,
            "depth": 2,
            "embed_dim": 48,
            "num_heads": 2,
        }

    return architecture


@pytest.mark.parametrize("name", ["uni", "uni2-h"])
def test_uni_loads_the_hub_pytorch_model_bin_file_or_folder(name, tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(uni, "architecture", _tiny_uni(uni.architecture))
    arch, kw = uni.architecture(name)
    torch.manual_seed(4)
    src = timm.create_model(arch, pretrained=False, num_classes=0, **kw).eval()
    (tmp_path / "repo").mkdir()
    torch.save(src.state_dict(), tmp_path / "repo" / "pytorch_model.bin")
    x = _x(px=kw["img_size"])
    with torch.no_grad():
        ref = src(x)
    for weights in (tmp_path / "repo", tmp_path / "repo" / "pytorch_model.bin"):
        enc = build_encoder(name, str(weights))
        assert enc.dim == 48 and enc.preprocess == spec(name).preprocess
        _close(_features(enc, x), ref)
    if name == "uni2-h":  # the options that make UNI2-h what it is are really in the model
        assert src.num_reg_tokens == 8 and src.no_embed_class and "reg_token" in src.state_dict()
    random = build_encoder(name, "random", seed=0)
    assert random.weights_sha256 == build_encoder(name, "random", seed=0).weights_sha256


@pytest.mark.parametrize("name,params_m", [("uni", 303.35), ("uni2-h", 681.39)])
def test_uni_model_card_architectures_give_the_documented_dims(name, params_m):
    import timm

    arch, kw = uni.architecture(name)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kw)
        out = model(torch.empty(1, 3, 224, 224))
    assert model.num_features == out.shape[-1] == spec(name).dim
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_m


def test_wrong_architecture_checkpoint_names_embedding_encoder(tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(uni, "architecture", _tiny_uni(uni.architecture))
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(EncoderError, match=r"embedding.encoder") as err:
        build_encoder("uni", str(tmp_path / "r18.pth"))
    assert "r18.pth" in str(err.value)


def test_missing_or_unreadable_files_and_no_default_are_actionable(tmp_path):
    with pytest.raises(EncoderError, match=r"embedding.weights") as err:
        build_encoder("uni", str(tmp_path / "nope" / "pytorch_model.bin"))
    assert "not found" in str(err.value)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match=r"broken.pth.*cannot read"):
        build_encoder("dsmil-resnet18", str(tmp_path / "broken.pth"))
    with pytest.raises(EncoderError, match=r"no public download.*embedding.weights"):
        build_encoder("dsmil-resnet18", "default")


# ---------------------------------------------------------------- hub failures


def test_hub_failures_offline_are_fast_and_name_the_fix(tmp_path):
    """A fresh process (huggingface_hub reads HF_HUB_OFFLINE at import) with an empty cache and no token."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_")) or k == "HF_HUB_DISABLE_TELEMETRY"
    }
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TOKENIZERS_PARALLELISM="false")
    script = """
import json, sys, time
from fiveflow.embed.encoders import EncoderError, build_encoder
out = {}
for name in sys.argv[1:]:
    t = time.perf_counter()
    try:
        build_encoder(name, "default")
        out[name] = ["built", 0.0]
    except EncoderError as exc:
        out[name] = [str(exc), time.perf_counter() - t]
print(json.dumps(out))
"""
    res = subprocess.run(
        [sys.executable, "-c", script, "uni", "plip", "quiltnet-b32"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, (msg, seconds) in out.items():
        assert "embedding.weights" in msg and "HF_TOKEN" in msg and spec(name).default_weights in msg, (name, msg)
        assert "cannot be reached" in msg and seconds < 30, (name, seconds)


def test_hub_error_explains_gated_and_unknown_models(monkeypatch):
    class GatedRepoError(OSError):
        pass

    class RepositoryNotFoundError(OSError):
        pass

    msg = str(hub_error("uni", "hf-hub:MahmoodLab/uni", GatedRepoError("401 Client Error: access is restricted")))
    assert "gated" in msg and "HF_TOKEN" in msg and "embedding.weights" in msg and "'MahmoodLab/uni'" in msg
    msg = str(hub_error("x", "hf-hub:org/typo", RepositoryNotFoundError("404 Client Error")))
    assert "check the id" in msg and "embedding.weights" in msg

    import timm

    def gated(*args, **kwargs):
        raise GatedRepoError("Cannot access gated repo for url https://huggingface.co/MahmoodLab/UNI2-h")

    monkeypatch.setattr(timm, "create_model", gated)
    with pytest.raises(EncoderError, match=r"gated.*HF_TOKEN"):
        build_encoder("uni2-h", "default")


# ---------------------------------------------------------------- CLIP (transformers)


def _tiny_clip_model(seed: int = 5):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=8,
            image_size=32,
        ),
        projection_dim=24,
    )
    torch.manual_seed(seed)
    return CLIPModel(cfg).eval()


def _image_features(model, x):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=x)
    return out if torch.is_tensor(out) else out.pooler_output


def test_clip_from_save_pretrained_folders_equals_get_image_features(tmp_path):
    from transformers import CLIPVisionModelWithProjection

    full = _tiny_clip_model()
    full.save_pretrained(tmp_path / "full")  # a hub snapshot of a CLIPModel (vinid/plip, openai/clip-*)
    vcfg = full.config.vision_config
    vcfg.projection_dim = 24
    vision = CLIPVisionModelWithProjection(vcfg)  # a vision-only save of the same weights
    vision.load_state_dict(
        {k: v for k, v in full.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    )
    vision.save_pretrained(tmp_path / "vision")
    x = _x(px=32)
    ref = _image_features(full, x)
    for name, weights in (
        ("plip", tmp_path / "full"),
        ("clip-vit-b16", tmp_path / "vision"),
        ("plip", tmp_path / "full" / "model.safetensors"),
    ):
        enc = build_encoder(name, str(weights))
        assert enc.dim == 24 and enc.preprocess.input_size(256) == 32 and enc.preprocess.interpolation == "bicubic"
        _close(_features(enc, x), ref)
    full.half().save_pretrained(tmp_path / "half")  # fp16 checkpoints load as fp32 (the pipeline autocasts)
    assert {p.dtype for p in build_encoder("plip", str(tmp_path / "half")).model.parameters()} == {torch.float32}


def test_clip_random_weights_build_offline_with_the_published_sizes(monkeypatch):
    assert (clip_enc.vision_config("plip").patch_size, clip_enc.vision_config("clip-vit-b16").patch_size) == (32, 16)
    real = clip_enc.vision_config("plip")
    assert (real.hidden_size, real.num_hidden_layers, real.image_size, real.projection_dim) == (768, 12, 224, 512)

    def tiny(name):
        return real.__class__(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=32,
            image_size=224,
            projection_dim=512,
        )

    monkeypatch.setattr(clip_enc, "vision_config", tiny)
    enc = build_encoder("plip", "random", seed=0)
    assert enc.dim == 512 and _features(enc, _x(1, 224)).shape == (1, 512)
    assert enc.weights_sha256 == build_encoder("plip", "random", seed=0).weights_sha256


def test_clip_folder_of_another_model_or_without_config_is_rejected(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=16,
        )
    ).save_pretrained(tmp_path / "vit")
    with pytest.raises(EncoderError, match=r"not CLIP.*embedding.encoder"):
        build_encoder("plip", str(tmp_path / "vit"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match=r"no config.json.*embedding.weights"):
        build_encoder("clip-vit-b16", str(tmp_path / "empty"))


# ---------------------------------------------------------------- open_clip


TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_open_clip(tmp_path_factory, monkeypatch):
    import open_clip

    cfg_dir = tmp_path_factory.mktemp("open_clip_cfg")
    (cfg_dir / "fiveflow-tiny-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg_dir)
    hub = open_clip_enc.MODELS["quiltnet-b32"][1]
    monkeypatch.setitem(open_clip_enc.MODELS, "quiltnet-b32", ("fiveflow-tiny-clip", hub))
    torch.manual_seed(6)
    return open_clip.create_model("fiveflow-tiny-clip").eval()


def test_open_clip_checkpoint_file_wrapped_or_folder(tmp_path, tiny_open_clip):
    sd = tiny_open_clip.state_dict()
    torch.save(sd, tmp_path / "epoch_1.pt")
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "train.pt")
    (tmp_path / "repo").mkdir()
    torch.save(sd, tmp_path / "repo" / "open_clip_pytorch_model.bin")
    (tmp_path / "repo" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    x = _x(px=32)
    with torch.no_grad():
        ref = tiny_open_clip.encode_image(x)
    for weights in ("epoch_1.pt", "train.pt", "repo"):
        enc = build_encoder("quiltnet-b32", str(tmp_path / weights))
        assert enc.dim == 16 and enc.preprocess.input_size(256) == 32 and enc.preprocess.mean == CLIP_MEAN
        _close(_features(enc, x), ref)
    torch.save({k: v for k, v in sd.items() if not k.startswith("visual.transformer")}, tmp_path / "partial.pt")
    with pytest.raises(EncoderError, match=r"embedding.encoder"):
        build_encoder("quiltnet-b32", str(tmp_path / "partial.pt"))


def test_quiltnet_is_open_clips_builtin_vit_b_32():
    """QuiltNet-B-32's open_clip_config.json (huggingface.co/wisdomik/QuiltNet-B-32) is the built-in ViT-B-32."""
    import open_clip
    from open_clip.transform import PreprocessCfg

    cfg = open_clip.get_model_config(open_clip_enc.MODELS["quiltnet-b32"][0])
    assert cfg["embed_dim"] == 512 and not cfg.get("quick_gelu")
    assert cfg["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
    pp = PreprocessCfg()
    assert (pp.mean, pp.std, pp.interpolation, pp.resize_mode) == (CLIP_MEAN, CLIP_STD, "bicubic", "shortest")


# ---------------------------------------------------------------- CONCH


def test_conch_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "conch", None)  # import conch -> ImportError, installed or not
    monkeypatch.delitem(sys.modules, "conch.open_clip_custom", raising=False)
    with pytest.raises(EncoderError, match=r"pip install git\+https://github.com/Mahmoodlab/CONCH.git"):
        build_encoder("conch", "default")


class _FakeVisual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 16, 16), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )
        self.attn_pool_contrast = torch.nn.Linear(64, 512)
        self.ln_contrast = torch.nn.LayerNorm(512)
        self.attn_pool_caption = torch.nn.Linear(64, 8)  # captioning only: not needed for the feature


class _FakeCoCa(torch.nn.Module):
    """Stands in for conch's CoCa: the same image-tower names, 512-d, and ``encode_image`` signature."""

    calls: ClassVar[list] = []

    def __init__(self, **cfg):
        super().__init__()
        self.visual = _FakeVisual()
        self.proj = torch.nn.Linear(512, 512)

    def encode_image(self, images, normalize=True, proj_contrast=True):
        self.calls.append((normalize, proj_contrast))
        v = self.visual
        out = v.ln_contrast(v.attn_pool_contrast(v.trunk(images)))
        out = self.proj(out) if proj_contrast else out
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


@pytest.fixture
def fake_conch(tmp_path, monkeypatch):
    """A stand-in ``conch`` package with the upstream loader's behaviour (non-strict load, hf_hub: prefix)."""
    (tmp_path / "conch_ViT-B-16.json").write_text(json.dumps({"embed_dim": 512, "custom_text": True}))
    created = []

    def create_model_from_pretrained(model_cfg, checkpoint_path=None, **kwargs):
        created.append((model_cfg, checkpoint_path))
        if checkpoint_path.startswith("hf_hub:"):
            raise OSError("We couldn't connect to 'https://huggingface.co' (offline mode is enabled)")
        model = _FakeCoCa()
        model.load_state_dict(torch.load(checkpoint_path, weights_only=True), strict=False)
        return model, None

    occ = types.ModuleType("conch.open_clip_custom")
    occ.CoCa, occ.create_model_from_pretrained = _FakeCoCa, create_model_from_pretrained
    factory = types.ModuleType("conch.open_clip_custom.factory")
    factory.CFG_DIR = tmp_path
    pkg = types.ModuleType("conch")
    pkg.open_clip_custom = occ
    for mod in (pkg, occ, factory):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return created


def test_conch_wrapper_loads_checks_and_calls_encode_image_unprojected(tmp_path, fake_conch):
    torch.manual_seed(7)
    src = _FakeCoCa().eval()
    sd = {k: v for k, v in src.state_dict().items() if "caption" not in k}  # as published: no captioning parts
    torch.save(sd, tmp_path / "pytorch_model.bin")
    x = _x(px=64)
    with torch.no_grad():
        ref = src.encode_image(x, proj_contrast=False, normalize=False)
    _FakeCoCa.calls.clear()
    enc = build_encoder("conch", str(tmp_path))  # the folder holding pytorch_model.bin
    _close(_features(enc, x), ref)
    assert fake_conch[-1] == ("conch_ViT-B-16", str(tmp_path / "pytorch_model.bin"))
    assert _FakeCoCa.calls == [(False, False)] and enc.dim == 512 and enc.preprocess.input_size(256) == 448
    torch.save({k: v for k, v in sd.items() if "ln_contrast" not in k}, tmp_path / "other.bin")  # loads silently
    with pytest.raises(EncoderError, match=r"image-tower weights missing.*embedding.encoder"):
        build_encoder("conch", str(tmp_path / "other.bin"))
    with pytest.raises(EncoderError, match=r"embedding.weights.*HF_TOKEN"):
        build_encoder("conch", "default")
    assert fake_conch[-1] == ("conch_ViT-B-16", "hf_hub:MahmoodLab/conch")
    assert build_encoder("conch", "random", seed=0).dim == 512


def test_conch_real_package_random_weights():
    pytest.importorskip("conch", reason="conch is installed from github.com/mahmoodlab/CONCH, not PyPI")
    enc = build_encoder("conch", "random", seed=0)
    assert enc.dim == 512 and _features(enc, _x(1, 448)).shape == (1, 512)


def test_weights_preflight_says_where_weights_come_from(tmp_path, monkeypatch):
    import huggingface_hub

    from fiveflow.embed.encoders.registry import check_weights

    assert "random" in check_weights("demo", "default")
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    assert str(ckpt) in check_weights("resnet50-trunc", str(ckpt))
    with pytest.raises(EncoderError, match="embedding.weights"):
        check_weights("resnet50-trunc", str(tmp_path / "absent.pt"))

    def not_cached(*a, **k):
        raise FileNotFoundError("not in cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(EncoderError, match="HF_TOKEN"):
        check_weights("uni", "default")  # gated, not cached, no token: the jobs would all fail
    assert "downloads it" in check_weights("resnet50-trunc", "default")  # public: jobs will download
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert "downloads it" in check_weights("uni", "default")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **k: f"/cache/{repo}")
    monkeypatch.delenv("HF_TOKEN")
    assert "local hub cache" in check_weights("uni", "default")
