"""The synthetic demo cohort: cases, slides (OpenSlide / tiatoolbox readable), reports, tables."""

from __future__ import annotations

import csv
import hashlib
import re
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fiveflow.cohort import DemoCase, demo_cases, demo_report_text, write_demo_slide, write_demo_tables
from fiveflow.cohort.pyramid import level_sizes

W, H, MPP = 1024, 768, 0.5


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cases() -> list[DemoCase]:
    return demo_cases(16, 0)


@pytest.fixture(scope="module")
def slides(tmp_path_factory, cases) -> dict[str, Path]:
    """One small LUAD and one small LUSC slide."""
    d = tmp_path_factory.mktemp("demo_slides")
    out = {}
    for c in (cases[0], cases[1]):
        p = d / f"{c.slide_id}.tif"
        write_demo_slide(c, p, W, H, MPP)
        out[c.label] = p
    return out


# ----------------------------------------------------------------------------- cases
def test_cases_are_deterministic_and_seeded(cases):
    assert demo_cases(16, 0) == cases
    other = demo_cases(16, 1)
    assert [c.seed for c in other] != [c.seed for c in cases]
    assert len({c.seed for c in cases}) == len(cases)
    assert [c.index for c in cases] == list(range(16))


@pytest.mark.parametrize("n", [8, 9, 16, 33])
def test_classes_balanced_and_some_patients_have_two_slides(n):
    cs = demo_cases(n, 3)
    assert len(cs) == n
    counts = Counter(c.label for c in cs)
    assert set(counts) == {"LUAD", "LUSC"} and abs(counts["LUAD"] - counts["LUSC"]) <= 1
    per_patient = Counter(c.patient_id for c in cs)
    assert max(per_patient.values()) == 2 and min(per_patient.values()) == 1
    assert len({c.slide_id for c in cs}) == n
    for c in cs:
        assert c.slide_id == f"{c.patient_id}-01Z-00-DX{c.slide_number}"
        assert re.fullmatch(r"DEMO-\d{4}", c.patient_id)
    # a patient's slides share the label and every report fact
    by_patient: dict[str, list[DemoCase]] = {}
    for c in cs:
        by_patient.setdefault(c.patient_id, []).append(c)
    for group in by_patient.values():
        a = group[0]
        for b in group[1:]:
            assert (b.label, b.differentiation, b.stas, b.margins, b.report_uuid) == (
                a.label,
                a.differentiation,
                a.stas,
                a.margins,
                a.report_uuid,
            )
            assert b.seed != a.seed


@pytest.mark.parametrize("bad", [7, 0, -3, 8.0, "16", True])
def test_too_few_slides_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="n_slides"):
        demo_cases(bad, 0)


def test_attribute_values_and_distribution():
    """Issue 18: a patient's six facts are one row of the real answers' per-class table (data/demo), drawn
    with its count, so the demo's Unknown rates and class differences are the real ones."""
    from fiveflow.cohort.facts import load_fact_table
    from fiveflow.reports.normalize import ALLOWED, FIELDS

    table = load_fact_table()
    cs = demo_cases(1200, 0)
    patients = list({c.patient_id: c for c in cs}.values())
    for c in patients:
        assert {f: getattr(c, f) for f in FIELDS} in table[c.label][0], c.patient_id
    for field in FIELDS:
        seen = {getattr(c, field) for c in cs}
        assert seen <= set(ALLOWED[field]) and len(seen) >= 3, field
    for label in ("LUAD", "LUSC"):
        facts, counts = table[label]
        mine = [p for p in patients if p.label == label]
        for field in FIELDS:
            for value in ALLOWED[field]:
                want = sum(n for f, n in zip(facts, counts) if f[field] == value) / sum(counts)
                got = sum(getattr(p, field) == value for p in mine) / len(mine)
                assert abs(got - want) < 4 * (want * (1 - want) / len(mine)) ** 0.5 + 1e-9, (label, field, value)
    assert sum(p.stas == "unknown" for p in patients) / len(patients) > 0.9  # real: 94.7% LUAD, 98.0% LUSC


def test_fact_draws_keep_the_joint_distribution():
    """Facts are drawn together: the share of patients with both pleural and vascular invasion follows the
    table's joint count, not the product of its marginals."""
    import random

    from fiveflow.cohort.facts import draw_facts, load_fact_table

    facts, counts = load_fact_table()["LUAD"]
    both = sum(n for f, n in zip(facts, counts) if f["pleural_invasion"] == f["vascular_invasion"] == "present")
    rng = random.Random(5)
    draws = [draw_facts(rng, "LUAD") for _ in range(20000)]
    got = sum(d["pleural_invasion"] == d["vascular_invasion"] == "present" for d in draws) / len(draws)
    assert abs(got - both / sum(counts)) < 0.012
    with pytest.raises(ValueError, match="no rows for class 'XYZ'"):
        draw_facts(rng, "XYZ")


def test_shipped_fact_table_is_the_estimate_from_the_real_answers(tmp_path):
    """The packaged demo/report_facts.csv is what tools/estimate_report_facts.py makes from the 300 development
    answers, byte for byte; a damaged table is refused with the line and the fix."""
    import subprocess
    import sys

    from conftest import PROJECT_ROOT, shared_path
    from fiveflow.cohort.facts import load_fact_table
    from fiveflow.package_data import package_file

    out = tmp_path / "facts.csv"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tools" / "estimate_report_facts.py"),
            str(shared_path("reports/tcga_lung_reports_dev.csv")),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == package_file("demo/report_facts.csv").read_bytes()
    assert "LUAD: 150 patients, 77 combinations" in proc.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(out.read_text().replace("LUAD,poor,unknown", "LUAD,awful,unknown", 1))
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: bad value\(s\) in \['differentiation'\]"):
        load_fact_table(bad)


# ----------------------------------------------------------------------------- slides
def test_slide_is_a_pyramidal_bigtiff_with_mpp(slides):
    import openslide
    import tifffile

    for label, p in slides.items():
        with tifffile.TiffFile(p) as tf:
            assert tf.is_bigtiff
            pages = tf.pages
            assert pages[0].compression == tifffile.COMPRESSION.JPEG and pages[0].is_tiled
            assert pages[0].tilewidth == 256 and pages[1].subfiletype == 1
        s = openslide.OpenSlide(str(p))
        assert s.dimensions == (W, H)
        assert s.level_count > 1
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(MPP)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(MPP)
        for level, (w, h) in enumerate(s.level_dimensions):
            ds = s.level_downsamples[level]
            size = (min(w, 200), min(h, 200))
            loc = (int(W / 2 - size[0] / 2 * ds), int(H / 2 - size[1] / 2 * ds))
            img = np.asarray(s.read_region(loc, level, size).convert("RGB"))
            assert img.shape == (size[1], size[0], 3) and img.std() > 5, (label, level)  # the centre is tissue
        # white background, tissue covering a good part of the slide
        thumb = np.asarray(s.get_thumbnail((256, 192)).convert("RGB"), float)
        tissue = (thumb.max(-1) - thumb.min(-1) > 18) | (thumb.mean(-1) < 200)
        assert 0.2 < tissue.mean() < 0.8, (label, tissue.mean())
        assert np.median(thumb[~tissue], axis=0).min() > 230
        s.close()


def test_reduced_levels_are_downsampled_level0(slides):
    import openslide

    s = openslide.OpenSlide(str(slides["LUAD"]))
    l0 = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB"), float)
    l1 = np.asarray(s.read_region((0, 0), 1, s.level_dimensions[1]).convert("RGB"), float)
    ref = l0.reshape(H // 2, 2, W // 2, 2, 3).mean((1, 3))
    assert np.abs(l1 - ref).mean() < 6.0  # only JPEG noise: the quadrants are where they belong


def test_tiatoolbox_reads_levels_and_mpp(slides):
    from tiatoolbox.wsicore.wsireader import OpenSlideWSIReader, VirtualWSIReader, WSIReader

    for p in slides.values():
        r = WSIReader.open(p)
        assert not isinstance(r, VirtualWSIReader)
        assert list(r.info.mpp) == pytest.approx([MPP, MPP])
        assert r.info.level_count > 1
        assert list(OpenSlideWSIReader(p).info.mpp) == pytest.approx([MPP, MPP])
        patch = r.read_rect((256, 256), (112, 112), resolution=1.0, units="mpp")
        assert patch.shape == (112, 112, 3)


def test_pixels_are_byte_identical_and_seed_dependent(tmp_path, cases):
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    write_demo_slide(cases[2], a, W, H, MPP)
    write_demo_slide(cases[2], b, W, H, MPP)
    assert _sha(a) == _sha(b)
    write_demo_slide(cases[4], c, W, H, MPP)  # another slide (same class)
    assert _sha(a) != _sha(c)


def test_other_mpp_and_tile_size(tmp_path, cases):
    import openslide

    p = tmp_path / "x.tif"
    write_demo_slide(cases[1], p, 700, 520, 0.25, tile=128)
    s = openslide.OpenSlide(str(p))
    assert s.dimensions == (700, 520) and s.level_count >= 2
    assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)


@pytest.mark.parametrize("kw", [dict(width=100), dict(mpp=0.0), dict(tile=100)])
def test_bad_slide_arguments(tmp_path, cases, kw):
    args = dict(width=W, height=H, mpp=MPP, tile=256) | kw
    with pytest.raises(ValueError):
        write_demo_slide(cases[0], tmp_path / "bad.tif", **args)
    assert not (tmp_path / "bad.tif").exists()


def test_failed_write_leaves_nothing(tmp_path, cases, monkeypatch):
    from fiveflow.cohort import render

    calls = {"n": 0}
    original = render.TileRenderer.render

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk on fire")
        return original(self, *a, **k)

    monkeypatch.setattr(render.TileRenderer, "render", flaky)
    dest = tmp_path / "slides" / "s.tif"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_demo_slide(cases[0], dest, W, H, MPP)
    assert list(dest.parent.iterdir()) == []  # no destination, no temp or staging files


def test_memory_does_not_grow_with_area(tmp_path, cases):
    peaks = []
    for w, h in ((768, 512), (2048, 1536)):
        tracemalloc.start()
        write_demo_slide(cases[1], tmp_path / f"m{w}.tif", w, h, MPP)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 40e6
    assert peaks[1] < 2.0 * peaks[0]  # 8x the area, about the same memory


def test_level_sizes():
    assert level_sizes(6144, 4608)[-1] == (384, 288)
    assert len(level_sizes(1024, 768)) == 2
    assert level_sizes(300, 300) == [(300, 300), (150, 150)]


# ----------------------------------------------------------------------------- reports
_GRADE_RE = {
    "well": r"well[- ]differentiated",
    "moderate": r"moderately[- ]differentiated",
    "moderate_to_poor": r"moderately[- ](to )?poorly[- ]differentiated",
    "poor": r"poorly[- ]differentiated",
}


def _reports(n_seeds: int = 3):
    for seed in range(n_seeds):
        seen = set()
        for c in demo_cases(48, seed):
            if c.patient_id not in seen:
                seen.add(c.patient_id)
                yield c, demo_report_text(c)


def test_reports_are_deterministic_and_per_patient(cases):
    by_patient = {}
    for c in cases:
        t = demo_report_text(c)
        assert t == demo_report_text(c)
        by_patient.setdefault(c.patient_id, set()).add(t)
    assert all(len(v) == 1 for v in by_patient.values())
    assert len({next(iter(v)) for v in by_patient.values()}) == len(by_patient)
    assert any(re.search(r"\b\d+/\d+\b", next(iter(v))) for v in by_patient.values())  # node counts


def test_report_histology_and_grade_match_the_case():
    for c, t in _reports():
        low = t.lower()
        if c.label == "LUAD":
            assert "adenocarcinoma" in low and "squamous" not in low
        else:
            assert "squamous cell carcinoma" in low and "adenocarcinoma" not in low
        if c.differentiation == "unknown":
            assert "differentiated" not in low
        else:
            assert re.search(_GRADE_RE[c.differentiation], low), (c.differentiation, t)


def test_unknown_facts_are_not_stated():
    vascular = re.compile(
        r"lympho?-?vascular|angiolymphatic|angioinvasion|vascular invasion|venous|arterial|"
        r"L[01], V[01]|blood vessels|emboli",
        re.I,
    )
    for c, t in _reports():
        low = t.lower()
        if c.vascular_invasion == "unknown":
            assert not vascular.search(t), t
        if c.pleural_invasion == "unknown":
            assert "pleura" not in low or "indeterminate" in low, t
        if c.stas == "unknown":
            assert "air spaces" not in low and not re.search(r"\bstas\b", low)
        if c.adjacent_invasion == "unknown":
            assert not re.search(r"adjacent structures|direct extension|tumor extension|beyond the lung", low), t
        if c.margins == "unknown":
            assert "margin" not in low or "margins: cannot be assessed" in low, t


def test_known_facts_are_stated():
    hits = Counter()
    for c, t in _reports():
        low = t.lower()
        if c.pleural_invasion == "present":
            assert re.search(
                r"pleura[^.]*(present|identified|invad|involv|infiltrat)|pl[12]|"
                r"invad\w* (into )?the visceral pleura|infiltrates the visceral pleura|"
                r"invasion of the visceral pleura|pleural infiltration|involves the pleural surface",
                low,
            ), t
            hits["pleura"] += 1
        if c.margins == "positive":
            assert "r1" in low or f"{c.margin_site} margin" in low, t
            hits["margins"] += 1
        if c.adjacent_invasion == "present":
            assert c.adjacent_site in low, t
            hits["adjacent"] += 1
        if c.vascular_invasion != "unknown":
            assert re.search(r"vascular|angio|venous|arterial|emboli|l[01], v[01]|blood vessels", low), t
            hits["vascular"] += 1
    assert min(hits.values()) > 0 and len(hits) == 4


def test_report_layouts_vary():
    openings = Counter(t.split(":")[0].split(".")[0][:12] for _, t in _reports())
    assert len(openings) >= 4


# ----------------------------------------------------------------------------- tables
def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tables(tmp_path, cases):
    paths = {c.slide_id: f"slides/{c.slide_id}.tif" for c in cases}
    s, r, t = tmp_path / "samples.csv", tmp_path / "reports.csv", tmp_path / "truth.csv"
    write_demo_tables(cases, paths, s, r, t)
    samples, reports, truth = _read(s), _read(r), _read(t)
    assert list(samples[0]) == ["slide_id", "patient_id", "label", "path"]
    assert list(reports[0]) == ["patient_filename", "patient_id", "text"]
    assert list(truth[0]) == [
        "patient_id",
        "label",
        "differentiation",
        "stas",
        "vascular_invasion",
        "pleural_invasion",
        "adjacent_invasion",
        "margins",
    ]
    assert [row["slide_id"] for row in samples] == [c.slide_id for c in cases]
    assert samples[0]["path"] == paths[cases[0].slide_id]
    patients = list(dict.fromkeys(c.patient_id for c in cases))
    assert [row["patient_id"] for row in reports] == patients == [row["patient_id"] for row in truth]
    for row in reports:
        pid, _, uid = row["patient_filename"].partition(".")
        assert pid == row["patient_id"] and uuid.UUID(uid).version == 4
        assert len(row["text"]) > 200
    first = {c.patient_id: c for c in reversed(cases)}
    for row in truth:
        c = first[row["patient_id"]]
        assert row["label"] == c.label and row["differentiation"] == c.differentiation
    digests = [_sha(p) for p in (s, r, t)]
    write_demo_tables(cases, paths, s, r, t)
    assert digests == [_sha(p) for p in (s, r, t)]


def test_tables_need_every_slide_path(tmp_path, cases):
    with pytest.raises(KeyError):
        write_demo_tables(cases, {}, tmp_path / "s.csv", tmp_path / "r.csv", tmp_path / "t.csv")
    assert not any(tmp_path.iterdir())


def _tissue_shares(case, difficulty, wh=(3072, 2304), mpp=1.0):
    """(share of tissue that is normal lung, spread of the eosin stain vector) of one scene."""
    from fiveflow.cohort.scene import Scene

    sc = Scene(case, *wh, mpp, difficulty)
    gx = (np.arange(96) + 0.5) / 96 * sc.wu
    gy = (np.arange(72) + 0.5) / 72 * sc.hu
    f = sc.fields(gx[None, :], gy[:, None])
    inside = f["tis"] > 0
    return float((f["nrm"][inside] > 0.5).mean()), sc.style


def test_difficulty_knob_default_is_the_demo_and_harder_settings_move_the_pixels():
    """``cohort.demo.difficulty``: the defaults draw exactly the scene without the knob (the demo unchanged);
    a larger normal-lung range gives that much less tumour, and stain_jitter 0 gives every slide the same stain
    while the default varies it."""
    from fiveflow.cohort.scene import Difficulty, Scene

    cases = demo_cases(12, 3)
    for c in cases[:3]:
        a, b = Scene(c, 3072, 2304, 1.0), Scene(c, 3072, 2304, 1.0, Difficulty.from_config({}))
        assert a.normal_thr == b.normal_thr and np.array_equal(a.style.od, b.style.od)
    easy = [_tissue_shares(c, None)[0] for c in cases]
    hard = [_tissue_shares(c, Difficulty((0.7, 0.8)))[0] for c in cases]
    # the threshold is a quantile on a coarser grid and nrm is a smoothstep: a few points off the drawn share
    assert 0.1 < np.mean(easy) < 0.35 and 0.62 < np.mean(hard) < 0.88, (easy, hard)
    assert all(h > e + 0.3 for e, h in zip(easy, hard))
    flat = [_tissue_shares(c, Difficulty(stain_jitter=0.0))[1].od for c in cases[:4]]
    assert all(np.allclose(flat[0][:2], o[:2]) for o in flat)
    varied = [_tissue_shares(c, None)[1].od for c in cases[:4]]
    assert not np.allclose(varied[0][:2], varied[1][:2])


def test_difficulty_overlap_draws_the_other_class_in_patches_of_the_drawn_share():
    """``overlap``: the mimicry field covers about the drawn share of the slide, and inside it the renderer
    draws the other class's morphology: a LUAD slide gets squamous (eosinophilic, keratinised) patches, so
    its tiles there differ from the same slide without overlap, while tiles outside every patch are
    byte-identical."""
    from fiveflow.cohort.render import TileRenderer
    from fiveflow.cohort.scene import Difficulty, Scene

    case = next(c for c in demo_cases(12, 0) if c.label == "LUAD")
    plain = Scene(case, 3072, 2304, 1.0)
    mixed = Scene(case, 3072, 2304, 1.0, Difficulty(overlap=(0.3, 0.3)))
    assert plain.mimic_share == 0 and mixed.mimic_share == pytest.approx(0.3)
    gx = (np.arange(96) + 0.5) / 96 * mixed.wu
    gy = (np.arange(72) + 0.5) / 72 * mixed.hu
    mim = mixed.fields(gx[None, :], gy[:, None])["mim"]
    assert 0.2 < (mim > 0.5).mean() < 0.4 and not plain.fields(gx[None, :], gy[:, None])["mim"].any()
    a, b = TileRenderer(plain, tile=256), TileRenderer(mixed, tile=256)
    same = changed = 0
    for oy in range(256, 2048, 256):
        for ox in range(256, 2816, 256):
            m = mixed.fields((ox + np.arange(0, 256, 16))[None, :] * 1.0, (oy + np.arange(0, 256, 16))[:, None] * 1.0)
            ta, tb = a.render(0, ox, oy), b.render(0, ox, oy)
            if (
                m["mim"].max() == 0
                and mixed.fields(np.array([[ox - 200.0, ox + 456.0]]), np.array([[oy - 200.0], [oy + 456.0]]))[
                    "mim"
                ].max()
                == 0
            ):
                same += 1
                assert np.array_equal(ta, tb)
            elif (m["mim"] > 0.5).mean() > 0.5 and (m["tis"] > 0).mean() > 0.5 and (m["nrm"] < 0.5).mean() > 0.5:
                changed += int(np.abs(ta.astype(int) - tb.astype(int)).mean() > 3)
    assert same >= 3 and changed >= 3, (same, changed)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"normal_lung": [0.5, 0.2]}, "low <= high"),
        ({"overlap": [0.2, 0.6]}, "overlap"),
        ({"normal_lung": [0.2, 1.0]}, "< 1"),
        ({"stain_jitter": -1}, "stain_jitter"),
        ({"tumour": 0.3}, "unknown keys"),
    ],
)
def test_difficulty_rejects_bad_settings(bad, message):
    from fiveflow.cohort.scene import Difficulty

    with pytest.raises(ValueError, match=message):
        Difficulty.from_config(bad)
