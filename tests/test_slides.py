import math

import numpy as np
import openslide
import pandas as pd
import pytest

from conftest import TILING, write_test_slide
from fiveflow.slides.mask import tile_fractions
from fiveflow.slides.reader import SlideError, best_level
from fiveflow.slides.tiling import expected_tiles, plan_grid, read_coords, tile_slide


def test_grid_is_inside_and_non_overlapping():
    xs, ys = plan_grid(1000, 700, 256)
    assert len(xs) == 3 * 2
    assert xs.max() + 256 <= 1000 and ys.max() + 256 <= 700
    assert len(set(zip(xs, ys))) == len(xs)


def test_best_level_never_upsamples():
    ds = (1.0, 2.0, 4.0, 8.0)
    assert best_level(ds, 3.9) == 1
    assert best_level(ds, 4.0) == 2
    assert best_level(ds, 0.5) == 0
    assert best_level(ds, 100) == 3


def test_tile_fractions_integral_image():
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True
    f = tile_fractions(mask, np.array([0, 50, 0]), np.array([0, 0, 50]), 50, 0.1)
    assert f.tolist() == [1.0, 0.0, 0.0]
    f = tile_fractions(mask, np.array([25]), np.array([0]), 50, 0.1)
    assert f[0] == pytest.approx(0.5, abs=0.11)


def test_tile_synthetic_slide_physical_size(small_slide, tmp_path):
    meta = tile_slide(small_slide, "small", TILING, tmp_path / "c.parquet", tmp_path / "qc.png")
    coords, md = read_coords(tmp_path / "c.parquet")
    # 128 px at 1.0 mpp on a 0.5 mpp slide = 256 level-0 px, read from level 1 (downsample 2) at 128 px
    assert md["patch_size_level0"] == 256 and md["read_level"] == 1 and md["read_size"] == 128
    assert md["slide_mpp"] == pytest.approx(0.5) and md["mpp_source"] == "metadata"
    assert md["mask_method"] == "otsu" and md["min_tissue"] == 0.5 and "fiveflow_version" in md
    assert meta.n_tiles == len(coords) > 0
    # every kept tile overlaps the tissue rectangle (512..1536 x 384..1152) by at least half
    assert coords["x"].min() >= 512 - 128 - 16 and (coords["x"] + 256).max() <= 1536 + 128 + 16
    assert coords["y"].min() >= 384 - 128 - 16 and (coords["y"] + 256).max() <= 1152 + 128 + 16
    assert (coords["tissue"] >= 0.5).all()
    assert (tmp_path / "qc.png").stat().st_size > 0
    assert expected_tiles(2048, 1536, 0.5, 1.0, 128) == 8 * 6


def test_tiles_scale_with_target_mpp(small_slide, tmp_path):
    n1 = tile_slide(small_slide, "s", {**TILING, "target_mpp": 0.5}, tmp_path / "a.parquet").n_tiles
    n2 = tile_slide(small_slide, "s", {**TILING, "target_mpp": 1.0}, tmp_path / "b.parquet").n_tiles
    assert n1 == pytest.approx(4 * n2, rel=0.35)


def test_missing_mpp_is_a_clear_error_unless_assumed(tmp_path):
    p = write_test_slide(tmp_path / "nompp.tif", mpp=None)
    with pytest.raises(SlideError, match="assume_mpp"):
        tile_slide(p, "nompp", TILING, tmp_path / "c.parquet")
    assert not (tmp_path / "c.parquet").exists()
    meta = tile_slide(p, "nompp", {**TILING, "assume_mpp": 0.5}, tmp_path / "c.parquet")
    assert meta.mpp_source == "assumed" and meta.n_tiles > 0


def test_broken_slide_names_file_and_fix(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a tiff" * 100)
    with pytest.raises(SlideError, match="broken.svs.*Fix"):
        tile_slide(bad, "broken", TILING, tmp_path / "c.parquet")
    with pytest.raises(SlideError, match="not found"):
        tile_slide(tmp_path / "absent.svs", "absent", TILING, tmp_path / "c.parquet")


def test_real_svs(cmu_slide, tmp_path):
    meta = tile_slide(cmu_slide, "CMU-1", {**TILING, "patch_size": 224}, tmp_path / "c.parquet", tmp_path / "qc.png")
    assert meta.slide_mpp == pytest.approx(0.499, abs=1e-3)
    assert meta.patch_size_level0 == round(224 / 0.499)
    coords, _ = read_coords(tmp_path / "c.parquet")
    # tissue covers roughly a third of this field: some but not all grid cells are kept
    total = math.floor(2220 / meta.patch_size_level0) * math.floor(2967 / meta.patch_size_level0)
    assert 0 < len(coords) < total
    s = openslide.OpenSlide(str(cmu_slide))
    for x, y in coords[["x", "y"]].to_numpy()[:3]:
        tile = np.asarray(s.read_region((int(x), int(y)), 0, (64, 64)).convert("RGB"))
        assert tile.mean() < 235  # not blank background


def test_shared_broken_svs(tmp_path):
    from conftest import shared_path

    with pytest.raises(SlideError):
        tile_slide(shared_path("slides/broken.svs"), "broken", TILING, tmp_path / "c.parquet")
