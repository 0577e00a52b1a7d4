"""Shared fixtures: the real data in ../shared/data, and small synthetic slides."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def workflow_cmd(work: Path, *args: str) -> list[str]:
    """The real workflow through tools/snakemake.sh, run in ``work`` with ``work/config.yaml``."""
    return [
        str(PROJECT_ROOT / "tools" / "snakemake.sh"),
        "-s",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        *args,
    ]


def run_workflow(work: Path, *args: str, timeout: int = 600):
    import subprocess

    return subprocess.run(workflow_cmd(work, *args), capture_output=True, text=True, timeout=timeout)


def kill_group(p) -> None:
    """SIGKILL ``p``'s whole process group (the script, its Snakemake, the job), as a power loss would end it,
    and wait until every one of them has died. ``p.wait`` returns when ``p`` itself has: the others may still be
    running for a moment after the signal on a loaded machine (a CI run failed on that race: the next run
    rightly saw the killed Snakemake still alive and kept its lock)."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.time() + 30
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # ended while we looked
            if int(fields[2]) == p.pid and fields[0] not in ("Z", "X"):
                alive.append(stat.parent.name)
        if not alive:
            return
        assert time.time() < deadline, f"processes of group {p.pid} still alive 30 s after SIGKILL: {alive}"
        time.sleep(0.05)


def job_stats(log: str) -> dict[str, int]:
    """Rule -> number of jobs, from the first "Job stats" table of a Snakemake log or dry run."""
    import re

    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def shared_path(rel: str) -> Path:
    """Path to a file in ../shared/data: fail when FIVEFLOW_REQUIRE_SHARED_DATA=1, else skip if absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        msg = f"real test data not found: {p} (a clone without ../shared/data)"
        if os.environ.get("FIVEFLOW_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + "; FIVEFLOW_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(msg)
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: one torch thread is much faster than contended OpenMP threads on a busy CPU
    (modules use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cmu_slide() -> Path:
    return shared_path("slides/CMU-1-Small-Region.svs")


def write_test_slide(
    path: Path,
    width: int = 2048,
    height: int = 1536,
    mpp: float | None = 0.5,
    tissue_box=(0.25, 0.25, 0.75, 0.75),
    seed: int = 0,
) -> Path:
    """A small pyramidal JPEG-tiled BigTIFF: white background, a pink/purple textured tissue rectangle."""
    import tifffile

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 242, np.uint8)
    x0, y0, x1, y1 = (
        int(tissue_box[0] * width),
        int(tissue_box[1] * height),
        int(tissue_box[2] * width),
        int(tissue_box[3] * height),
    )
    tissue = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    tissue[..., 0] = rng.integers(150, 220, tissue.shape[:2])
    tissue[..., 1] = rng.integers(60, 130, tissue.shape[:2])
    tissue[..., 2] = rng.integers(140, 200, tissue.shape[:2])
    img[y0:y1, x0:x1] = tissue
    kw = dict(tile=(256, 256), compression="jpeg", photometric="rgb")
    if mpp:
        kw.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, subfiletype=0, **kw)
        level = img
        while max(level.shape[:2]) > 512:
            level = level[::2, ::2]
            tw.write(np.ascontiguousarray(level), subfiletype=1, **kw)
    return path


def tissue_image(
    width: int = 2048, height: int = 1536, tissue_box=(0.25, 0.25, 0.75, 0.75), seed: int = 0
) -> np.ndarray:
    """Glass (242 grey) with one textured pink/purple tissue rectangle; ``tissue_box=None``: blank glass."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 242, np.uint8)
    img += rng.integers(0, 4, img.shape, dtype=np.uint8)  # sensor noise, so a blank slide is not flat
    if tissue_box is not None:
        x0, y0, x1, y1 = (
            int(tissue_box[0] * width),
            int(tissue_box[1] * height),
            int(tissue_box[2] * width),
            int(tissue_box[3] * height),
        )
        shape = (y1 - y0, x1 - x0)
        img[y0:y1, x0:x1, 0] = rng.integers(150, 220, shape)
        img[y0:y1, x0:x1, 1] = rng.integers(60, 130, shape)
        img[y0:y1, x0:x1, 2] = rng.integers(140, 200, shape)
    return img


def write_pyramid_tiff(
    path: Path, img: np.ndarray, mpp: float | None = 0.5, factors=(1, 2, 4), aperio: bool = False
) -> Path:
    """A tiled pyramid of ``img`` with levels downsampled by ``factors`` (any integers, not only powers of two).

    ``aperio=True`` writes an Aperio SVS with JPEG 2000 (RGB, compression 33005) tiles and the mpp in the
    Aperio description, as Aperio scanners do; otherwise a generic JPEG-tiled BigTIFF with resolution tags.
    """
    import cv2
    import tifffile

    h, w = img.shape[:2]
    with tifffile.TiffWriter(path, bigtiff=not aperio) as tw:
        for i, f in enumerate(factors):
            level = img if f == 1 else cv2.resize(img, (w // f, h // f), interpolation=cv2.INTER_AREA)
            kw = dict(tile=(256, 256), photometric="rgb", metadata=None)
            if aperio:
                head = f"{w}x{h} [0,0 {w}x{h}] (256x256) J2K/KDU Q=70" if i == 0 else f"{w}x{h} -> {w // f}x{h // f}"
                desc = f"Aperio Image Library v12.0.15 \r\n{head}|AppMag = 20" + (f"|MPP = {mpp}" if mpp else "")
                tw.write(np.ascontiguousarray(level), compression=33005, description=desc, **kw)
            else:
                if mpp:
                    kw.update(resolution=(1e4 / (mpp * f),) * 2, resolutionunit="CENTIMETER")
                tw.write(np.ascontiguousarray(level), compression="jpeg", subfiletype=0 if i == 0 else 1, **kw)
    return path


@pytest.fixture
def small_slide(tmp_path) -> Path:
    return write_test_slide(tmp_path / "small.tif")


TILING = dict(
    target_mpp=1.0,
    patch_size=128,
    overlap=0,
    min_tissue=0.5,
    thumbnail_size=256,
    assume_mpp=None,
    mask=dict(
        method="otsu",
        mpp=8.0,
        white_threshold=220,
        reject_pen=["green", "blue", "black"],
        min_component_mm2=0.01,
        fill_holes_mm2=0.1,
    ),
)
