"""Issue 17: the TCGA-lung report corpus and the authors' answers reach the workflow through its download rules.

The shared development copies (the 300-report subset with the authors' GPT-4 answers) are served from a local
HTTP server standing in for GitHub: the corpus zipped as TCGA_Reports.csv.zip and pinned by its git blob id, the
answers split into LUAD and LUSC files pinned by sha256, as config/tcga_lung.yaml pins the real ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, shared_path
from test_fetch import FakeServer, closed_port_url

pytestmark = pytest.mark.e2e


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(name, date_time=(2023, 3, 11, 0, 0, 0)), data)
    return buf.getvalue()


def _by_class(data: bytes) -> dict[str, bytes]:
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    out = {}
    for cls in ("LUAD", "LUSC"):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(r for r in rows if r["cancer_type"] == cls)
        out[cls] = buf.getvalue().encode()
    return out


def _gitsha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def server():
    srv = FakeServer()
    yield srv
    srv.close()


def _run(tmp_path: Path, downloads: dict, *targets: str) -> subprocess.CompletedProcess:
    inp = tmp_path / "inputs"
    overlay = {
        "results_dir": "results",
        "cohort": {"reports": str(inp / "TCGA_Reports.csv.zip"), "gdc": {"slide_dir": str(tmp_path / "slides")}},
        "reports": {"precomputed": [str(inp / "LUAD.csv"), str(inp / "LUSC.csv")]},
        "downloads": downloads,
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    cmd = [
        str(PROJECT_ROOT / "tools" / "snakemake.sh"),
        "-s",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(PROJECT_ROOT / "config.yaml"),
        str(PROJECT_ROOT / "config" / "tcga_lung.yaml"),
        str(tmp_path / "overlay.yaml"),
        "--cores",
        "1",
        "--keep-going",
        *targets,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _entry(url: str, checksum: str, path: Path, data: bytes | None = None, **kw) -> dict:
    """A `downloads` entry; config/tcga_lung.yaml's sizes are merged in unless replaced, so give the served size."""
    return {"url": url, "checksum": checksum, "path": str(path), **({"size": len(data)} if data else {}), **kw}


def test_reports_and_answers_are_fetched_resumed_verified_and_structured(server, tmp_path):
    dev = shared_path("reports/tcga_lung_reports_dev.csv").read_bytes()
    corpus = _zip("TCGA_Reports.csv", dev)
    answers = _by_class(dev)
    inp = tmp_path / "inputs"
    downloads = {
        # the connection is cut two thirds into the corpus: the job resumes it with a Range request
        "tcga_reports": _entry(
            server.add("TCGA_Reports.csv.zip", corpus, cut=2 * len(corpus) // 3),
            f"gitsha1:{_gitsha1(corpus)}",
            inp / "TCGA_Reports.csv.zip",
        ),
        "five_answers_luad": _entry(
            server.add("LUAD.csv", answers["LUAD"]),
            "sha256:" + hashlib.sha256(answers["LUAD"]).hexdigest(),
            inp / "LUAD.csv",
            answers["LUAD"],
        ),
        "five_answers_lusc": _entry(
            server.add("LUSC.csv", answers["LUSC"]),
            "md5:" + hashlib.md5(answers["LUSC"]).hexdigest(),
            inp / "LUSC.csv",
            answers["LUSC"],
        ),
    }
    proc = _run(tmp_path, downloads, "results/reports/labels.parquet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (inp / "TCGA_Reports.csv.zip").read_bytes() == corpus
    ranges = [h.get("Range") for h in server.gets("TCGA_Reports.csv.zip")]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes="), ranges
    assert 0 < int(ranges[1][6:-1]) <= 2 * len(corpus) // 3  # resumed where the written chunks end
    log = (tmp_path / "results" / "logs" / "fetch" / "tcga_reports.log").read_text()
    assert f"resuming at byte {ranges[1][6:-1]}" in log and "downloaded" in log
    labels = pd.read_parquet(tmp_path / "results" / "reports" / "labels.parquet")
    cohort = set(pd.read_csv(tmp_path / "results" / "cohort" / "samples.csv")["patient_id"])
    dev_df = pd.read_csv(io.BytesIO(dev))
    expected = set(dev_df["patient_id"]) & cohort
    assert set(labels["patient_id"]) == expected and 250 < len(expected) < 300  # 269: reported patients with a slide
    assert labels["backend"].eq("precomputed").all() and not labels["flag"].eq("missing_answer").any()
    # a second run finds everything verified and up to date
    again = _run(tmp_path, downloads, "results/reports/labels.parquet")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stderr[-2000:]


def test_a_checksum_mismatch_and_an_unreachable_source_fail_clearly(server, tmp_path):
    dev = shared_path("reports/tcga_lung_reports_dev.csv").read_bytes()
    answers = _by_class(dev)
    inp = tmp_path / "inputs"
    unreachable = closed_port_url()
    downloads = {
        "tcga_reports": _entry(unreachable, "sha256:" + "0" * 64, inp / "TCGA_Reports.csv.zip", retries=0),
        "five_answers_luad": _entry(
            server.add("LUAD.csv", answers["LUAD"]), "sha256:" + "ab" * 32, inp / "LUAD.csv", answers["LUAD"]
        ),
        "five_answers_lusc": _entry(
            server.add("LUSC.csv", answers["LUSC"]),
            "sha256:" + hashlib.sha256(answers["LUSC"]).hexdigest(),
            inp / "LUSC.csv",
            answers["LUSC"],
        ),
    }
    proc = _run(tmp_path, downloads, "results/reports/labels.parquet")
    assert proc.returncode != 0
    logs = tmp_path / "results" / "logs" / "fetch"
    bad = (logs / "five_answers_luad.log").read_text()
    actual = hashlib.sha256(answers["LUAD"]).hexdigest()
    assert "LUAD.csv" in bad and "ab" * 32 in bad and actual in bad, bad[-2000:]
    off = (logs / "tcga_reports.log").read_text()
    assert unreachable in off and "by hand" in off and str(inp / "TCGA_Reports.csv.zip") in off, off[-2000:]
    assert "downloads.tcga_reports" in off
    # nothing unverified under the final names; the good file is there; no labels
    assert not (inp / "LUAD.csv").exists() and not (inp / "TCGA_Reports.csv.zip").exists()
    assert (inp / "LUSC.csv").read_bytes() == answers["LUSC"]
    assert not (tmp_path / "results" / "reports" / "labels.parquet").exists()
