"""MI-Zero zero-shot baseline: prompt ensembling, top-k pooling, text towers, bag checks, config."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fiveflow.baselines import mizero
from fiveflow.config import ConfigError, validate_config
from fiveflow.embed import text_towers
from fiveflow.embed.bags import BagError, write_bag
from fiveflow.embed.encoders import EncoderError, build_encoder, open_clip_enc

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _norm(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


# ---------------------------------------------------------------- (a) the numbers


def test_prompt_ensembling_and_topk_pooling_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    prompts = [["a", "b", "c"], ["d", "e"]]
    table = {p: rng.normal(size=6) * (i + 1) for i, p in enumerate("abcde")}  # unnormalised, different scales

    def encode(texts):
        return torch.tensor(np.stack([table[t] for t in texts]), dtype=torch.float32)

    got = mizero.class_embeddings(encode, prompts).numpy()
    ref = _norm([_norm([table[p] for p in ps]).mean(0) for ps in prompts])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert not np.allclose(got[0], _norm(np.mean([table[p] for p in "abc"], 0)), atol=1e-3)  # normalise first

    feats = rng.normal(size=(7, 6)) * rng.uniform(0.5, 3, size=(7, 1))
    cos = _norm(feats) @ ref.T
    for k, kk in ((3, 3), (50, 7), (1, 1)):
        pooled = np.sort(cos, axis=0)[::-1][:kk].mean(0)
        prob = np.exp(100 * pooled) / np.exp(100 * pooled).sum()
        f, c = torch.tensor(feats, dtype=torch.float32), torch.tensor(ref, dtype=torch.float32)
        np.testing.assert_allclose(mizero.instance_scores(f, c).numpy(), cos, atol=1e-5)
        np.testing.assert_allclose(mizero.topk_pool(mizero.instance_scores(f, c), k).numpy(), pooled, atol=1e-5)
        np.testing.assert_allclose(mizero.slide_probs(f, c, k).numpy(), prob, atol=1e-4)
    f, c = torch.tensor(feats, dtype=torch.float32), torch.tensor(ref, dtype=torch.float32)
    np.testing.assert_allclose(mizero.heatmap_scores(f, c, 3, "positive").numpy(), cos[:, 1], atol=1e-5)
    pred = int(np.argmax(np.sort(cos, axis=0)[::-1][:3].mean(0)))
    np.testing.assert_allclose(mizero.heatmap_scores(f, c, 3, "predicted").numpy(), cos[:, pred], atol=1e-5)


def test_prompt_file_and_fallback_to_config_name_and_text(tmp_path):
    ps = mizero.load_prompts(PROJECT_ROOT / "resources/prompts/mizero-lung.yaml")
    assert len(ps.templates) >= 20 and {"LUAD", "LUSC"} <= set(ps.classnames)
    assert "lung adenocarcinoma" in ps.classnames["LUAD"] and "squamous cell carcinoma" in ps.classnames["LUSC"]
    out = mizero.class_prompts(["LUAD", "XYZ"], ["luad text", "xyz text"], ps)
    assert len(out[0]) == len(ps.templates) * len(ps.classnames["LUAD"])
    assert "a histopathological image of lung adenocarcinoma." in out[0]
    assert out[1] == [t.replace("CLASSNAME", "XYZ") for t in ps.templates] + ["xyz text"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"templates": ["an image of tumour."], "classes": {}}))
    with pytest.raises(ValueError, match="CLASSNAME"):
        mizero.load_prompts(bad)
    with pytest.raises(FileNotFoundError, match="mizero.prompts"):
        mizero.load_prompts(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- (b) text towers


def _tiny_clip_folder(path: Path, seed: int = 3):
    """A tiny CLIPModel saved with save_pretrained plus CLIP BPE tokenizer files with a 58-token vocabulary."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz.,")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: len(vocab) + i for i, c in enumerate(chars)})
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    tok.save_pretrained(path)
    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=24,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=8,
            image_size=32,
        ),
        projection_dim=12,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(path)
    return model, tok


def _out(x):
    return x if torch.is_tensor(x) else x.pooler_output


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "plip-tiny"
    model, tok = _tiny_clip_folder(folder)
    return folder, model, tok


def test_clip_text_tower_equals_get_text_features_and_reproduces_clip_logits(tiny_clip):
    folder, model, tok = tiny_clip
    texts = ["an image of luad.", "squamous cell carcinoma", "x"]
    tower = text_towers.load_text_tower("plip", str(folder), seed=0)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = _out(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    got = tower.encode(texts)
    assert got.shape == (3, 12)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)

    image = build_encoder("plip", str(folder))  # the pipeline's own image-side loading of the same folder
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = image.model(x)
        logits = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x
        ).logits_per_image
    ours = model.logit_scale.exp() * mizero.instance_scores(img, got)
    torch.testing.assert_close(ours, logits, atol=1e-4, rtol=1e-4)


def test_clip_folder_without_text_tower_or_tokenizer_is_refused(tmp_path, tiny_clip):
    import shutil

    from transformers import CLIPVisionModelWithProjection

    folder, model, _ = tiny_clip
    vcfg = model.config.vision_config
    vcfg.projection_dim = 12
    vision = CLIPVisionModelWithProjection(vcfg)
    vision.save_pretrained(tmp_path / "vision")
    with pytest.raises(EncoderError, match=r"no CLIP text tower.*embedding.weights"):
        text_towers.load_text_tower("plip", str(tmp_path / "vision"))
    shutil.copytree(folder, tmp_path / "notok")
    for f in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "notok" / f).unlink(missing_ok=True)
    with pytest.raises(EncoderError, match=r"no tokenizer.*tokenizer files"):
        text_towers.load_text_tower("plip", str(tmp_path / "notok"))
    with pytest.raises(EncoderError, match=r"weights not found.*embedding.weights"):
        text_towers.load_text_tower("plip", str(tmp_path / "nowhere"))


def test_random_clip_text_tower_is_seeded_and_uses_the_bundled_vocabulary(monkeypatch):
    real = text_towers.text_config("plip")
    assert (real.vocab_size, real.hidden_size, real.num_hidden_layers, real.projection_dim) == (49408, 512, 12, 512)

    def tiny(name):
        return real.__class__(
            vocab_size=49408,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=512,
            bos_token_id=49406,
            eos_token_id=49407,
        )

    monkeypatch.setattr(text_towers, "text_config", tiny)
    a = text_towers.load_text_tower("clip-vit-b16", "random", seed=0).encode(["lung adenocarcinoma", "LUSC"])
    b = text_towers.load_text_tower("clip-vit-b16", "random", seed=0).encode(["lung adenocarcinoma", "LUSC"])
    c = text_towers.load_text_tower("clip-vit-b16", "random", seed=1).encode(["lung adenocarcinoma", "LUSC"])
    assert a.shape == (2, 512) and torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])


TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_open_clip(tmp_path_factory, monkeypatch):
    import open_clip

    cfg_dir = tmp_path_factory.mktemp("open_clip_cfg")
    (cfg_dir / "fiveflow-tiny-mizero.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg_dir)
    monkeypatch.setitem(
        open_clip_enc.MODELS, "quiltnet-b32", ("fiveflow-tiny-mizero", open_clip_enc.MODELS["quiltnet-b32"][1])
    )
    torch.manual_seed(7)
    return open_clip.create_model("fiveflow-tiny-mizero").eval()


def test_open_clip_text_tower_checkpoint_and_random_pair(tmp_path, tiny_open_clip):
    import open_clip

    torch.save(tiny_open_clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    texts = ["an image of adenocarcinoma.", "squamous cell carcinoma"]
    tok = open_clip.get_tokenizer("fiveflow-tiny-mizero")
    with torch.no_grad():
        ref = tiny_open_clip.encode_text(tok(texts))
    torch.testing.assert_close(text_towers.load_text_tower("quiltnet-b32", str(tmp_path)).encode(texts), ref)
    # random: the text tower is the other half of the very model the image encoder was cut from
    tower = text_towers.load_text_tower("quiltnet-b32", "random", seed=4)
    image = build_encoder("quiltnet-b32", "random", seed=4)
    assert image.weights_sha256 == mizero.image_weights_sha256("quiltnet-b32", "random", 4)
    for k, v in image.model.state_dict().items():
        assert torch.equal(v, tower.model.visual.state_dict()[k])
    torch.save(
        {k: v for k, v in tiny_open_clip.state_dict().items() if k.startswith("visual.")}, tmp_path / "visual_only.pt"
    )
    with pytest.raises(EncoderError, match=r"no complete text tower.*mizero.enabled"):
        text_towers.load_text_tower("quiltnet-b32", str(tmp_path / "visual_only.pt"))


def test_encoders_without_a_text_tower_are_refused_clearly():
    assert text_towers.has_text_tower("plip") and text_towers.has_text_tower("quiltnet-b32")
    assert not text_towers.has_text_tower("demo") and not text_towers.has_text_tower("conch")
    with pytest.raises(EncoderError, match=r"'demo' has no text tower.*mizero.enabled"):
        text_towers.load_text_tower("demo", "random")
    with pytest.raises(EncoderError, match=r"'conch' has no supported text tower.*proj_contrast"):
        text_towers.load_text_tower("conch", "default")


# ---------------------------------------------------------------- (c) end to end on synthetic bags


def _cfg(folder, prompts, topk=5):
    return {
        "classes": [{"name": "LUAD", "text": "luad text"}, {"name": "LUSC", "text": "lusc text"}],
        "embedding": {"encoder": "plip", "weights": str(folder), "seed": 0},
        "mizero": {"enabled": True, "topk": topk, "prompts": str(prompts)},
        "train": {"device": "cpu"},
    }


def test_run_mizero_classifies_bags_built_near_class_texts_and_refuses_foreign_bags(tmp_path, tiny_clip):
    folder, _, _ = tiny_clip
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        yaml.safe_dump(
            {
                "templates": ["an image of CLASSNAME.", "CLASSNAME."],
                "classes": {"LUAD": ["adenocarcinoma"], "LUSC": ["squamous"]},
            }
        )
    )
    cfg = _cfg(folder, prompts)
    ps = mizero.load_prompts(prompts)
    tower = text_towers.load_text_tower("plip", str(folder))
    class_emb = mizero.class_embeddings(tower.encode, mizero.class_prompts(["LUAD", "LUSC"], ["", ""], ps)).numpy()
    sha = build_encoder("plip", str(folder)).weights_sha256
    attrs = {"encoder": "plip", "weights": str(folder), "weights_sha256": sha, "feature_dim": 12}
    rng = np.random.default_rng(0)
    rows, bags = [], {}
    for i in range(6):
        label = i % 2
        n = 40
        # background instances: random directions; 8 instances close to the slide's class text
        feats = rng.normal(size=(n, 12))
        feats[:8] = class_emb[label] * 3 + rng.normal(scale=0.05, size=(8, 12))
        sid = f"s{i}"
        bags[sid] = str(write_bag(tmp_path / f"{sid}.h5", feats, np.zeros((n, 2)), attrs))
        rows.append({"slide_id": sid, "patient_id": f"p{i}", "label": ["LUAD", "LUSC"][label], "split": "test"})
    rows.append({"slide_id": "t0", "patient_id": "p9", "label": "LUAD", "split": "train"})
    split = tmp_path / "split.csv"
    pd.DataFrame(rows).to_csv(split, index=False)
    out = tmp_path / "predictions" / "MI-Zero_0.parquet"
    pred = mizero.run_mizero(split, bags, cfg, out)
    assert out.is_file() and list(pd.read_parquet(out)["slide_id"]) == [f"s{i}" for i in range(6)]
    assert set(pred["method"]) == {"MI-Zero"} and set(pred["shots"]) == {0} and set(pred["run"]) == {0}
    assert (pred["pred"] == pred["label"]).all()
    assert (pred.loc[pred["label"] == "LUSC", "prob"] > 0.5).all() and (
        pred.loc[pred["label"] == "LUAD", "prob"] < 0.5
    ).all()

    # a bag of another encoder, and one of the same encoder with other weights, are refused with the fix
    write_bag(tmp_path / "s0.h5", rng.normal(size=(5, 12)), np.zeros((5, 2)), {**attrs, "encoder": "demo"})
    with pytest.raises(BagError, match=r"s0.h5: made by encoder 'demo'.*embedding.encoder"):
        mizero.run_mizero(split, bags, cfg, tmp_path / "other.parquet")
    write_bag(tmp_path / "s0.h5", rng.normal(size=(5, 12)), np.zeros((5, 2)), {**attrs, "weights_sha256": "0" * 64})
    with pytest.raises(BagError, match=r"s0.h5: embedded with other 'plip' weights.*embedding.weights"):
        mizero.run_mizero(split, bags, cfg, tmp_path / "other.parquet")
    assert not (tmp_path / "other.parquet").exists()


# ---------------------------------------------------------------- (d) config


def _config():
    return yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())


def test_config_mizero_section_is_validated():
    cfg = _config()
    assert cfg["mizero"] == {"enabled": "auto", "topk": 50, "prompts": "resources/prompts/mizero-lung.yaml"}
    validate_config(copy.deepcopy(cfg), root=PROJECT_ROOT)
    assert not mizero.mizero_enabled(cfg)  # demo encoder: no text tower, auto = off
    on = copy.deepcopy(cfg)
    on["mizero"]["enabled"] = True
    with pytest.raises(ConfigError, match=r"`mizero.enabled` is true but `embedding.encoder` 'demo'"):
        validate_config(on, root=PROJECT_ROOT)
    on["embedding"]["encoder"] = "quiltnet-b32"
    validate_config(copy.deepcopy(on), root=PROJECT_ROOT)
    assert mizero.mizero_enabled(on)
    auto = copy.deepcopy(cfg)
    auto["embedding"]["encoder"] = "plip"
    assert mizero.mizero_enabled(auto)
    auto["mizero"]["prompts"] = "resources/prompts/nope.yaml"
    with pytest.raises(ConfigError, match=r"`mizero.prompts`: file not found"):
        validate_config(auto, root=PROJECT_ROOT)
    for key, val, msg in (("topk", 0, "mizero.topk"), ("enabled", "yes", "mizero.enabled"), ("top_k", 5, "top_k")):
        bad = copy.deepcopy(cfg)
        bad["mizero"][key] = val
        with pytest.raises(ConfigError, match=msg):
            validate_config(bad, root=PROJECT_ROOT)
    legacy = copy.deepcopy(cfg)
    del legacy["mizero"]
    validate_config(legacy, root=PROJECT_ROOT)  # fills the section with the schema's defaults
    expected = {"enabled": "auto", "topk": 50, "prompts": "resources/prompts/mizero-lung.yaml"}
    assert legacy["mizero"] == expected
    del legacy["mizero"]
    assert mizero.mizero_settings(legacy) == expected
