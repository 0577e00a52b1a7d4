"""Patch embedding throughput: the pipeline against the model alone and against a naive loop.

For one slide and one encoder (default: CLAM's convention, ``resnet50-trunc`` on 256 px tiles at
0.5 mpp, on the real CMU-1-Small-Region.svs from ../shared/data/slides):

- ``tiles_per_s``: ``fiveflow.embed.extract.embed_slide`` end to end (DataLoader workers reading
  with their own OpenSlide handles, uint8 batches, normalisation on the device, the streamed bag
  write), timed from the first batch request to the closed bag file.
- ``model_tiles_per_s``: the same prepared model (same batches, device, precision, CPU fusion) on
  tiles read into memory beforehand: the ceiling of any pipeline for this model on this device.
- ``io_efficiency``: pipeline tiles/s over model-only tiles/s, per repeat, median (1.0: reading costs nothing).
- ``naive_tiles_per_s``: the CLAM-style baseline: in the main process, for each tile,
  ``read_region`` -> ``convert("RGB")`` -> PIL resize (if needed) -> torchvision ``ToTensor`` +
  ``Normalize`` -> the plain eager fp32 model on a batch of one -> ``.cpu().numpy()``.
- ``speedup_vs_naive``: pipeline tiles/s over the naive loop's, per repeat, median.
- ``gflop_per_tile`` (torch's flop counter, one multiply-add = 2 FLOP) and the GFLOP/s each path
  reaches, against ``matmul_gflops`` (the best of a few 4096x4096 fp32 matrix products: the
  device's practical peak). ``fp32_bound_speedup`` = that peak / the naive loop's GFLOP/s: roughly the
  most any fp32 pipeline can gain over the naive loop on this device (well-tuned convolutions can
  edge past a matmul, so it is a guide, not a hard limit). On a CPU the naive loop already runs
  near the peak, so the bound is small; on a GPU a batch of one leaves most of it idle, and
  batching, bf16 and overlapped reading are where the speed comes from.

The three measurements are interleaved ``--repeats`` times after an untimed warm-up, and medians
are reported, so a noisy machine affects all three alike; the two ratios are the medians of the
per-repeat ratios (each repeat's pipeline against the model and the naive loop timed right beside it). On a machine with a CUDA GPU the same
script is the GPU check (``--device cuda``; the default ``auto`` picks it).

Usage: ``.venv/bin/python benchmarks/bench_embed.py [--slide PATH] [--encoder resnet50-trunc]
[--weights random] [--target-mpp 0.5] [--patch 256] [--batch-size 32] [--workers auto] [--repeats 5]
[--naive-tiles 48] [--device auto] [--precision auto] [--synthetic 20000x15000]``

GPU check (one run, a few minutes): ``python benchmarks/bench_embed.py --device cuda --synthetic
20000x15000 --batch-size 256 --workers 8 --naive-tiles 200``.
Headline: on a CPU ``io_efficiency`` (a pipeline cannot beat the model's own speed there; the speed-up over
the naive loop is printed above the RESULT line, not in it); on a GPU also ``speedup_vs_naive``.
Last line: ``RESULT io_efficiency=... [speedup_vs_naive=... on CUDA] tiles_per_s=... model_tiles_per_s=...
naive_tiles_per_s=... gflop_per_tile=... matmul_gflops=... fp32_bound_speedup=... tiles=... device=...``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fiveflow.embed.encoders import build_encoder  # noqa: E402
from fiveflow.embed.extract import embed_slide  # noqa: E402
from fiveflow.embed.reading import TileBatches  # noqa: E402
from fiveflow.embed.runtime import prepare  # noqa: E402
from fiveflow.slides.tiling import default_tiling, read_coords, tile_slide  # noqa: E402
from fiveflow.train.common import resolve_device  # noqa: E402

CMU = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def pipeline_run(slide, coords, enc, out, args) -> float:
    res = embed_slide(
        slide,
        coords,
        enc,
        out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        precision=args.precision,
        progress=False,
    )
    return res["tiles_per_s"]


@torch.inference_mode()
def model_only_run(fm, amp, batches, dev) -> float:
    on_dev = [b.to(dev) for b in batches]
    sync(dev)
    t0 = time.perf_counter()
    outs = []
    for b in on_dev:
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            outs.append(fm(b).float())
    sync(dev)
    n = sum(len(b) for b in batches)
    _ = [o.cpu() for o in outs]
    return n / (time.perf_counter() - t0)


@torch.inference_mode()
def naive_run(slide_path, coords, meta, enc, dev, n_tiles) -> float:
    """CLAM-style: one tile at a time, read, PIL/torchvision preprocessing, eager fp32 model, back to numpy."""
    import openslide
    from PIL import Image
    from torchvision import transforms

    model = enc.model.to(dev).eval()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(enc.mean, enc.std)])
    size = enc.preprocess.input_size(meta["patch_size_px"])
    slide = openslide.OpenSlide(str(slide_path))
    feats = []
    sync(dev)
    t0 = time.perf_counter()
    for x, y in coords[:n_tiles]:
        img = slide.read_region((int(x), int(y)), meta["read_level"], (meta["read_size"],) * 2).convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        feats.append(model(tf(img).unsqueeze(0).to(dev)).cpu().numpy())
    dt = time.perf_counter() - t0
    slide.close()
    return min(n_tiles, len(coords)) / dt


def gflop_per_tile(enc, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        enc.model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def matmul_gflops(dev: torch.device, n: int = 4096) -> float:
    """Best of 3 large fp32 matrix products: the practical floating-point peak of this device."""
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    best = 0.0
    for _ in range(4):
        sync(dev)
        t0 = time.perf_counter()
        a @ b
        sync(dev)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default=str(CMU))
    ap.add_argument(
        "--synthetic",
        metavar="WxH",
        help="use bench_tiling.py's cached synthetic slide of this size "
        "instead (e.g. 20000x15000: a few thousand tiles, for a GPU)",
    )
    ap.add_argument("--cache", default="/tmp/fiveflow-bench-cache", help="folder of cached synthetic slides")
    ap.add_argument("--encoder", default="resnet50-trunc")
    ap.add_argument("--weights", default="random", help="random (offline) or any embedding.weights value")
    ap.add_argument("--target-mpp", type=float, default=0.5)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="auto", help="reading workers (auto: 0 on a CPU, threads-1 on a GPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-tiles", type=int, default=48, help="tiles timed in the naive loop (it is slow)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    if args.synthetic:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_tiling import synthetic_slide

        w, h = (int(v) for v in args.synthetic.lower().split("x"))
        args.slide = str(synthetic_slide(Path(args.cache), w, h))
    if not Path(args.slide).is_file():
        sys.exit(f"slide not found: {args.slide} (pass --slide)")
    dev = resolve_device(args.device, "--device")
    work = Path(tempfile.mkdtemp(prefix="fiveflow-bench-embed-"))
    cfg = {**default_tiling(), "target_mpp": args.target_mpp, "patch_size": args.patch}
    coords_path = work / "coords.parquet"
    tile_slide(args.slide, "bench", cfg, coords_path)
    df, meta = read_coords(coords_path)
    coords = df[["x", "y"]].to_numpy(np.int64)
    enc = build_encoder(args.encoder, args.weights, 0)
    size = enc.preprocess.input_size(meta["patch_size_px"])
    print(
        f"slide {Path(args.slide).name}: {len(coords)} tiles of {meta['patch_size_px']} px at {meta['target_mpp']} mpp "
        f"(read {meta['read_size']} px at level {meta['read_level']}), encoder {enc.name} -> {enc.dim}-d at {size} px; "
        f"device {dev}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, workers {args.workers}"
    )
    ds = TileBatches(args.slide, coords, meta["read_level"], meta["read_size"], meta["patch_size_px"], enc.preprocess)
    batches = [
        ds.__getitems__(list(range(i, min(i + args.batch_size, len(ds))))) for i in range(0, len(ds), args.batch_size)
    ]
    fm, amp, desc = prepare(enc, dev, args.precision)
    # warm-up: imports, file cache, allocator, kernels
    pipeline_run(args.slide, coords_path, enc, work / "warm.h5", args)
    model_only_run(fm, amp, batches[:1], dev)
    plain = build_encoder(args.encoder, args.weights, 0)  # untouched by prepare() (no fusion, no channels_last)
    naive_run(args.slide, coords, meta, plain, dev, 2)
    pipe, model, naive = [], [], []
    for r in range(args.repeats):
        pipe.append(pipeline_run(args.slide, coords_path, enc, work / f"r{r}.h5", args))
        model.append(model_only_run(fm, amp, batches, dev))
        naive.append(naive_run(args.slide, coords, meta, plain, dev, args.naive_tiles))
        print(f"  repeat {r + 1}: pipeline {pipe[-1]:.1f} tiles/s, model only {model[-1]:.1f}, naive {naive[-1]:.1f}")
    p, m, n = (statistics.median(v) for v in (pipe, model, naive))
    io_eff = statistics.median(a / b for a, b in zip(pipe, model))  # paired: each repeat against its neighbour
    vs_n = statistics.median(a / b for a, b in zip(pipe, naive))
    g = gflop_per_tile(build_encoder(args.encoder, args.weights, 0), size)  # on the CPU: flop counting only
    peak = matmul_gflops(dev)
    print(
        f"inference: {desc}; {g:.2f} GFLOP per tile -> pipeline {p * g:.0f} GFLOP/s, model only {m * g:.0f}, "
        f"naive {n * g:.0f}; fp32 matmul on this device {peak:.0f} GFLOP/s, so an fp32 pipeline can gain about "
        f"{peak / (n * g):.2f}x at most over the naive loop here"
    )
    # On a CPU the pipeline cannot beat the model's own speed: the headline is io_efficiency; the speed-up over the
    # naive loop is a GPU figure (batching, bf16 and overlapped reading), printed in the RESULT line only there.
    vs_naive = f" speedup_vs_naive={vs_n:.3f}" if dev.type == "cuda" else ""
    if dev.type != "cuda":
        print(f"speed-up over the naive loop on this CPU: {vs_n:.2f}x (bounded by {peak / (n * g):.2f}x; a GPU figure)")
    print(
        f"RESULT io_efficiency={io_eff:.3f}{vs_naive} tiles_per_s={p:.2f} model_tiles_per_s={m:.2f} "
        f"naive_tiles_per_s={n:.2f} gflop_per_tile={g:.3f} matmul_gflops={peak:.0f} "
        f"fp32_bound_speedup={peak / (n * g):.3f} tiles={len(coords)} device={dev.type}"
    )


if __name__ == "__main__":
    main()
