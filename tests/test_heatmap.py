"""Attention heatmaps from stored attention and coordinates (fiveflow.evaluate.attention)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fiveflow.evaluate.attention import (
    attention_grid,
    is_flat,
    load_attention,
    normalise_attention,
    render_heatmap,
    save_attention,
    tile_footprints,
)


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
    inside = (
        (coords[:, 0] >= rect[0])
        & (coords[:, 0] + tile <= rect[2])
        & (coords[:, 1] >= rect[1])
        & (coords[:, 1] + tile <= rect[3])
    )
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
    # equal up to float32 round-off (a collapsed DSMIL: 1/N each): flat, not rank-amplified noise
    near = np.float32(1 / 48) + np.array([0, 1e-9, -1e-9, 2e-9], dtype=np.float32)
    assert is_flat(near) and np.all(normalise_attention(near) == 0.5)
    assert not is_flat(np.array([0.02, 0.0201])) and is_flat(np.zeros(3))
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
    p = save_attention(
        tmp_path / "attention" / "abmil" / "s1.parquet",
        "s1",
        coords,
        att,
        "abmil",
        tile_size_level0=np.int64(512),
        slide_wh=(5000, 3000),
    )
    c2, a2, meta = load_attention(p)
    assert np.array_equal(c2, coords) and c2.dtype == np.int64
    assert np.array_equal(a2, att) and a2.dtype == np.float32
    assert meta == {
        "slide_id": "s1",
        "method": "abmil",
        "n_tiles": 3,
        "tile_size_level0": 512,
        "slide_wh": [5000, 3000],
    }
    assert sorted(x.name for x in p.parent.iterdir()) == ["s1.parquet"]
    with pytest.raises(ValueError):
        save_attention(tmp_path / "bad.parquet", "s1", coords, att[:2], "abmil")


# ---------------------------------------------------------------- stored attention of a training run


def _write_bag(path, feats, coords, geometry=True):
    import h5py

    with h5py.File(path, "w") as fh:
        fh["features"] = feats.astype(np.float32)
        fh["coords"] = coords.astype(np.int64)
        if geometry:
            fh.attrs.update(slide_width=4096, slide_height=3072, patch_size_level0=256)


@pytest.fixture
def tiny_task(tmp_path):
    """Eight 2-class bags with coords (the last test bag without geometry attributes), split and draws."""
    import pandas as pd
    import yaml

    from conftest import PROJECT_ROOT

    rng = np.random.default_rng(0)
    ids = [f"S{i}" for i in range(8)]
    labels = ["LUAD", "LUSC"] * 4
    paths = {}
    for i, (sid, lab) in enumerate(zip(ids, labels)):
        n = 20 + i
        coords = np.stack([rng.integers(0, 15, n) * 256, rng.integers(0, 11, n) * 256], 1)
        feats = rng.normal(size=(n, 8)) + (lab == "LUSC") * np.linspace(0, 1, 8)
        paths[sid] = str(tmp_path / f"{sid}.h5")
        _write_bag(paths[sid], feats, coords, geometry=sid != "S7")
    split = pd.DataFrame({"slide_id": ids, "patient_id": ids, "label": labels, "split": ["train"] * 4 + ["test"] * 4})
    split.to_csv(tmp_path / "split.csv", index=False)
    draws = pd.DataFrame(
        {"shots": [2] * 8, "run": [0] * 4 + [1] * 4, "seed": [11] * 4 + [12] * 4, "slide_id": ids[:4] * 2}
    )
    draws.to_csv(tmp_path / "draws.csv", index=False)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["train"]["device"] = "cpu"
    return tmp_path, paths, cfg


@pytest.mark.parametrize("name,kind", [("meanpool", "instance_logit"), ("abmil", "attention")])
def test_baseline_saves_run0_attention_and_same_predictions(tiny_task, name, kind, monkeypatch, caplog):
    from fiveflow.baselines import abmil, run_baseline

    monkeypatch.setattr(abmil, "EPOCHS", 3)
    d, paths, cfg = tiny_task
    run_baseline(name, d / "split.csv", d / "draws.csv", paths, cfg, 2, d / "plain.parquet")
    run_baseline(name, d / "split.csv", d / "draws.csv", paths, cfg, 2, d / "with.parquet", attention_dir=d / "att")
    # the predictions file does not change when attention is saved
    assert (d / "plain.parquet").read_bytes() == (d / "with.parquet").read_bytes()
    files = sorted(p.name for p in (d / "att").glob("*.parquet"))
    assert files == ["S4.parquet", "S5.parquet", "S6.parquet"]  # S7's bag has no geometry: skipped, logged
    assert "S7" in caplog.text and "no level-0 coords" in caplog.text
    import pandas as pd

    pred = pd.read_parquet(d / "with.parquet")
    for sid in ("S4", "S5", "S6"):
        coords, att, meta = load_attention(d / "att" / f"{sid}.parquet")
        assert len(att) == len(coords) == 20 + int(sid[1:]) and np.all(np.isfinite(att))
        assert meta["kind"] == kind and meta["method"] == name and meta["shots"] == 2 and meta["run"] == 0
        assert meta["seed"] == 11 and meta["slide_wh"] == [4096, 3072] and meta["tile_size_level0"] == 256
        row = pred[(pred["run"] == 0) & (pred["slide_id"] == sid)].iloc[0]
        assert meta["prob"] == pytest.approx(row["prob"]) and meta["label"] == row["label"]
    if name == "abmil":
        assert att.sum() == pytest.approx(1.0, abs=1e-5)  # softmax attention


def test_meanpool_instance_logits_average_to_the_bag_logit(tiny_task):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fiveflow.baselines.meanpool import instance_logits, mean_features
    from fiveflow.train.data import BagStore

    _, paths, _ = tiny_task
    store = BagStore(paths)
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        mean_features(store, ["S0", "S1", "S2", "S3"]), [0, 1, 0, 1]
    )
    logits = instance_logits(clf, store, ["S4", "S5"])
    bag = clf.decision_function(mean_features(store, ["S4", "S5"]))
    assert np.allclose([lg.mean() for lg in logits], bag)  # linear probe: mean of instance logits = bag logit


def test_run_draws_refuses_attention_dir_without_attention(tiny_task):
    from fiveflow.baselines import meanpool
    from fiveflow.train.draws import run_draws

    d, paths, cfg = tiny_task
    with pytest.raises(ValueError, match="returns no attention"):
        run_draws(
            "meanpool",
            meanpool.fit_predict,
            d / "split.csv",
            d / "draws.csv",
            paths,
            cfg,
            2,
            None,
            attention_dir=d / "att",
        )


# ---------------------------------------------------------------- rendering from a slide file


@pytest.fixture(scope="module")
def small_demo_slide(tmp_path_factory):
    from fiveflow.cohort.demo import demo_cases, write_demo_slide

    case = demo_cases(8, 0)[0]
    path = tmp_path_factory.mktemp("slide") / f"{case.slide_id}.tif"
    write_demo_slide(case, path, 1536, 1024, 0.5)
    return case, path


def test_render_method_pngs_montage_and_cli(small_demo_slide, tmp_path, caplog):
    from fiveflow.cli import main
    from fiveflow.evaluate.heatmaps import MONTAGE_TITLE_CHARS, heatmap_title, render_method, wrap_title

    case, slide = small_demo_slide
    xs, ys = np.meshgrid(np.arange(0, 1536 - 255, 256), np.arange(0, 1024 - 255, 256))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    att_dir = tmp_path / "att"
    meta = dict(
        kind="attention",
        slide_wh=[1536, 1024],
        tile_size_level0=256,
        prob=0.87,
        label=case.label,
        shots=8,
        run=0,
        seed=1,
    )
    save_attention(att_dir / f"{case.slide_id}.parquet", case.slide_id, coords, np.arange(len(coords)), "abmil", **meta)
    written = render_method(
        att_dir,
        {case.slide_id: str(slide)},
        tmp_path / "pngs",
        tmp_path / "montage.png",
        thumbnail_size=256,
        max_slides=4,
        positive="LUSC",
    )
    assert [p.name for p in written] == [f"{case.slide_id}.png"]
    img = np.asarray(Image.open(written[0]).convert("RGB"))
    assert img.shape[0] >= 170 and img.shape[1] >= 256  # the 256 x 171 thumbnail plus colour bar and title
    assert Image.open(tmp_path / "montage.png").size[0] > 100
    title = heatmap_title({"slide_id": case.slide_id, "method": "abmil", **meta}, "LUSC")
    assert title == f"{case.slide_id}  true {case.label}  P(LUSC)=0.87  abmil  8-shot run 0"
    assert (
        main(
            [
                "heatmap",
                "--attention",
                str(att_dir / f"{case.slide_id}.parquet"),
                "--slide",
                str(slide),
                "--out",
                str(tmp_path / "cli.png"),
                "--thumbnail-size",
                "256",
            ]
        )
        == 0
    )
    assert (tmp_path / "cli.png").stat().st_size > 1000
    # flat scores (every tile the same): rendered, flagged in the title and the log
    save_attention(
        tmp_path / "flat" / f"{case.slide_id}.parquet",
        case.slide_id,
        coords,
        np.full(len(coords), 1 / len(coords)),
        "dsmil",
        **meta,
    )
    with caplog.at_level("WARNING"):
        render_method(
            tmp_path / "flat", {case.slide_id: str(slide)}, tmp_path / "p3", tmp_path / "m3.png", thumbnail_size=256
        )
    assert "1 of 1 slides have flat scores" in caplog.text
    assert heatmap_title({"slide_id": "s", "method": "dsmil", **meta, "flat": True}).endswith(
        "FLAT: all tiles scored the same"
    )
    assert heatmap_title({"slide_id": "s", "method": "FiVE", **meta, "kind": "instance_evidence"}).endswith(
        "8-shot run 0  (tile evidence)"
    )
    long = heatmap_title({"slide_id": case.slide_id, "method": "FiVE", **meta, "kind": "instance_evidence"}, "LUSC")
    assert wrap_title(long, MONTAGE_TITLE_CHARS).split("\n") == [
        f"{case.slide_id}  true {case.label}",
        "P(LUSC)=0.87  FiVE  8-shot run 0",
        "(tile evidence)",
    ]
    assert all(len(line) <= MONTAGE_TITLE_CHARS for line in wrap_title(long, MONTAGE_TITLE_CHARS).split("\n"))
    # attention of another slide size: a clear error, no PNG
    save_attention(
        tmp_path / "bad" / "x.parquet",
        case.slide_id,
        coords,
        np.ones(len(coords)),
        "abmil",
        **{**meta, "slide_wh": [4096, 4096]},
    )
    with pytest.raises(ValueError, match="4096x4096 slide"):
        render_method(tmp_path / "bad", {"x": str(slide)}, tmp_path / "p2", tmp_path / "m2.png", thumbnail_size=256)
    assert not list((tmp_path / "p2").glob("*.png"))


# ---------------------------------------------------------------- hot regions on the demo cohort's known layout

# The demo layout at a third of the rendering cost: 3072 x 2304 px at 1.0 mpp is the physical field of
# the default 6144 x 4608 px at 0.5 mpp (the Scene is laid out in microns), tiled as the workflow does
# (224 px at 1.0 mpp, here 224 level-0 px), embedded with the demo encoder. Training: the first
# patients' slides up to HOT_TRAIN_PER_CLASS per class (as an 8-shot draw). Test: the next
# HOT_TEST slides of other patients whose layout (from the Scene, before rendering) has both tumour and
# other tissue tiles -- the only slides where a tumour-vs-other AUC is defined; most demo slides are
# almost all tumour after tissue masking.
HOT_CASES, HOT_WH, HOT_MPP, HOT_TILE, HOT_TRAIN_PER_CLASS, HOT_TEST = 48, (3072, 2304), 1.0, 224, 8, 10


def tumour_tiles(case, coords, tile, slide_wh=HOT_WH, mpp=HOT_MPP, tissue=False, difficulty=None):
    """Per tile: True when at least half of a 4 x 4 grid of points in it is tissue (``tis > 0``) in the
    tumour region (``nrm < 0.5``), where the generator draws the class-specific morphology. With
    ``tissue``: also the per-tile tissue fraction."""
    from fiveflow.cohort.scene import Scene

    scene = Scene(case, slide_wh[0], slide_wh[1], mpp, difficulty)
    g = (np.arange(4) + 0.5) / 4 * tile
    tum, tis = [], []
    for x, y in np.asarray(coords):
        f = scene.fields((x + g)[None, :] * mpp, (y + g)[:, None] * mpp)
        tum.append(((f["tis"] > 0) & (f["nrm"] < 0.5)).mean() >= 0.5)
        tis.append((f["tis"] > 0).mean())
    return (np.array(tum), np.array(tis)) if tissue else np.array(tum)


def mixed_layout(case, difficulty=None) -> bool:
    """The slide's tissue tiles (>= half tissue) are 20-80% tumour, by the Scene alone (no pixels)."""
    from fiveflow.slides.tiling import plan_grid

    coords = np.stack(plan_grid(*HOT_WH, HOT_TILE), 1)
    tum, tis = tumour_tiles(case, coords, HOT_TILE, tissue=True, difficulty=difficulty)
    keep = tis >= 0.5
    return keep.sum() >= 10 and 0.2 <= tum[keep].mean() <= 0.8


def hot_split(cases, difficulty=None):
    train, test, used = [], [], set()
    for label in ("LUAD", "LUSC"):
        for p in dict.fromkeys(c.patient_id for c in cases if c.label == label):
            if sum(c.label == label for c in train) >= HOT_TRAIN_PER_CLASS:
                break
            train.extend(c for c in cases if c.patient_id == p)
            used.add(p)
    for c in cases:
        if len(test) < HOT_TEST and c.patient_id not in used and mixed_layout(c, difficulty):
            test.append(c)
    return train, test


def _layout_bags(out, difficulty=None):
    import torch

    from fiveflow.cohort.demo import demo_cases, write_demo_slide
    from fiveflow.embed.encoders import build_encoder
    from fiveflow.embed.extract import embed_slide
    from fiveflow.slides.tiling import default_tiling, tile_slide

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = build_encoder("demo", "random", 0)
        train, test = hot_split(demo_cases(HOT_CASES, 0), difficulty)
        for c in train + test:
            slide = out / f"{c.slide_id}.tif"
            write_demo_slide(c, slide, *HOT_WH, HOT_MPP, difficulty=difficulty)
            meta = tile_slide(slide, c.slide_id, default_tiling(), out / f"{c.slide_id}.parquet")
            assert meta.status == "ok", meta.message
            embed_slide(
                slide, out / f"{c.slide_id}.parquet", enc, out / f"{c.slide_id}.h5", progress=False, device="cpu"
            )
    finally:
        torch.set_num_threads(threads)
    return out, train, test


@pytest.fixture(scope="module")
def demo_bags(tmp_path_factory):
    """The demo's layout (its default difficulty: 15-30% of the tissue normal lung)."""
    return _layout_bags(tmp_path_factory.mktemp("demo_layout"))


def hot_region_stats(demo_bags, scores, prob, method, kind, tmp_path, difficulty=None):
    """Save one run's per-tile scores as the workflow does, paint them, and compare with the layout:
    per-slide tumour-vs-other tile ROC AUCs, and the tumour fraction under hot (top decile of the rank
    grid) and cold (bottom half) thumbnail pixels. Renders the first test slide to ``tmp_path/one.png``."""
    from sklearn.metrics import roc_auc_score

    from fiveflow.evaluate.attention import attention_grid, save_run_attention
    from fiveflow.evaluate.heatmaps import render_slide, slide_heatmap

    out, train, test = demo_bags
    paths = {c.slide_id: str(out / f"{c.slide_id}.h5") for c in train + test}
    save_run_attention(
        tmp_path / "att",
        paths,
        [c.slide_id for c in test],
        scores,
        prob,
        method,
        kind,
        labels={c.slide_id: c.label for c in train + test},
        shots=HOT_TRAIN_PER_CLASS,
        run=0,
        seed=0,
    )
    aucs, hot_on_tumour, cold_on_tumour = [], [], []
    for c, a in zip(test, scores):
        f = tmp_path / "att" / f"{c.slide_id}.parquet"
        thumb, grid, meta = slide_heatmap(f, out / f"{c.slide_id}.tif", thumbnail_size=512)
        assert meta["kind"] == kind
        coords = load_attention(f)[0]
        tumour = tumour_tiles(c, coords, meta["tile_size_level0"], difficulty=difficulty)
        if not 0 < tumour.sum() < len(tumour):
            continue
        aucs.append(roc_auc_score(tumour, a))
        truth = attention_grid(
            coords,
            tumour.astype(float),
            meta["tile_size_level0"],
            HOT_WH,
            (thumb.shape[1], thumb.shape[0]),
            normalise="minmax",
        )
        hot, cold = grid >= 0.9, grid <= 0.5
        hot_on_tumour.append(float(truth[hot].mean()))
        cold_on_tumour.append(float(truth[cold].mean()))
    render_slide(
        tmp_path / "att" / f"{test[0].slide_id}.parquet",
        out / f"{test[0].slide_id}.tif",
        tmp_path / "one.png",
        thumbnail_size=512,
    )
    print(
        f"\n{method} ({kind}) on {len(test)} test slides ({len(aucs)} with tumour and other tiles): per-slide "
        f"AUC {np.round(aucs, 2)} mean {np.mean(aucs):.3f} median {np.median(aucs):.3f}; hot px on tumour "
        f"{np.mean(hot_on_tumour):.3f}, cold px on tumour {np.mean(cold_on_tumour):.3f}; slide accuracy "
        f"{np.mean((np.asarray(prob) > 0.5) == np.array([c.label == 'LUSC' for c in test])):.2f}"
    )
    assert (tmp_path / "one.png").stat().st_size > 1000
    return np.array(aucs), np.mean(hot_on_tumour), np.mean(cold_on_tumour)


def _abmil_attention(bags, seed=0):
    import torch

    from fiveflow.baselines import abmil, with_attention
    from fiveflow.train.data import BagStore

    out, train, test = bags
    paths = {c.slide_id: str(out / f"{c.slide_id}.h5") for c in train + test}
    assert not {c.patient_id for c in train} & {c.patient_id for c in test} and len(test) == HOT_TEST
    y = np.array([int(c.label == "LUSC") for c in train])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return with_attention(abmil.fit_predict)(
            BagStore(paths), [c.slide_id for c in train], y, [c.slide_id for c in test], seed, "cpu"
        )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.e2e
@pytest.mark.xfail(
    strict=True,
    reason="ABMIL's attention does not single out the tumour on the demo layout "
    "(seeds 0-4: mean per-slide AUC 0.53-0.57, cold pixels more on tumour than hot ones); an "
    "XPASS means it now does: restate this test and the README",
)
def test_abmil_heatmap_is_hot_on_the_tumour(demo_bags, tmp_path):
    """Per-slide ROC AUC of ABMIL attention for tumour vs other tiles, over test slides with both, with the
    margins this test had before issue 18 (mean > 0.6, median > 0.65, hot pixels > 80% on tumour and more
    than cold ones). They no longer hold, for any seed, and the test records that (strict xfail):

    measured on this layout with the issue-18 report-fact generator, ABMIL seeds 0-4: mean AUC 0.53-0.57,
    median 0.45-0.51, hot pixels 0.84-0.88 on tumour but cold ones 0.93-0.94, slide accuracy 1.0 for every
    seed. The earlier generator's 0.65 (seed 0) was seed luck (0.37 at seed 1). Most tissue tiles are tumour,
    so any tile tells the class and nothing pushes the attention to the tumour; a layout with less tumour
    (60-80% normal lung drawn) did not help (mean 0.44), because lacy alveolar lung falls out of the tissue
    mask and the kept tiles stay mostly tumour (median 92%). FiVE's evidence score does localise (next
    test). Takes ~2-10 minutes with the fixture (26 demo slides rendered, tiled and embedded)."""
    prob, att = _abmil_attention(demo_bags)
    aucs, hot, cold = hot_region_stats(demo_bags, att, prob, "abmil", "attention", tmp_path)
    assert len(aucs) >= 6
    assert np.mean(aucs) > 0.6 and np.median(aucs) > 0.65
    assert hot > 0.8 and hot > cold


@pytest.mark.e2e
def test_five_evidence_heatmap_is_hot_on_the_tumour(demo_bags, tmp_path):
    """FiVE's default heatmap score (``heatmaps.five_score: evidence``) on the same slides: a FiVE model
    of the default configuration trained on the class texts of the 8 + 8 training slides (20 epochs of
    the few-shot schedule, from scratch: the test has no reports to pre-train on), then each test tile's
    logit margin for its slide's predicted class. Margins fixed before this test first ran, from the
    full demo (32 slides, 6144 x 4608, 0.5 mpp; the same from-scratch training, 5/10/20/40 epochs):
    evidence mean AUC 0.80-0.83, median 0.88-0.92, while the cross-attention swung from 0.12 to 0.89
    with the epoch count. Asserted: mean > 0.65, median > 0.7, hot pixels > 80% tumour and more than
    cold ones."""
    import torch

    from conftest import PROJECT_ROOT
    from fiveflow.config import load_config
    from fiveflow.model import build_model, load_questions
    from fiveflow.train.data import BagStore
    from fiveflow.train.fewshot import instance_evidences
    from fiveflow.train.loop import fit, predict_probs
    from fiveflow.train.predictions import class_names_texts

    out, train, test = demo_bags
    paths = {c.slide_id: str(out / f"{c.slide_id}.h5") for c in train + test}
    cfg = load_config(PROJECT_ROOT / "config.yaml")
    names, texts = class_names_texts(cfg)
    store = BagStore(paths, cfg["model"]["position"])
    items = [(c.slide_id, names.index(c.label)) for c in train]
    ft = {**cfg["train"]["finetune"], "epochs": 20}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(cfg["model"], store.feature_dim(items[0][0]), load_questions(), "cpu")
        if model.feature_norm == "standardize":
            model.set_feature_stats(*store.feature_stats([s for s, _ in items]))
        fit(model, store, items, texts, ft, 0, "8-shot")
        ids = [c.slide_id for c in test]
        probs = predict_probs(model, store, ids, texts, ft["instance_ratio"], ft["max_instances"])
        scores = instance_evidences(model, store, ids, texts, probs)
    finally:
        torch.set_num_threads(threads)
    aucs, hot, cold = hot_region_stats(demo_bags, scores, probs[:, 1], "FiVE", "instance_evidence", tmp_path)
    assert len(aucs) >= 6
    assert np.mean(aucs) > 0.65 and np.median(aucs) > 0.7
    assert hot > 0.8 and hot > cold


# ---------------------------------------------------------------- MI-Zero's instance cosines

from test_mizero import tiny_clip  # noqa: E402,F401  (module fixture: a tiny PLIP-style CLIP folder)


def test_mizero_saves_instance_cosines_and_same_predictions(tmp_path, tiny_clip):  # noqa: F811
    import pandas as pd
    import torch
    import yaml

    from fiveflow.baselines import mizero
    from fiveflow.embed import text_towers
    from fiveflow.embed.bags import write_bag
    from fiveflow.embed.encoders import build_encoder

    folder, _, _ = tiny_clip
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"templates": ["CLASSNAME."], "classes": {"LUAD": ["a"], "LUSC": ["s"]}}))
    cfg = {
        "classes": [{"name": "LUAD", "text": "x"}, {"name": "LUSC", "text": "y"}],
        "embedding": {"encoder": "plip", "weights": str(folder), "seed": 0},
        "mizero": {"enabled": True, "topk": 5, "prompts": str(prompts)},
        "train": {"device": "cpu"},
    }
    attrs = {
        "encoder": "plip",
        "weights": str(folder),
        "weights_sha256": build_encoder("plip", str(folder)).weights_sha256,
        "feature_dim": 12,
        "slide_width": 2048,
        "slide_height": 2048,
        "patch_size_level0": 256,
    }
    rng = np.random.default_rng(0)
    bags, rows = {}, []
    for i in range(2):
        coords = np.stack([np.arange(30) % 8, np.arange(30) // 8], 1) * 256
        bags[f"s{i}"] = str(write_bag(tmp_path / f"s{i}.h5", rng.normal(size=(30, 12)), coords, attrs))
        rows.append({"slide_id": f"s{i}", "patient_id": f"p{i}", "label": ["LUAD", "LUSC"][i], "split": "test"})
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    mizero.run_mizero(tmp_path / "split.csv", bags, cfg, tmp_path / "a.parquet")
    mizero.run_mizero(tmp_path / "split.csv", bags, cfg, tmp_path / "b.parquet", attention_dir=tmp_path / "att")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    tower = text_towers.load_text_tower("plip", str(folder))
    emb = mizero.class_embeddings(
        tower.encode, mizero.class_prompts(["LUAD", "LUSC"], ["x", "y"], mizero.load_prompts(prompts))
    )
    coords, att, meta = load_attention(tmp_path / "att" / "s1.parquet")
    feats = torch.from_numpy(np.asarray(__import__("h5py").File(bags["s1"])["features"][()]))
    assert np.allclose(att, mizero.heatmap_scores(feats, emb, 5).numpy(), atol=1e-5)
    assert meta["kind"] == "instance_cosine" and meta["method"] == "MI-Zero" and meta["shots"] == 0
    assert meta["slide_wh"] == [2048, 2048] and len(coords) == 30


# ---------------------------------------------------------------- FiVE zero-shot and few-shot attention


def test_five_zeroshot_and_fewshot_save_attention_and_same_predictions(tmp_path):
    """Run 0's per-tile scores (``heatmaps.five_score``: evidence by default, or cross-attention) are
    saved without changing a prediction; the evidence equals each tile's own logit margin."""
    import h5py
    import pandas as pd
    import torch
    import yaml

    from conftest import PROJECT_ROOT
    from fiveflow.train.fewshot import run_fewshot, run_zeroshot
    from fiveflow.train.pretrain import pretrain
    from fiveflow.train.splits import make_fewshot_draws, make_split
    from synthetic_bags import make_synthetic_cohort

    coh = make_synthetic_cohort(tmp_path / "cohort", n_slides=10, dim=24, n_range=(15, 25), signal=3.0)
    for p in coh["bag_paths"].values():
        with h5py.File(p, "a") as fh:
            if "coords" not in fh:
                fh["coords"] = np.stack([np.arange(len(fh["features"])), np.zeros(len(fh["features"]))], 1).astype(
                    np.int64
                )
            fh.attrs.update(slide_width=100_000, slide_height=1000, patch_size_level0=256)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["model"].update(dim=16, heads=2, n_prompts=2, text_max_tokens=32)
    cfg["train"]["device"] = "cpu"
    cfg["train"]["pretrain"].update(epochs=1, warmup_epochs=0, accumulate=4)
    cfg["train"]["finetune"].update(epochs=1, warmup_epochs=0)
    split = make_split(coh["samples"], 0.3, 0, tmp_path / "split.csv")
    make_fewshot_draws(split, [1], 2, 0, tmp_path / "draws.csv")
    pretrain(tmp_path / "split.csv", coh["labels_parquet"], coh["bag_paths"], cfg, tmp_path / "pre.pt")
    args = (tmp_path / "pre.pt", tmp_path / "split.csv")
    run_zeroshot(*args, coh["bag_paths"], cfg, tmp_path / "z1.parquet")
    run_zeroshot(*args, coh["bag_paths"], cfg, tmp_path / "z2.parquet", attention_dir=tmp_path / "az")
    run_fewshot(*args, tmp_path / "draws.csv", coh["bag_paths"], cfg, 1, tmp_path / "f1.parquet")
    run_fewshot(
        *args, tmp_path / "draws.csv", coh["bag_paths"], cfg, 1, tmp_path / "f2.parquet", attention_dir=tmp_path / "af"
    )
    run_zeroshot(
        *args, coh["bag_paths"], cfg, tmp_path / "z3.parquet", attention_dir=tmp_path / "azc", five_score="attention"
    )
    run_fewshot(
        *args,
        tmp_path / "draws.csv",
        coh["bag_paths"],
        cfg,
        1,
        tmp_path / "f3.parquet",
        attention_dir=tmp_path / "afc",
        five_score="attention",
    )
    for a, b in (("z1", "z2"), ("z1", "z3"), ("f1", "f2"), ("f1", "f3")):
        assert (tmp_path / f"{a}.parquet").read_bytes() == (tmp_path / f"{b}.parquet").read_bytes(), (a, b)
    test_ids = sorted(split.loc[split["split"] == "test", "slide_id"])
    zero = pd.read_parquet(tmp_path / "z1.parquet").set_index("slide_id")
    for d, shots, kind in (
        ("az", 0, "instance_evidence"),
        ("af", 1, "instance_evidence"),
        ("azc", 0, "attention"),
        ("afc", 1, "attention"),
    ):
        assert sorted(p.stem for p in (tmp_path / d).glob("*.parquet")) == test_ids
        coords, att, meta = load_attention(tmp_path / d / f"{test_ids[0]}.parquet")
        assert meta["method"] == "FiVE" and meta["kind"] == kind and meta["shots"] == shots
        assert len(att) == len(coords) and np.all(np.isfinite(att))
        if kind == "attention":
            assert np.all(att >= 0) and abs(att.sum() - 1) < 1e-4  # cross-attention: a distribution over tiles
    # zero-shot evidence: the margin for the predicted class of each tile alone, from the same checkpoint
    from fiveflow.model import load_checkpoint
    from fiveflow.train.data import BagStore
    from fiveflow.train.predictions import class_names_texts

    model, payload = load_checkpoint(tmp_path / "pre.pt", "cpu")
    model.eval()
    store = BagStore(coh["bag_paths"], payload["model_cfg"]["position"])
    names, texts = class_names_texts(cfg)
    text = model.encode_texts(texts)
    for sid in test_ids:
        _, att, meta = load_attention(tmp_path / "az" / f"{sid}.parquet")
        bag = store.get(sid)
        assert meta["prob"] == pytest.approx(zero.loc[sid, "prob"])
        pred = int(meta["prob"] > 0.5)  # argmax of the two-class softmax
        with torch.no_grad():
            lg = torch.cat(
                [
                    model.logits(
                        model.encode_slide(
                            bag.features[i : i + 1, None], bag.pos[i : i + 1, None], model.prompt_bank(None)
                        ),
                        text,
                    )
                    for i in range(bag.n)
                ]
            )
        np.testing.assert_allclose(att, (lg[:, pred] - lg[:, 1 - pred]).numpy(), rtol=1e-4, atol=1e-4)
