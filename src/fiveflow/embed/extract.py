"""Embed the tiles of one slide into a feature bag (``features`` N x D, ``coords`` N x 2).

The loop keeps the device busy: reading workers prepare the next batches while the model runs; on
CUDA, batches arrive in pinned memory and are copied without blocking, and each batch's features are
copied back while the next batch is computed. Features stream into the bag file as they come, so
host memory does not grow with the slide. Batches are fixed by ``batch_size`` and coordinate order
only, so the features are bit-identical across reruns and whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..slides.tiling import read_coords
from ..train.common import resolve_device
from .bags import COORDS_KIND, COORDS_LEVEL0_PX, BagWriter, is_complete
from .encoders.base import Encoder
from .reading import TileBatches, tile_loader
from .runtime import prepare, resolve_workers


def coords_sha256(coords: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(coords, dtype=np.int64).tobytes()).hexdigest()


def embed_attrs(meta: dict, encoder: Encoder, coords: np.ndarray, inference: str) -> dict:
    """The attributes a bag carries: where its tiles came from and exactly which weights embedded them."""
    pp = encoder.preprocess
    return {
        "slide_id": meta["slide_id"],
        "encoder": encoder.name,
        "encoder_family": encoder.family,
        "weights": encoder.weights,
        "weights_sha256": encoder.weights_sha256,
        "feature_dim": encoder.dim,
        "target_mpp": meta["target_mpp"],
        "patch_size_px": meta["patch_size_px"],
        "patch_size_level0": meta["patch_size_level0"],
        "slide_mpp": meta["slide_mpp"],
        "slide_width": meta["slide_width"],
        "slide_height": meta["slide_height"],
        "input_size": pp.input_size(meta["patch_size_px"]),
        "resize": pp.size or 0,
        "crop": pp.crop or 0,
        "mean": list(pp.mean),
        "std": list(pp.std),
        "inference": inference,
        COORDS_KIND: COORDS_LEVEL0_PX,
        "coords_sha256": coords_sha256(coords),
        "tiling_status": meta.get("status", "ok"),
        "fiveflow_version": __version__,
    }


class _Outputs:
    """Copies features back to the host one batch behind, so the device never waits for the host."""

    def __init__(self, writer: BagWriter, device: torch.device) -> None:
        self.writer, self.device, self.pending = writer, device, None

    def put(self, feats: torch.Tensor) -> None:
        if self.device.type == "cuda":
            host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(feats, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.flush()
            self.pending = (host, event)
        else:
            self.writer.write(feats.numpy())

    def flush(self) -> None:
        if self.pending is not None:
            host, event = self.pending
            event.synchronize()
            self.writer.write(host.numpy())
            self.pending = None


@torch.inference_mode()
def embed_slide(
    slide_path: str | Path,
    coords_path: str | Path,
    encoder: Encoder,
    out_h5: str | Path,
    batch_size: int = 32,
    num_workers: int | str = 0,
    device: str = "auto",
    precision: str = "auto",
    deterministic: bool = True,
    progress: bool = True,
    skip_complete: bool = False,
    prepared: tuple | None = None,
) -> dict:
    """Write the feature bag of one slide; returns a summary (tiles, seconds, tiles/s, skipped).

    ``skip_complete``: leave an existing bag alone when it is complete and was made from the same
    coordinates with the same weights and inference settings (resuming an interrupted cohort).
    ``prepared``: the result of :func:`~fiveflow.embed.runtime.prepare` for this encoder and device, made
    once for many slides (:func:`fiveflow.embed.shards.embed_shard`); None prepares the model here.
    """
    coords_df, meta = read_coords(coords_path)
    coords = coords_df[["x", "y"]].to_numpy(np.int64)
    dev = resolve_device(device, "embedding.device")
    fm, amp, inference = prepared or prepare(encoder, dev, precision, deterministic)
    attrs = embed_attrs(meta, encoder, coords, inference)
    summary = {"slide_id": meta["slide_id"], "tiles": len(coords), "inference": inference, "skipped": False}
    if skip_complete and is_complete(
        out_h5, weights_sha256=encoder.weights_sha256, coords_sha256=attrs["coords_sha256"], inference=inference
    ):
        return {**summary, "skipped": True, "seconds": 0.0, "tiles_per_s": float("nan")}
    ds = TileBatches(
        slide_path, coords, meta["read_level"], meta["read_size"], meta["patch_size_px"], encoder.preprocess
    )
    workers = resolve_workers(num_workers, dev, torch.get_num_threads()) if len(ds) else 0
    loader = tile_loader(ds, batch_size, workers, pin_memory=dev.type == "cuda")
    coords_attrs = {
        "patch_level": 0,
        "patch_size": meta["patch_size_level0"],
        "patch_size_level0": meta["patch_size_level0"],
        "target_patch_size": meta["patch_size_px"],
    }
    t0 = time.perf_counter()
    bar = None
    if progress and len(ds):
        import sys

        from tqdm import tqdm

        # in a log file (Snakemake jobs) a line every 10 s, not a redraw every 0.1 s
        bar = tqdm(
            total=len(ds),
            desc=f"embed {meta['slide_id']}",
            unit="tile",
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,
        )
    with BagWriter(out_h5, len(ds), encoder.dim, coords, attrs, coords_attrs) as writer:
        out = _Outputs(writer, dev)
        for batch in loader:
            batch = batch.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                feats = fm(batch)
            out.put(feats.float())
            if bar is not None:
                bar.update(len(batch))
        out.flush()
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - t0
    return {**summary, "seconds": secs, "tiles_per_s": len(ds) / secs if secs > 0 and len(ds) else float("nan")}


def describe_encoder(encoder: Encoder) -> str:
    """One log line naming the encoder and its weights (the rule and shard scripts log it first)."""
    return (
        f"encoder {encoder.name} ({encoder.family}, {encoder.dim}-d), weights {encoder.weights}, "
        f"sha256 {encoder.weights_sha256[:16]}"
    )


def describe_result(res: dict) -> str:
    """One log line for a slide embedded by :func:`embed_slide`."""
    return (
        f"{res['slide_id']}: embedded {res['tiles']} tiles in {res['seconds']:.1f} s "
        f"({res['tiles_per_s']:.1f} tiles/s), {res['inference']}"
    )
