"""Attention heatmaps from stored attention and coordinates (fiveflow.evaluate.heatmap)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fiveflow.evaluate.heatmap import (attention_grid, load_attention, normalise_attention, render_heatmap,
                                       save_attention, tile_footprints)


def _grid_slide(slide_wh=(40000, 30000), tile=512, step=512, keep_frac=0.7, seed=0):
    """Tiles on a regular grid over a random tissue subset of the slide."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(0, slide_wh[0] - tile + 1, step), np.arange(0, slide_wh[1] - tile + 1, step))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
    return coords[rng.random(len(coords)) < keep_frac]


@pytest.mark.parametrize("normalise", ["rank", "minmax"])
def test_hot_rectangle_lands_in_its_thumbnail_footprint(normalise):
    slide_wh, thumb_wh, tile = (40000, 30000), (1024, 768), 512
    coords = _grid_slide(slide_wh, tile)
    rect = (10240, 7680, 25600, 19456)  # level-0 x0, y0, x1, y1 (tile-aligned), ~15% of the tiles
    inside = ((coords[:, 0] >= rect[0]) & (coords[:, 0] + tile <= rect[2])
              & (coords[:, 1] >= rect[1]) & (coords[:, 1] + tile <= rect[3]))
    rng = np.random.default_rng(1)
    att = np.where(inside, 5.0 + rng.random(len(coords)), rng.random(len(coords)))
    grid = attention_grid(coords, att, tile, slide_wh, thumb_wh, normalise=normalise)
    assert grid.shape == (768, 1024) and grid.dtype == np.float32
    sx, sy = thumb_wh[0] / slide_wh[0], thumb_wh[1] / slide_wh[1]
    fx0, fy0, fx1, fy1 = round(rect[0] * sx), round(rect[1] * sy), round(rect[2] * sx), round(rect[3] * sy)
    in_rect = np.zeros(grid.shape, bool)
    in_rect[fy0:fy1, fx0:fx1] = True
    finite = np.isfinite(grid)
    hot = finite & (grid > np.nanpercentile(grid, 90))
    assert hot.sum() > 0
    assert (hot & in_rect).sum() / hot.sum() >= 0.95
    # cold elsewhere: outside the rectangle nothing reaches the rectangle's coldest value
    assert np.nanmax(np.where(in_rect, np.nan, grid)) < np.nanmin(np.where(in_rect, grid, np.nan))


def test_nan_outside_tiles_and_values_in_unit_interval():
    slide_wh, thumb_wh, tile = (20000, 10000), (1000, 500), 1000
    coords = np.array([[0, 0], [5000, 5000], [19000, 9000]])
    grid = attention_grid(coords, np.array([-3.0, 0.1, 7.0]), tile, slide_wh, thumb_wh)
    finite = np.isfinite(grid)
    expected = np.zeros_like(finite)
    expected[0:50, 0:50] = expected[250:300, 250:300] = expected[450:500, 950:1000] = True
    assert np.array_equal(finite, expected)
    assert grid[finite].min() == 0.0 and grid[finite].max() == 1.0
    assert np.allclose(grid[260, 260], 0.5)
    # min-max keeps the spacing of the raw scores
    mm = attention_grid(coords, np.array([0.0, 1.0, 4.0]), tile, slide_wh, thumb_wh, normalise="minmax")
    assert np.isclose(mm[260, 260], 0.25)
    assert np.all(np.isnan(attention_grid(np.zeros((0, 2)), np.zeros(0), tile, slide_wh, thumb_wh)))
    with pytest.raises(ValueError):
        attention_grid(coords, np.ones(2), tile, slide_wh, thumb_wh)


def test_constant_attention_and_rank_ties():
    assert np.all(normalise_attention(np.ones(5)) == 0.5)
    r = normalise_attention(np.array([1.0, 1.0, 3.0, 0.0]))
    assert np.allclose(r, [0.5, 0.5, 1.0, 0.0])
    with pytest.raises(ValueError):
        normalise_attention(np.array([0.0, 1.0]), "bogus")


def test_footprints_scale_per_axis_for_non_square_slide_and_thumbnail():
    # 60000 x 20000 slide (3:1) onto a 600 x 400 thumbnail (3:2): x scales by 1/100, y by 1/50
    slide_wh, thumb_wh, tile = (60000, 20000), (600, 400), 2000
    coords = np.array([[0, 0], [30000, 10000], [58000, 18000]])
    fp = tile_footprints(coords, tile, slide_wh, thumb_wh)
    assert fp.tolist() == [[0, 0, 20, 40], [300, 200, 320, 240], [580, 360, 600, 400]]
    grid = attention_grid(coords, np.array([0.0, 1.0, 2.0]), tile, slide_wh, thumb_wh)
    assert grid.shape == (400, 600)
    assert np.isfinite(grid).sum() == 3 * 20 * 40
    assert np.all(grid[200:240, 300:320] == 0.5) and np.isnan(grid[240, 300]) and np.isnan(grid[200, 320])
    # adjacent tiles stay adjacent (no gaps, no double cover) at a non-integer scale
    coords = _grid_slide((7000, 5000), 512, 512, keep_frac=1.0)
    grid = attention_grid(coords, np.arange(len(coords), dtype=float), 512, (7000, 5000), (333, 240))
    fp = tile_footprints(coords, 512, (7000, 5000), (333, 240))
    assert np.isfinite(grid).sum() == ((fp[:, 2] - fp[:, 0]) * (fp[:, 3] - fp[:, 1])).sum()


def test_overlapping_tiles_average():
    grid = attention_grid(np.array([[0, 0], [50, 0]]), np.array([0.0, 1.0]), 100, (200, 100), (200, 100))
    assert np.all(grid[:, :50] == 0.0) and np.allclose(grid[:, 50:100], 0.5) and np.all(grid[:, 100:150] == 1.0)
    assert np.all(np.isnan(grid[:, 150:]))


def test_render_writes_nonblank_png_atomically(tmp_path):
    slide_wh, thumb_wh, tile = (40000, 30000), (400, 300), 512
    coords = _grid_slide(slide_wh, tile, keep_frac=0.5)
    rng = np.random.default_rng(0)
    grid = attention_grid(coords, rng.random(len(coords)), tile, slide_wh, thumb_wh)
    thumb = np.full((300, 400, 3), 235, np.uint8)
    thumb[50:250, 60:340] = (200, 120, 170)
    out = tmp_path / "heat" / "s1.png"
    assert render_heatmap(thumb, grid, out, title="s1  abmil  fold 0") == out
    img = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert img.shape[0] >= 300 and img.shape[1] >= 400
    assert img.std() > 10
    assert sorted(p.name for p in out.parent.iterdir()) == ["s1.png"]
    # a grid at another resolution is resized to the thumbnail
    render_heatmap(thumb, grid[::2, ::2], out, cmap="viridis")
    assert sorted(p.name for p in out.parent.iterdir()) == ["s1.png"]


def test_save_load_roundtrip(tmp_path):
    coords = np.array([[0, 512], [1024, 2048], [4096, 0]], dtype=np.int64)
    att = np.array([0.1, 0.7, 0.2], dtype=np.float32)
    p = save_attention(tmp_path / "attention" / "abmil" / "s1.parquet", "s1", coords, att, "abmil",
                       tile_size_level0=np.int64(512), slide_wh=(5000, 3000))
    c2, a2, meta = load_attention(p)
    assert np.array_equal(c2, coords) and c2.dtype == np.int64
    assert np.array_equal(a2, att) and a2.dtype == np.float32
    assert meta == {"slide_id": "s1", "method": "abmil", "n_tiles": 3, "tile_size_level0": 512,
                    "slide_wh": [5000, 3000]}
    assert sorted(x.name for x in p.parent.iterdir()) == ["s1.parquet"]
    with pytest.raises(ValueError):
        save_attention(tmp_path / "bad.parquet", "s1", coords, att[:2], "abmil")
