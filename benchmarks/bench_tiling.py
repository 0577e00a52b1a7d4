"""Slide tiling speed and memory: our tiler against reading its mask image, and against tiatoolbox.

Measured on synthetic pyramidal slides (JPEG-tiled BigTIFF at 0.25 mpp, a 40x scan, written with
``fiveflow.cohort.pyramid.write_pyramid``: near-white glass, large irregular pink/purple tissue
regions with nuclei texture, lumens and dust specks) and on the real CMU-1-Small-Region.svs
(../shared/data/slides, single level, 0.499 mpp). Tiles: 224 px at 0.5 mpp, min_tissue 0.5, Otsu
mask at 8 mpp. For each slide:

- ``mask_read_ratio``: ``tile_slide(..., out_qc=None)`` (open, mask incl. our clean-up, grid,
  tissue fractions, parquet) / the time to open the slide with OpenSlide and
  ``read_region`` the whole pyramid level the tiler read its mask from (``mask_level`` in the
  coordinates metadata). 1.0 would mean the masking and tiling cost nothing beyond that read.
- ``vs_tiatoolbox``: tiatoolbox's own path for the same result / ours, both in this process with
  imports done beforehand: ``WSIReader.open`` + ``reader.tissue_mask("otsu", 8.0, "mpp")`` +
  ``SlidingWindowPatchExtractor(..., resolution=0.5, units="mpp", min_mask_ratio=0.5,
  within_bound=True)`` (whose constructor runs ``get_coordinates`` + ``filter_coordinates``).
  For this comparison our tiler runs with the clean-up tiatoolbox does not do switched off
  (no white threshold, no pen rejection, no hole filling, no small-component removal).
  ``coords_jaccard``: Jaccard index of the two kept tile sets (level-0 boxes, matched by their
  nearest position on our grid).
- ``peak_mb``: peak RSS (VmHWM) of a fresh process tiling the 100000x80000 slide with QC PNG and
  GeoJSON (not ``ru_maxrss``, which for a child of this large process reports this process's RSS).
- ``fixed_s_per_slide``: wall time of a fresh ``python -m fiveflow.cli tile`` process on the small
  real slide minus the in-process time of ``tile_slide`` with the same outputs (medians): the cost
  of starting an interpreter, importing and loading the config, paid once per tiling job. The
  CLI's slowest top-level imports are printed (``-X importtime``).
- ``import_s``: wall time of a fresh interpreter that imports the tiler and tiles the small slide
  twice, minus twice the second (warm) call: interpreter start plus every import the tiler does,
  at module level or lazily on its first call. Printed beside it: a bare interpreter start, and
  one doing only the module-level imports.

Timings: one untimed warm-up run (imports, OS file cache), then ``--repeats`` runs; the median is
reported (the minimum is printed as well). Synthetic slides are cached in ``--cache`` by size
(the 100000x80000 slide takes ~3 minutes to write on 2 cores: ~0.5 GB, plus ~8 GB of
staging files next to it while it is written).

Usage: ``.venv/bin/python benchmarks/bench_tiling.py [--sizes 40000x30000,100000x80000]
[--skip-huge] [--repeats 9] [--cache /tmp/fiveflow-bench-cache] [--no-cmu]``
Last line: ``RESULT mask_read_ratio=... vs_tiatoolbox=... peak_mb=... fixed_s_per_slide=...
import_s=... coords_jaccard=...`` (ratios and Jaccard from the 40000x30000 slide).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CMU = ROOT.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
MAIN_SIZE = (40000, 30000)
HUGE_SIZE = (100000, 80000)
MPP = 0.25  # level-0 microns per pixel of the synthetic slides (40x)
TARGET_MPP = 0.5
PATCH = 224
MIN_TISSUE = 0.5
MASK_MPP = 8.0
GEN_VERSION = 1  # bump when the synthetic content changes (cache key)
TILE = 512
QUALITY = 80


# --------------------------------------------------------------------------------------------
# Synthetic slide: every level-0 tile is a function of its position only.
# --------------------------------------------------------------------------------------------


class SyntheticSlide:
    """Tile function for ``write_pyramid``: glass, tissue blobs with lumens, dust specks.

    Shapes are analytic (signed fields evaluated on an 8 px grid per tile, upsampled and
    thresholded); pixel content comes from a few precomputed 512 px templates (glass and
    tissue textures), rotated/flipped by a hash of the tile position.
    """

    def __init__(self, width: int, height: int, mpp: float = MPP, seed: int = 0, tile: int = TILE):
        import cv2

        self.w, self.h, self.mpp, self.tile = width, height, mpp, tile
        rng = np.random.default_rng(seed)
        s = min(width, height)
        # tissue blobs: rotated ellipses with a wobbly radius r(theta) = 1 + sum A_k sin(k theta + p_k)
        blobs = []
        for cx, cy in [(0.28, 0.32), (0.68, 0.30), (0.45, 0.70), (0.80, 0.72), (0.16, 0.75)]:
            cx, cy = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)
            a, b = rng.uniform(0.15, 0.24) * s, rng.uniform(0.11, 0.17) * s
            amps = rng.uniform(0.03, 0.10, 4)
            phases = rng.uniform(0, 2 * np.pi, 4)
            blobs.append((cx * width, cy * height, a, b, rng.uniform(0, np.pi), amps, phases))
        self.blobs = blobs
        r_out = np.array([max(a, b) * (1 + amps.sum()) for _, _, a, b, _, amps, _ in blobs])
        self.blob_box = np.array([[cx - r, cy - r, cx + r, cy + r] for (cx, cy, *_), r in zip(blobs, r_out)])
        # lumens / fat holes inside tissue (radius 40-250 um) and dust specks on glass (5-40 um)
        area_mm2 = width * height * (mpp / 1000) ** 2
        holes = []
        for _ in range(int(20 * area_mm2 * 0.3) + 2000):
            if len(holes) >= int(1.5 * area_mm2):
                break
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            if self._blob_field(np.array([x]), np.array([y]))[0] > 0.15:
                holes.append((x, y, rng.uniform(40, 250) / mpp, rng.uniform(40, 250) / mpp))
        self.holes = np.array(holes, float).reshape(-1, 4)
        n_specks = int(0.6 * area_mm2)
        self.specks = np.column_stack(
            [rng.uniform(0, width, n_specks), rng.uniform(0, height, n_specks), rng.uniform(5, 40, n_specks) / mpp]
        ).reshape(-1, 3)
        # templates
        t = tile
        self.glass = []
        for _k in range(4):
            g = np.empty((t, t, 3), np.float32)
            base = np.array([241, 240, 243], np.float32) + rng.uniform(-2, 2, 3)
            g[:] = base
            g += rng.normal(0, 1.6, (t, t, 3)).astype(np.float32)
            self.glass.append(np.clip(g, 0, 255).astype(np.uint8))
        self.tissue = []
        for _k in range(6):
            low = rng.normal(0, 1, (t // 32, t // 32)).astype(np.float32)
            v = cv2.resize(low, (t, t), interpolation=cv2.INTER_CUBIC)[..., None]
            stroma = np.array([234, 168, 204], np.float32)
            dark = np.array([212, 118, 172], np.float32)
            mix = np.clip(0.5 + 0.35 * v, 0, 1)
            img = stroma * (1 - mix) + dark * mix
            # nuclei: hematoxylin ellipses, denser where the eosin is darker
            nuc = np.zeros((t, t), np.uint8)
            for _ in range(int(rng.integers(180, 320))):
                x, y = int(rng.integers(0, t)), int(rng.integers(0, t))
                if rng.uniform() > 0.35 + 0.5 * float(mix[y, x, 0]):
                    continue
                ax = (int(rng.integers(6, 16)), int(rng.integers(5, 11)))
                cv2.ellipse(nuc, (x, y), ax, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
            nuc = cv2.GaussianBlur(nuc, (0, 0), 1.2).astype(np.float32)[..., None] / 255
            hema = np.array([98, 62, 148], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
            img = img * (1 - nuc) + hema * nuc
            # small clear spaces
            gaps = np.zeros((t, t), np.uint8)
            for _ in range(int(rng.integers(2, 6))):
                x, y = int(rng.integers(0, t)), int(rng.integers(0, t))
                cv2.ellipse(
                    gaps,
                    (x, y),
                    (int(rng.integers(8, 30)), int(rng.integers(5, 18))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    255,
                    -1,
                    cv2.LINE_AA,
                )
            gaps = cv2.GaussianBlur(gaps, (0, 0), 2).astype(np.float32)[..., None] / 255
            img = img * (1 - gaps) + np.array([238, 226, 236], np.float32) * gaps
            img += rng.normal(0, 4, (t, t, 3)).astype(np.float32)
            self.tissue.append(np.clip(img, 0, 255).astype(np.uint8))
        self.speck_colour = np.array([118, 104, 110], np.uint8)
        g = np.arange(4, t, 8, dtype=np.float64)  # field sample positions inside a tile
        self._gx, self._gy = np.meshgrid(g, g)

    # signed fields: > 0 inside
    def _blob_field(self, x: np.ndarray, y: np.ndarray, idx=None) -> np.ndarray:
        f = np.full(np.shape(x), -1.0)
        for i in range(len(self.blobs)) if idx is None else idx:
            cx, cy, a, b, ang, amps, phases = self.blobs[i]
            dx, dy = x - cx, y - cy
            c, s = math.cos(ang), math.sin(ang)
            u, v = (dx * c + dy * s) / a, (-dx * s + dy * c) / b
            th = np.arctan2(v, u)
            r = 1 + sum(A * np.sin((k + 2) * th + p) for k, (A, p) in enumerate(zip(amps, phases)))
            f = np.maximum(f, 1 - np.hypot(u, v) / r)
        return f

    def _pick(self, templates: list[np.ndarray], tx: int, ty: int, salt: int) -> np.ndarray:
        hsh = ((tx * 73856093) ^ (ty * 19349663) ^ (salt * 83492791)) & 0x7FFFFFFF
        t = templates[hsh % len(templates)]
        k = (hsh // len(templates)) % 8
        if k == 0:
            return t
        t = np.rot90(t, k % 4)
        return np.ascontiguousarray(t[:, ::-1] if k >= 4 else t)

    def __call__(self, ox: int, oy: int) -> np.ndarray:
        import cv2

        t = self.tile
        tx, ty = ox // t, oy // t
        glass = self._pick(self.glass, tx, ty, 1)

        def hits(boxes):
            return np.flatnonzero(
                (boxes[:, 0] < ox + t) & (boxes[:, 2] > ox) & (boxes[:, 1] < oy + t) & (boxes[:, 3] > oy)
            )

        hb = hits(self.blob_box)
        hr = np.maximum(self.holes[:, 2], self.holes[:, 3])
        hh = (
            hits(
                np.column_stack(
                    [self.holes[:, 0] - hr, self.holes[:, 1] - hr, self.holes[:, 0] + hr, self.holes[:, 1] + hr]
                )
            )
            if len(self.holes)
            else []
        )
        sr = self.specks[:, 2]
        hs = (
            hits(
                np.column_stack(
                    [self.specks[:, 0] - sr, self.specks[:, 1] - sr, self.specks[:, 0] + sr, self.specks[:, 1] + sr]
                )
            )
            if len(self.specks)
            else []
        )
        if not len(hb) and not len(hs):
            return glass
        x, y = self._gx + ox, self._gy + oy
        f = self._blob_field(x, y, hb) if len(hb) else np.full(x.shape, -1.0)
        for i in hh:
            hx, hy, ra, rb = self.holes[i]
            f = np.minimum(f, np.hypot((x - hx) / ra, (y - hy) / rb) - 1)
        if (f > 0).all() and not len(hs):
            return self._pick(self.tissue, tx, ty, 2)
        if (f <= 0).all() and not len(hs):
            return glass
        tissue_m = cv2.resize(f.astype(np.float32), (t, t), interpolation=cv2.INTER_LINEAR) > 0
        out = np.where(tissue_m[..., None], self._pick(self.tissue, tx, ty, 2), glass)
        if len(hs):
            # specks are small: evaluate them exactly per pixel on their bounding box
            px = np.arange(t, dtype=np.float64) + ox
            py = np.arange(t, dtype=np.float64) + oy
            for i in hs:
                sx, sy, r = self.specks[i]
                x0, x1 = int(max(0, sx - r - ox)), int(min(t, sx + r - ox + 1))
                y0, y1 = int(max(0, sy - r - oy)), int(min(t, sy + r - oy + 1))
                if x0 >= x1 or y0 >= y1:
                    continue
                d = np.hypot(px[None, x0:x1] - sx, py[y0:y1, None] - sy) <= r
                out[y0:y1, x0:x1][d] = self.speck_colour
        return out


def synthetic_slide(cache: Path, width: int, height: int, progress: bool = True) -> Path:
    """Path of the cached synthetic slide of this size, writing it first if needed."""
    from fiveflow.cohort.pyramid import level_sizes, write_pyramid

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"synthetic_{width}x{height}_mpp{MPP:g}_v{GEN_VERSION}.tif"
    if path.is_file():
        return path
    gen = SyntheticSlide(width, height)
    sizes = level_sizes(width, height)
    n0 = -(-width // TILE) * -(-height // TILE)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n0, unit="tile", desc=f"writing {path.name}", mininterval=2, file=sys.stderr)
        except ImportError:
            pass
    done = [0]

    def tile_fn(ox, oy):
        done[0] += 1
        if bar is not None:
            bar.update(1)
        elif progress and done[0] % 2000 == 0:
            print(f"  {path.name}: {done[0]}/{n0} level-0 tiles", file=sys.stderr, flush=True)
        return gen(ox, oy)

    t0 = time.perf_counter()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write_pyramid(
            tmp,
            tile_fn,
            width,
            height,
            MPP,
            tile=TILE,
            quality=QUALITY,
            description=f"fiveflow synthetic benchmark slide {width}x{height} v{GEN_VERSION}",
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    print(
        f"wrote {path} ({width}x{height}, {len(sizes)} levels) in {secs:.0f} s, {path.stat().st_size / 2**20:.0f} MiB",
        flush=True,
    )
    return path


# --------------------------------------------------------------------------------------------
# The three ways of getting the result
# --------------------------------------------------------------------------------------------


def tiling_cfg(cleanup: bool = True) -> dict:
    """The ``tiling`` config section for the benchmark: 224 px at 0.5 mpp, Otsu mask at 8 mpp.

    The mask clean-up settings come from config.yaml's ``tiling.mask`` when it has that section;
    ``cleanup=False`` switches off every step tiatoolbox does not do.
    """
    import yaml

    mask = dict(
        method="otsu", mpp=MASK_MPP, white_threshold=220, reject_pen=True, fill_holes_mm2=0.1, min_component_mm2=0.01
    )
    try:
        shipped = (yaml.safe_load((ROOT / "config.yaml").read_text()).get("tiling") or {}).get("mask")
    except OSError:
        shipped = None
    if isinstance(shipped, dict):
        mask.update({k: v for k, v in shipped.items() if k in mask})
    mask.update(method="otsu", mpp=MASK_MPP)
    if not cleanup:
        mask.update(white_threshold=None, reject_pen=False, fill_holes_mm2=0, min_component_mm2=0)
    return dict(
        target_mpp=TARGET_MPP,
        patch_size=PATCH,
        overlap=0,
        min_tissue=MIN_TISSUE,
        thumbnail_size=1024,
        assume_mpp=None,
        mask=mask,
    )


def run_ours(path: Path, cfg: dict, out_parquet: Path):
    from fiveflow.slides.tiling import tile_slide

    return tile_slide(path, "bench", cfg, out_parquet, out_qc=None)


def mask_level_of(meta: dict, path: Path) -> int:
    """The pyramid level our tiler read its mask from (metadata), else the coarsest level <= 8 mpp."""
    if "mask_level" in meta:
        return int(meta["mask_level"])
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        mpp = float(meta.get("slide_mpp") or s.properties.get(openslide.PROPERTY_NAME_MPP_X))
        ok = [i for i, d in enumerate(s.level_downsamples) if mpp * d <= MASK_MPP * (1 + 1e-6)]
        return max(ok, key=lambda i: s.level_downsamples[i]) if ok else 0


def read_mask_level(path: Path, level: int):
    """Open the slide with OpenSlide and read one whole pyramid level: the floor of any masker."""
    import openslide

    s = openslide.OpenSlide(str(path))
    try:
        return s.read_region((0, 0), level, s.level_dimensions[level])
    finally:
        s.close()


def read_level_tifffile(path: Path, level: int):
    """The same level decoded by tifffile/imagecodecs (reference only: not part of any ratio)."""
    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        return tf.series[0].levels[level].asarray(maxworkers=1)


def run_tiatoolbox(path: Path) -> tuple[np.ndarray, float]:
    """tiatoolbox's own path: open, Otsu mask at 8 mpp, filtered sliding-window coordinates.

    Returns the kept tiles' top-left corners in level-0 pixels, and the tile edge in level-0 px.
    """
    from tiatoolbox.tools.patchextraction import SlidingWindowPatchExtractor
    from tiatoolbox.wsicore.wsireader import WSIReader

    reader = WSIReader.open(str(path))
    mask = reader.tissue_mask(method="otsu", resolution=MASK_MPP, units="mpp")
    ex = SlidingWindowPatchExtractor(
        input_img=reader,
        patch_size=PATCH,
        input_mask=mask,
        resolution=TARGET_MPP,
        units="mpp",
        min_mask_ratio=MIN_TISSUE,
        within_bound=True,
    )
    scale = TARGET_MPP / np.asarray(reader.info.mpp, float)  # level-0 px per px at 0.5 mpp (x, y)
    xy0 = ex.coordinate_list[:, :2].astype(np.float64) * scale[None]
    return xy0, float(PATCH * scale[0])


def jaccard(ours_xy: np.ndarray, stride0: float, tia_xy: np.ndarray) -> float:
    """Jaccard index of two tile sets, each tile identified by its nearest position on our grid."""
    a = {(int(x), int(y)) for x, y in np.rint(np.asarray(ours_xy, float) / stride0).astype(np.int64)}
    b = {(int(x), int(y)) for x, y in np.rint(np.asarray(tia_xy, float) / stride0).astype(np.int64)}
    return len(a & b) / len(a | b) if a | b else 1.0


def measure_slide(name: str, path: Path, repeats: int) -> dict:
    """Interleaved timings of the mask-level read, our tiler (both configs) and tiatoolbox."""
    from fiveflow.slides.tiling import read_coords

    with tempfile.TemporaryDirectory(prefix="fiveflow-bench-") as tmp:
        out_a, out_b = Path(tmp) / "ours.parquet", Path(tmp) / "plain.parquet"
        cfg, plain = tiling_cfg(True), tiling_cfg(False)
        # warm-up (imports, OS file cache), and the mask level our tiler reads
        run_ours(path, cfg, out_a)
        df_a, meta_a = read_coords(out_a)
        level = mask_level_of(meta_a, path)
        runs = {
            "read": lambda: read_mask_level(path, level),
            "ours": lambda: run_ours(path, cfg, out_a),
            "plain": lambda: run_ours(path, plain, out_b),
            "tia": lambda: run_tiatoolbox(path),
            "tifffile": lambda: read_level_tifffile(path, level),
        }
        try:
            shape = read_level_tifffile(path, level).shape
            if tuple(shape[1::-1]) != tuple(read_mask_level(path, level).size):
                raise ValueError(f"tifffile level {level} is {shape}")
        except Exception as exc:  # not a TIFF-family file, or a different level layout
            print(f"   (no tifffile reference read: {exc})")
            del runs["tifffile"]
        results = {k: f() for k, f in runs.items() if k != "ours"}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for k, f in runs.items():
                t0 = time.perf_counter()
                results[k] = f()
                times[k].append(time.perf_counter() - t0)
        df_b, meta_b = read_coords(out_b)
        tia_xy, tia_size0 = results["tia"]
        level_dims = results["read"].size
    med = {k: statistics.median(v) for k, v in times.items()}
    mins = {k: min(v) for k, v in times.items()}
    res = dict(
        name=name,
        path=str(path),
        width=int(meta_a["slide_width"]),
        height=int(meta_a["slide_height"]),
        slide_mpp=float(meta_a["slide_mpp"]),
        mask_level=level,
        mask_level_dims=level_dims,
        mask_factor=int(meta_a.get("mask_factor", 1)),
        n_ours=len(df_a),
        n_plain=len(df_b),
        n_tia=len(tia_xy),
        size0=int(meta_a["patch_size_level0"]),
        tia_size0=tia_size0,
        jaccard=jaccard(df_b[["x", "y"]].to_numpy(), float(meta_b["stride_level0"]), tia_xy),
        jaccard_cleanup=jaccard(df_a[["x", "y"]].to_numpy(), float(meta_a["stride_level0"]), tia_xy),
        med=med,
        mins=mins,
        mask_read_ratio=med["ours"] / med["read"],
        vs_tiatoolbox=med["tia"] / med["plain"],
        vs_tiatoolbox_cleanup=med["tia"] / med["ours"],
    )
    m, n = res["med"], res["mins"]
    print(f"\n== {name}: {res['width']}x{res['height']} @ {res['slide_mpp']:.3f} mpp  ({path})")
    print(
        f"   mask image: level {level} {level_dims[0]}x{level_dims[1]}"
        + (f", reduced {res['mask_factor']}x while reading" if res["mask_factor"] > 1 else "")
    )
    print(f"   OpenSlide read of that level      {m['read'] * 1e3:8.1f} ms  (min {n['read'] * 1e3:.1f})")
    if "tifffile" in m:
        print(
            f"   (tifffile decode of that level    {m['tifffile'] * 1e3:8.1f} ms  (min {n['tifffile'] * 1e3:.1f}), "
            "for reference only)"
        )
    print(
        f"   ours, default mask clean-up       {m['ours'] * 1e3:8.1f} ms  (min {n['ours'] * 1e3:.1f})  "
        f"{res['n_ours']} tiles"
    )
    print(
        f"   ours, no clean-up (= tiatoolbox)  {m['plain'] * 1e3:8.1f} ms  (min {n['plain'] * 1e3:.1f})  "
        f"{res['n_plain']} tiles"
    )
    print(
        f"   tiatoolbox 2.x sliding window     {m['tia'] * 1e3:8.1f} ms  (min {n['tia'] * 1e3:.1f})  "
        f"{res['n_tia']} tiles (level-0 tile {res['tia_size0']:.1f} px, ours {res['size0']})"
    )
    print(
        f"   mask_read_ratio={res['mask_read_ratio']:.2f}  vs_tiatoolbox={res['vs_tiatoolbox']:.2f} "
        f"(with our clean-up {res['vs_tiatoolbox_cleanup']:.2f})  coords_jaccard={res['jaccard']:.4f} "
        f"(with our clean-up {res['jaccard_cleanup']:.4f})",
        flush=True,
    )
    return res


# --------------------------------------------------------------------------------------------
# Fresh processes: peak memory, fixed cost per slide, import time
# --------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _wall(cmd: list[str], cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    cp = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    return time.perf_counter() - t0, cp


def _vm_hwm_mb() -> str:
    """Child-side snippet: the process's own peak RSS (VmHWM) in MB.

    Not ``ru_maxrss``: on Linux that survives ``exec`` and, for a child started by this (large)
    process with vfork/posix_spawn, reports this process's RSS; VmHWM belongs to the new image.
    """
    return "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"


def peak_memory(path: Path) -> dict:
    """Tile ``path`` (with QC PNG and GeoJSON) in a fresh process; its peak RSS (VmHWM)."""
    import inspect

    from fiveflow.slides.tiling import tile_slide

    with tempfile.TemporaryDirectory(prefix="fiveflow-bench-") as tmp:
        kw = {"out_qc": str(Path(tmp) / "qc.png")}
        if "out_geojson" in inspect.signature(tile_slide).parameters:
            kw["out_geojson"] = str(Path(tmp) / "tissue.geojson")
        code = (
            "import json, sys, time\n"
            "t0 = time.perf_counter()\n"
            "from fiveflow.slides.tiling import tile_slide\n"
            f"m = tile_slide({str(path)!r}, 'huge', json.loads({json.dumps(tiling_cfg(True))!r}), "
            f"{str(Path(tmp) / 'coords.parquet')!r}, **{kw!r})\n"
            "print(json.dumps({'n_tiles': m.n_tiles, 'status': m.status, 'secs': time.perf_counter() - t0, "
            f"'peak_mb': {_vm_hwm_mb()}}}))\n"
        )
        t0 = time.perf_counter()
        cp = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        sizes = {k: Path(v).stat().st_size for k, v in kw.items() if Path(v).exists()}
    if cp.returncode != 0:
        print(f"   peak-memory run failed (rc {cp.returncode}):\n{cp.stderr[-2000:]}", file=sys.stderr)
        return dict(peak_mb=float("nan"), wall=wall)
    info = json.loads(cp.stdout.strip().splitlines()[-1])
    return dict(wall=wall, outputs=sizes, **info)


def cli_command(slide: Path, out: Path) -> list[str]:
    """``python -m fiveflow.cli tile`` for one slide, in whichever form the CLI has."""
    from fiveflow.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["tile"]
    opts = {s for a in sub._actions for s in a.option_strings}
    base = [sys.executable, "-m", "fiveflow.cli", "tile"]
    if "--slide" in opts:
        return [*base, "--slide", str(slide), "--out", str(out)]
    return [*base, "--config", str(ROOT / "config.yaml"), "--out", str(out), str(slide)]


def fixed_cost(slide: Path, repeats: int) -> dict:
    """Fresh CLI process on one small slide minus the in-process ``tile_slide`` with the same outputs."""
    from fiveflow.config import load_config
    from fiveflow.fileio import slide_id_from_path
    from fiveflow.slides.tiling import tile_slide

    with tempfile.TemporaryDirectory(prefix="fiveflow-bench-") as tmp:
        tmp = Path(tmp)
        cmd = cli_command(slide, tmp / "cli")
        walls = []
        for i in range(repeats + 1):  # the first run warms the OS cache (.pyc, libraries)
            secs, cp = _wall(cmd, cwd=ROOT)
            if cp.returncode != 0:
                print(f"   CLI failed (rc {cp.returncode}): {' '.join(cmd)}\n{cp.stderr[-2000:]}", file=sys.stderr)
                return dict(fixed=float("nan"), cli=float("nan"), inproc=float("nan"), cmd=cmd, top_imports=[])
            if i:
                walls.append(secs)
        made = sorted(p.relative_to(tmp / "cli") for p in (tmp / "cli").rglob("*") if p.is_file())
        # where the CLI's start-up time goes: top-level imports by cumulative time
        _, cp = _wall([cmd[0], "-X", "importtime", *cmd[1:]], cwd=ROOT)
        top = []
        for line in cp.stderr.splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                _, cum, name = line.split("|")
                if cum.strip().isdigit() and not name.startswith("  "):
                    top.append((int(cum) / 1e6, name.strip()))
        top.sort(reverse=True)
        qc = next((p for p in made if p.suffix == ".png"), None)
        gj = next((p for p in made if p.suffix in (".geojson", ".json")), None)
        cfg = load_config(ROOT / "config.yaml")["tiling"]
        sid = slide_id_from_path(slide)
        kw = {}
        if qc is not None:
            kw["out_qc"] = tmp / "in" / qc
        if gj is not None:
            kw["out_geojson"] = tmp / "in" / gj
        inproc = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            tile_slide(slide, sid, cfg, tmp / "in" / "coords" / f"{sid}.parquet", **kw)
            if i:
                inproc.append(time.perf_counter() - t0)
    cli, inp = statistics.median(walls), statistics.median(inproc)
    return dict(fixed=cli - inp, cli=cli, inproc=inp, cmd=cmd, outputs=[str(p) for p in made], top_imports=top[:6])


MODULE_IMPORTS = "import fiveflow.slides.tiling, fiveflow.slides.mask; fiveflow.slides.mask.masker('otsu', 8.0)"


def import_time(slide: Path, repeats: int) -> dict:
    """What a fresh interpreter pays before the tiler does useful work.

    ``import_s``: wall time of a fresh process that imports the tiler and tiles ``slide`` twice
    (no QC), minus twice its second (warm) call: interpreter start, module imports and the imports
    and one-off set-up the first call does lazily (masker, cv2, pyarrow...), whatever the tiler's
    layout. Also: a bare interpreter, and one doing only the module-level imports.
    """
    code = (
        "import json, sys, tempfile, time\n"
        "from pathlib import Path\n"
        "from fiveflow.slides.tiling import tile_slide\n"
        f"cfg = json.loads({json.dumps(tiling_cfg(True))!r})\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        f"    tile_slide({str(slide)!r}, 's', cfg, Path(d) / 'a.parquet')\n"
        "    t = time.perf_counter()\n"
        f"    tile_slide({str(slide)!r}, 's', cfg, Path(d) / 'b.parquet')\n"
        "    print(time.perf_counter() - t)\n"
    )
    bare, mods, full = [], [], []
    for i in range(repeats + 1):
        s_bare, _ = _wall([sys.executable, "-c", "pass"])
        s_mods, cp1 = _wall([sys.executable, "-c", MODULE_IMPORTS])
        s_full, cp2 = _wall([sys.executable, "-c", code])
        if cp1.returncode or cp2.returncode:
            print(f"   import check failed:\n{(cp1.stderr + cp2.stderr)[-2000:]}", file=sys.stderr)
            return dict(import_s=float("nan"), interp_s=s_bare, modules_s=float("nan"))
        if i:
            bare.append(s_bare)
            mods.append(s_mods)
            full.append(s_full - 2 * float(cp2.stdout.strip().splitlines()[-1]))
    return dict(import_s=statistics.median(full), interp_s=statistics.median(bare), modules_s=statistics.median(mods))


# --------------------------------------------------------------------------------------------


def parse_size(s: str) -> tuple[int, int]:
    w, h = s.lower().split("x")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default=",".join(f"{w}x{h}" for w, h in (MAIN_SIZE, HUGE_SIZE)),
        help="synthetic slide sizes WxH, comma-separated (default: %(default)s)",
    )
    ap.add_argument("--skip-huge", action="store_true", help=f"skip the {HUGE_SIZE[0]}x{HUGE_SIZE[1]} slide")
    ap.add_argument("--repeats", type=int, default=9, help="timed runs per measurement after one warm-up (median)")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/fiveflow-bench-cache"),
        help="folder for the generated synthetic slides (default: %(default)s)",
    )
    ap.add_argument("--no-cmu", action="store_true", help="skip the real CMU-1-Small-Region.svs")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if args.skip_huge:
        sizes = [s for s in sizes if s != HUGE_SIZE]

    # imports first, so that no timing below pays for them (tiatoolbox's take ~10 s)
    import logging

    t0 = time.perf_counter()
    import openslide  # noqa: F401
    import tiatoolbox.tools.patchextraction  # noqa: F401
    import tiatoolbox.wsicore.wsireader  # noqa: F401
    from tiatoolbox import logger as tia_logger

    import fiveflow.slides.tiling  # noqa: F401

    tia_logger.setLevel(logging.ERROR)  # "objective power inferred from mpp" on every open
    print(f"imports (tiatoolbox, fiveflow, openslide) in this process: {time.perf_counter() - t0:.1f} s")
    print(
        f"tiles {PATCH} px at {TARGET_MPP} mpp, min_tissue {MIN_TISSUE}, Otsu mask at {MASK_MPP} mpp; "
        f"{args.repeats} timed runs after a warm-up, medians; cpu count {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )

    slides: list[tuple[str, Path, tuple[int, int] | None]] = []
    for w, h in sizes:
        t0 = time.perf_counter()
        fresh = not (args.cache / f"synthetic_{w}x{h}_mpp{MPP:g}_v{GEN_VERSION}.tif").is_file()
        p = synthetic_slide(args.cache, w, h)
        print(
            f"synthetic {w}x{h}: {p} ({p.stat().st_size / 2**20:.0f} MiB, "
            + (f"generated in {time.perf_counter() - t0:.0f} s)" if fresh else "cached)")
        )
        slides.append((f"synthetic {w}x{h}", p, (w, h)))
    if not args.no_cmu:
        if CMU.is_file():
            slides.append(("CMU-1-Small-Region.svs", CMU, None))
        else:
            print(f"real slide not found: {CMU} (skipped)")

    results = {}
    for name, path, size in slides:
        results[size or "cmu"] = measure_slide(name, path, args.repeats)

    peak = None
    if HUGE_SIZE in sizes:
        path = next(p for _, p, s in slides if s == HUGE_SIZE)
        peak = peak_memory(path)
        print(
            f"\n== peak memory: fresh process tiling {HUGE_SIZE[0]}x{HUGE_SIZE[1]} with QC PNG + GeoJSON: "
            f"{peak['peak_mb']:.0f} MB peak RSS (VmHWM), {peak['wall']:.1f} s wall "
            f"({peak.get('n_tiles', '?')} tiles, {peak.get('status', '?')}, outputs {peak.get('outputs', {})})"
        )

    small = CMU if CMU.is_file() else synthetic_slide(args.cache, 8000, 6000)
    fc = fixed_cost(small, args.repeats)
    it = import_time(small, args.repeats)
    print(
        f"\n== fixed cost per slide ({small.name}): fresh CLI process {fc['cli']:.2f} s - in-process tile_slide "
        f"{fc['inproc']:.3f} s = {fc['fixed']:.2f} s"
    )
    print(f"   CLI: {' '.join(fc['cmd'][1:])}  (outputs: {', '.join(fc.get('outputs', []))})")
    if fc["top_imports"]:
        print(
            "   slowest top-level imports of the CLI process (cumulative): "
            + ", ".join(f"{n} {s:.2f} s" for s, n in fc["top_imports"])
        )
    print(
        f"   fresh interpreter: bare {it['interp_s']:.3f} s; module-level tiler imports {it['modules_s']:.3f} s; "
        f"start + all imports + first-call set-up of tile_slide (import_s) {it['import_s']:.3f} s"
    )

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes on the machine add noise)")
    main_key = MAIN_SIZE if MAIN_SIZE in results else next((k for k in results if k != "cmu"), None)
    r = results.get(main_key) or {}
    if main_key != MAIN_SIZE and r:
        print(f"note: {MAIN_SIZE[0]}x{MAIN_SIZE[1]} not run; RESULT ratios come from {r['name']}")
    nan = float("nan")
    print(
        "RESULT "
        + " ".join(
            [
                f"mask_read_ratio={r.get('mask_read_ratio', nan):.3f}",
                f"vs_tiatoolbox={r.get('vs_tiatoolbox', nan):.3f}",
                f"peak_mb={peak['peak_mb'] if peak else nan:.0f}",
                f"fixed_s_per_slide={fc['fixed']:.3f}",
                f"import_s={it['import_s']:.3f}",
                f"coords_jaccard={r.get('jaccard', nan):.4f}",
            ]
        )
    )


if __name__ == "__main__":
    main()
