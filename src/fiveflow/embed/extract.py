"""Embed the tiles of one slide into a feature bag (``features`` N x D, ``coords`` N x 2).

Tiles are read from the pyramid level chosen at tiling time and resized to the patch size; reading
runs in DataLoader workers (each with its own OpenSlide handle) so the encoder is never starved.
"""
from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..io import atomic_path
from ..slides.tiling import read_coords
from .encoders import Encoder, pick_device


class TileDataset(Dataset):
    def __init__(self, slide_path: str, coords: np.ndarray, level: int, read_size: int, patch: int,
                 mean, std):
        self.slide_path, self.coords, self.level = slide_path, coords, level
        self.read_size, self.patch = read_size, patch
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        if self._slide is None:  # opened lazily: one handle per worker process
            import openslide

            self._slide = openslide.OpenSlide(self.slide_path)
        x, y = (int(v) for v in self.coords[i])
        img = self._slide.read_region((x, y), self.level, (self.read_size, self.read_size)).convert("RGB")
        if img.size != (self.patch, self.patch):
            img = img.resize((self.patch, self.patch), Image.BILINEAR)
        t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
        return (t - self.mean) / self.std


@torch.inference_mode()
def embed_slide(slide_path: str | Path, coords_path: str | Path, encoder: Encoder, out_h5: str | Path,
                batch_size: int = 64, num_workers: int = 0, device: str = "auto",
                progress: bool = True) -> dict:
    """Write the feature bag of one slide; returns a small summary (tiles, seconds, tiles/s)."""
    coords_df, meta = read_coords(coords_path)
    coords = coords_df[["x", "y"]].to_numpy(np.int64)
    dev = pick_device(device)
    model = encoder.model.to(dev)
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    ds = TileDataset(str(slide_path), coords, meta["read_level"], meta["read_size"], meta["patch_size_px"],
                     encoder.mean, encoder.std)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda",
                        persistent_workers=False)
    feats = np.zeros((len(ds), encoder.dim), dtype=np.float32)
    t0 = time.perf_counter()
    use_amp = dev.type == "cuda"
    it = loader
    if progress and len(ds):
        from tqdm import tqdm

        it = tqdm(loader, desc=f"embed {meta['slide_id']}", unit="batch", leave=False)
    i = 0
    for batch in it:
        batch = batch.to(dev, non_blocking=True)
        if dev.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(batch)
        feats[i:i + len(batch)] = out.float().cpu().numpy()
        i += len(batch)
    secs = time.perf_counter() - t0
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=feats)
            f.create_dataset("coords", data=coords)
            attrs = {
                "slide_id": meta["slide_id"], "encoder": encoder.name, "weights": encoder.weights,
                "weights_sha256": encoder.weights_sha256, "feature_dim": encoder.dim,
                "target_mpp": meta["target_mpp"], "patch_size_px": meta["patch_size_px"],
                "patch_size_level0": meta["patch_size_level0"], "slide_mpp": meta["slide_mpp"],
                "slide_width": meta["slide_width"], "slide_height": meta["slide_height"],
                "fiveflow_version": __version__, "tiling_status": meta.get("status", "ok"),
            }
            for k, v in attrs.items():
                f.attrs[k] = v
    return {"slide_id": meta["slide_id"], "tiles": len(ds), "seconds": secs,
            "tiles_per_s": len(ds) / secs if secs > 0 else float("nan")}
