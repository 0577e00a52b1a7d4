"""Per-slide fixed cost of embedding jobs: a job per slide against shards of many slides.

Every embedding job pays a fixed cost before and after its tiles: a new Python process (torch and the
package imported), the encoder built and prepared for the device, and the bag written. With a job per
slide (``embedding.shard_size: 1``) every slide pays it; a shard of 32 slides pays it once.

This makes ``--slides`` small synthetic slides (a few tiles each, so the fixed cost dominates), tiles
them once, then embeds all of them twice, each job a fresh ``python`` process as a Snakemake job is:

- shard size 1: one process per slide;
- shard size ``--shard`` (32): one process per shard (fiveflow.embed.shards.embed_shard).

Per-slide fixed cost = (wall time of all jobs - the time the jobs spent embedding tiles, as each job
measured it) / slides. ``fixed_cost_ratio`` = shard-1 cost / shard-32 cost. The bags of the two runs
are compared byte for byte (``identical=1``). Default encoder: ``resnet50-trunc`` with seeded random
weights on the CPU (the published weights are a download; building the model costs the same).

Usage: .venv/bin/python benchmarks/bench_shards.py [--slides 64] [--shard 32] [--encoder resnet50-trunc]
Last line: RESULT fixed_s_per_slide_shard1=... fixed_s_per_slide_shard32=... fixed_cost_ratio=... identical=...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def worker(spec_path: str) -> None:
    """One embedding job (run as its own process): embed the slides of ``spec`` as one shard."""
    import torch

    torch.set_num_threads(1)
    from fiveflow.embed.encoders import build_encoder
    from fiveflow.embed.shards import ShardItem, clear_store, embed_shard

    spec = json.loads(Path(spec_path).read_text())
    items = [ShardItem(s, Path(a), Path(b), Path(c)) for s, a, b, c in spec["items"]]
    enc = build_encoder(spec["encoder"], "random", 0)
    done = embed_shard(items, enc, batch_size=32, num_workers=0, device="cpu", progress=False)
    clear_store(items)
    Path(spec["result"]).write_text(
        json.dumps({"embed_s": sum(r["seconds"] for r in done), "tiles": sum(r["tiles"] for r in done)})
    )


def run_jobs(groups: list[list[tuple]], encoder: str, work: Path) -> tuple[float, float, int]:
    """Run one process per group; return (wall seconds, seconds spent embedding tiles, tiles)."""
    embed_s, tiles = 0.0, 0
    t0 = time.perf_counter()
    for k, items in enumerate(groups):
        spec, result = work / f"job{k}.json", work / f"job{k}.result.json"
        spec.write_text(
            json.dumps({"items": [[str(x) for x in it] for it in items], "encoder": encoder, "result": str(result)})
        )
        subprocess.run(
            [sys.executable, __file__, "--worker", str(spec)],
            check=True,
            env={
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1",
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT / "src"),
            },
        )
        r = json.loads(result.read_text())
        embed_s, tiles = embed_s + r["embed_s"], tiles + r["tiles"]
    return time.perf_counter() - t0, embed_s, tiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=64)
    ap.add_argument("--shard", type=int, default=32)
    ap.add_argument("--encoder", default="resnet50-trunc")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    from conftest import TILING, write_test_slide
    from fiveflow.embed.bags import read_bag
    from fiveflow.embed.shards import plan_shards
    from fiveflow.slides.tiling import tile_slide

    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        work = Path(tmp)
        cfg = {**TILING, "patch_size": 224}
        slides = {}
        for i in range(args.slides):
            sid = f"s{i:03d}"
            path = write_test_slide(
                work / f"{sid}.tif", width=2048, height=2048, seed=i, tissue_box=(0.2, 0.2, 0.8, 0.8)
            )
            tile_slide(path, sid, cfg, work / f"{sid}.parquet")
            slides[sid] = path
        out = {}
        for size in (1, args.shard):
            dest = work / f"bags{size}"
            groups = [
                [(s, slides[s], work / f"{s}.parquet", dest / f"{s}.h5") for s in members]
                for members in plan_shards(list(slides), size).values()
            ]
            wall, embed_s, tiles = run_jobs(groups, args.encoder, work)
            fixed = (wall - embed_s) / len(slides)
            out[size] = (fixed, dest)
            print(
                f"shard size {size:3d}: {len(groups)} jobs, {wall:.1f} s wall, {embed_s:.1f} s embedding {tiles} "
                f"tiles -> fixed cost {fixed:.3f} s per slide"
            )
        identical = all(
            read_bag(out[1][1] / f"{s}.h5")[0].tobytes() == read_bag(out[args.shard][1] / f"{s}.h5")[0].tobytes()
            for s in slides
        )
        f1, fk = out[1][0], out[args.shard][0]
        print(
            f"RESULT fixed_s_per_slide_shard1={f1:.3f} fixed_s_per_slide_shard{args.shard}={fk:.3f} "
            f"fixed_cost_ratio={f1 / fk:.2f} identical={int(identical)} slides={len(slides)} encoder={args.encoder}"
        )


if __name__ == "__main__":
    main()
