"""Sharded embedding (fiveflow.embed.shards): one model load for many slides, bags bit-identical to
per-slide embedding, and a shard that fails midway resumes at its next slide."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import TILING, write_test_slide
from fiveflow.embed.bags import bag_attrs, read_bag
from fiveflow.embed.encoders import build_encoder
from fiveflow.embed.extract import embed_slide
from fiveflow.embed.shards import STORE, ShardItem, clear_store, embed_shard, plan_shards, store_path
from fiveflow.slides.tiling import tile_slide

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_shards_cuts_the_sorted_ids_into_runs():
    assert plan_shards(["c", "a", "e", "b", "d", "a"], 2) == {"0000": ["a", "b"], "0001": ["c", "d"], "0002": ["e"]}
    assert plan_shards(["b", "a"], 1) == {"0000": ["a"], "0001": ["b"]}
    assert plan_shards([], 4) == {}
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="shard_size"):
            plan_shards(["a"], bad)


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("demo", "random", seed=0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    items = []
    for i in range(4):
        slide = write_test_slide(d / f"s{i}.tif", seed=i)
        tile_slide(slide, f"s{i}", TILING, d / f"s{i}.parquet")
        items.append((f"s{i}", slide, d / f"s{i}.parquet"))
    return d, items


def shard_items(cohort, out_dir):
    _, items = cohort
    return [ShardItem(s, slide, coords, out_dir / f"{s}.h5") for s, slide, coords in items]


def test_a_shard_gives_the_per_slide_bags_bit_identical(cohort, encoder, tmp_path):
    items = shard_items(cohort, tmp_path / "shard")
    done = embed_shard(items, encoder, batch_size=8, progress=False)
    assert [r["slide_id"] for r in done] == ["s0", "s1", "s2", "s3"] and not any(r["restored"] for r in done)
    for it in items:
        alone = tmp_path / "alone" / f"{it.slide_id}.h5"
        embed_slide(it.slide, it.coords, encoder, alone, batch_size=8, progress=False)
        f1, c1, a1 = read_bag(it.out)
        f2, c2, a2 = read_bag(alone)
        assert f1.shape[0] > 5 and f1.tobytes() == f2.tobytes() and np.array_equal(c1, c2)
        assert a1.keys() == a2.keys() and all(np.array_equal(a1[k], a2[k]) for k in a1) and a1["complete"]
    clear_store(items)
    assert not (tmp_path / "shard" / STORE).exists() and all(it.out.exists() for it in items)


def test_the_model_is_prepared_once_per_shard(cohort, encoder, tmp_path, monkeypatch):
    from fiveflow.embed import runtime

    calls = []
    real = runtime.prepare
    monkeypatch.setattr(runtime, "prepare", lambda *a, **k: calls.append(1) or real(*a, **k))
    embed_shard(shard_items(cohort, tmp_path), encoder, batch_size=8, progress=False)
    assert len(calls) == 1


def test_a_shard_that_fails_midway_resumes_at_its_next_slide(cohort, encoder, tmp_path, monkeypatch):
    from fiveflow.embed import extract

    items = shard_items(cohort, tmp_path)
    seen = []

    def die_after_two(res):
        seen.append(res["slide_id"])
        if len(seen) == 2:
            raise KeyboardInterrupt("killed (simulated)")

    with pytest.raises(KeyboardInterrupt):
        embed_shard(items, encoder, batch_size=8, progress=False, on_slide=die_after_two)
    # Snakemake removes a failed job's outputs before the rerun: only the store is left
    for it in items:
        it.out.unlink(missing_ok=True)
    assert sorted(p.name for p in (tmp_path / STORE).glob("*.h5")) == ["s0.h5", "s1.h5"]

    embedded = []
    real = extract.TileBatches
    monkeypatch.setattr(extract, "TileBatches", lambda slide, *a, **k: embedded.append(slide) or real(slide, *a, **k))
    done = embed_shard(items, encoder, batch_size=8, progress=False)
    assert [r["restored"] for r in done] == [True, True, False, False]
    assert [os.path.basename(p) for p in embedded] == ["s2.tif", "s3.tif"]  # only the missing slides are read
    for it in items:
        alone = tmp_path / "alone" / f"{it.slide_id}.h5"
        embed_slide(it.slide, it.coords, encoder, alone, batch_size=8, progress=False)
        assert read_bag(it.out)[0].tobytes() == read_bag(alone)[0].tobytes()


def test_a_stale_stored_bag_is_embedded_again(cohort, encoder, tmp_path):
    items = shard_items(cohort, tmp_path)[:1]
    embed_shard(items, encoder, batch_size=8, progress=False)
    other = build_encoder("demo", "random", seed=1)  # other weights: the stored bag does not fit
    done = embed_shard(items, other, batch_size=8, progress=False)
    assert not done[0]["restored"] and bag_attrs(items[0].out)["weights_sha256"] == other.weights_sha256
    assert bag_attrs(store_path(items[0].out))["weights_sha256"] == other.weights_sha256
