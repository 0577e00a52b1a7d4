"""End-to-end: the real workflow with `embedding.shard_size` > 1.

Bags are bit-identical to a run with a job per slide; a shard killed hard (SIGKILL of the whole run) is
rerun by the next run, which embeds only the slides the killed one had not finished.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, job_stats, kill_group, run_workflow, tissue_image, workflow_cmd, write_pyramid_tiff
from fiveflow.embed.bags import bag_attrs, read_bag

pytestmark = pytest.mark.e2e
N = 8


def write_cohort(work: Path, slides: Path, shard_size: int) -> None:
    rows = [(f"P{i}", ["LUAD", "LUSC"][i % 2], str(slides / f"s{i}.tif"), "") for i in range(N)]
    pd.DataFrame(rows, columns=["patient_id", "label", "path", "mpp"]).to_csv(work / "samples.csv", index=False)
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(N)], "text": ["Adenocarcinoma."] * N}).to_csv(
        work / "reports.csv", index=False
    )
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["results_dir"] = str(work / "results")
    cfg["cohort"].update(source="samples", samples=str(work / "samples.csv"), reports=str(work / "reports.csv"))
    cfg["tiling"].update(patch_size=64, thumbnail_size=256)
    cfg["embedding"].update(shard_size=shard_size, batch_size=4)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))


def bags(work: Path) -> list[str]:
    return [str(work / "results" / "features" / "demo" / f"s{i}.h5") for i in range(N)]


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard-slides")
    for i in range(N):
        write_pyramid_tiff(d / f"s{i}.tif", tissue_image(2048, 1536, seed=i), mpp=0.5)
    return d


@pytest.fixture(scope="module")
def per_slide(tmp_path_factory, slides):
    work = tmp_path_factory.mktemp("shard1")
    write_cohort(work, slides, 1)
    r = run_workflow(work, "--cores", "2", *bags(work))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert job_stats(r.stdout + r.stderr).get("embed") == N
    return work


def same_features(a: Path, b: Path) -> bool:
    return all(read_bag(x)[0].tobytes() == read_bag(y)[0].tobytes() for x, y in zip(bags(a), bags(b)))


def test_shards_give_the_per_slide_bags_bit_identical(tmp_path, slides, per_slide):
    write_cohort(tmp_path, slides, 3)
    r = run_workflow(tmp_path, "--cores", "2", *bags(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    stats = job_stats(r.stdout + r.stderr)
    assert "embed" not in stats and sorted(k for k in stats if k.startswith("embed_shard")) == [
        "embed_shard_0000",
        "embed_shard_0001",
        "embed_shard_0002",
    ]  # 3 + 3 + 2 slides
    assert same_features(per_slide, tmp_path)
    assert not (tmp_path / "results" / "features" / "demo" / ".shard-store").exists()
    again = run_workflow(tmp_path, "-n", *bags(tmp_path))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    target = run_workflow(tmp_path, "-n", "embed")  # the aggregate rule `embed` stands for every shard's bags
    assert target.returncode == 0 and "Nothing to be done" in target.stdout + target.stderr, target.stderr[-2000:]


def test_a_killed_shard_resumes_at_its_next_slide(tmp_path, slides, per_slide):
    write_cohort(tmp_path, slides, N)  # one shard of all N slides
    plan = run_workflow(tmp_path, "-n", "embed")  # the target `embed`: tiling and the shard, nothing downstream
    stats = job_stats(plan.stdout + plan.stderr)
    assert stats["embed_shard_0000"] == 1 and stats["tile"] == N and "pretrain" not in stats, stats
    store = tmp_path / "results" / "features" / "demo" / ".shard-store"
    log = open(tmp_path / "run1.log", "wb")
    run = subprocess.Popen(
        workflow_cmd(tmp_path, "--cores", "1", *bags(tmp_path)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while sum(bool(bag_attrs(p).get("complete")) for p in store.glob("*.h5")) < 2:
            assert run.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.time() < deadline, "the shard stored no 2 bags within 300 s"
            time.sleep(0.02)
    finally:
        kill_group(run)  # the whole run, as a node failure or `scancel` would end it
    stored = sorted(p.name for p in store.glob("*.h5") if bag_attrs(p).get("complete"))
    assert 2 <= len(stored) < N, f"the kill came too late: {stored}"

    r = run_workflow(tmp_path, "--cores", "1", *bags(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    text = (tmp_path / "results" / "logs" / "embed" / "demo" / "shard-0000.log").read_text()
    restored = re.findall(r"(\S+): restored from the shard store", text)
    embedded = [ln for ln in text.splitlines() if " embedded " in ln and "tiles in" in ln]
    assert sorted(f"{s}.h5" for s in restored) == stored and len(embedded) == N - len(stored), text
    assert f"{N - len(stored)} embedded, {len(stored)} restored" in text
    assert same_features(per_slide, tmp_path) and not store.exists()
