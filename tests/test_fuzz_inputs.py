"""Property test: malformed user files give an exit code or a one-line error, never a traceback.

Seeded random generation (no extra dependency): each reader gets ``FIVEFLOW_FUZZ_CASES`` (default
200) inputs made from a valid seed file by one to three random mutations, structural (an unquoted
delimiter inside a field, a missing or extra field on one row, a trailing delimiter on every row,
no header, a duplicated or empty column name, ids with spaces, accents, slashes or ``..``,
``nan``/``inf``/negative numbers, an unclosed quote, CRLF, a BOM, a very long field) or byte-level
(NUL, cp1252 bytes, random bytes inserted, deleted or replaced, truncation). For every input:

* the reader's API returns, or raises ``ValueError``/``FileNotFoundError`` (or a subclass) whose
  message names the file: never a ``TypeError``, ``KeyError``, ``IndexError``, ``UnicodeError``...;
* the CLI (``fiveflow.cli.main`` in process) returns an exit code and, when it fails, prints exactly
  one line ``fiveflow COMMAND: error: ...`` on stderr: no exception escapes;
* nothing is written outside the command's output folder (the sandbox is snapshotted before and after).

A few cases per reader also go through a real ``python -m fiveflow.cli`` process, so a traceback
printed by the interpreter itself would be seen. A failure message lists the case's seed, the
mutations and the input bytes, so a case is reproduced by ``_case(reader, seed)``.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N_CASES = int(os.environ.get("FIVEFLOW_FUZZ_CASES", "200"))
N_SUBPROCESS = 3

SIX = "Grade 2 (moderately differentiated); STAS present; No vascular invasion; Pleura free; Unknown; R0"
UUIDS = ["2f5a3c1e-8b1d-4a7e-9c2b-0d1e2f3a4b5c", "7c9e6679-7425-40de-944b-e07fc1f90ae7"]

SEEDS = {
    "reports": (
        "reports.csv",
        [
            ["patient_id", "text"],
            ["TCGA-AA-0001", "Lung, left upper lobe: adenocarcinoma, grade 2. Pleura free; margins negative (R0)."],
            ["TCGA-AA-0002", "Squamous cell carcinoma, poorly differentiated. Lymphovascular invasion present."],
            ["TCGA-AA-0003", "Adenocarcinoma; STAS not identified."],
        ],
        ",",
    ),
    "samples": (
        "samples.csv",
        [
            ["slide_id", "patient_id", "label", "path", "mpp"],
            ["s1", "P1", "LUAD", "slides/s1.tif", "0.5"],
            ["s2", "P2", "LUSC", "slides/s2.tif", ""],
            ["s3", "P3", "LUAD", "slides/s3.tif", "0.25"],
            ["s4", "P4", "LUSC", "slides/s4.tif", "0.5"],
        ],
        ",",
    ),
    "manifest": (
        "gdc_manifest.txt",
        [
            ["id", "filename", "md5", "size", "state"],
            [UUIDS[0], "a.svs", "0" * 32, "10", "released"],
            [UUIDS[1], "b.svs", "f" * 32, "12", "released"],
        ],
        "\t",
    ),
    "answers": (
        "answers.csv",
        [
            ["patient_id", "answer"],
            ["TCGA-AA-0001", SIX],
            ["TCGA-AA-0002", "Poorly differentiated; Unknown; Vascular invasion present; Unknown; Unknown; R1"],
        ],
        ",",
    ),
    "config": ("config.yaml", [], ""),
    "predictions": ("FiVE_2.parquet", [], ""),
    "dsmil_csv": (
        "TCGA-AA-0001.csv",
        [
            ["0", "1", "2", "3"],
            ["0.1000", "0.2000", "0.3000", "0.4000"],
            ["0.5000", "-0.6000", "0.7000", "0.8000"],
            ["0.9000", "1.0000", "1.1000", "1.2000"],
        ],
        ",",
    ),
}

ODD_VALUES = [
    "",
    " ",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e309",
    "José 01",
    "A B",
    "A_B",
    "../x",
    "/etc/x",
    "a/b",
    ".hidden",
    "..",
    "é" * 3,
    "\u00a0",
    '"',
    "'",
    "x" * 5000,
    "0x10",
    "1,5",
    "TCGA-AA-0001",
]


@dataclass
class Case:
    reader: str
    seed: int
    data: bytes
    mutations: list[str]

    def describe(self) -> str:
        shown = self.data if len(self.data) < 600 else self.data[:600] + b"..."
        return f"reader={self.reader} seed={self.seed} mutations={self.mutations} input={shown!r}"


def _render(rows: list[list[str]], sep: str, quote_all: bool = False) -> str:
    def cell(v: str) -> str:
        if quote_all or any(c in v for c in (sep, '"', "\n", "\r")):
            return '"' + v.replace('"', '""') + '"'
        return v

    return "".join(sep.join(cell(v) for v in r) + "\n" for r in rows)


def _structural(rng: random.Random, rows: list[list[str]], sep: str) -> tuple[list[list[str]], str, str]:
    """One structural change; returns the rows, an optional raw text override ("" = render) and its name."""
    rows = [list(r) for r in rows]
    kind = rng.choice(
        [
            "unquoted_delim",
            "extra_field",
            "missing_field",
            "trailing_delim",
            "no_header",
            "dup_column",
            "empty_column",
            "odd_value",
            "odd_value",
            "dup_row",
            "unclosed_quote",
            "other_sep",
            "drop_column",
            "only_header",
            "long_field",
            "crlf",
            "bom",
            "quoted_newline",
        ]
    )
    i = rng.randrange(1, len(rows)) if len(rows) > 1 else 0
    j = rng.randrange(len(rows[0]))
    if kind == "unquoted_delim":
        text = _render(rows, sep)
        lines = text.splitlines(keepends=True)
        ln = lines[i]
        cut = rng.randrange(1, max(2, len(ln) - 1))
        lines[i] = ln[:cut] + sep + " more" + ln[cut:]
        return rows, "".join(lines), kind
    if kind == "extra_field":
        rows[i].insert(rng.randrange(len(rows[i]) + 1), rng.choice(ODD_VALUES[:12]))
    elif kind == "missing_field" and len(rows[i]) > 1:
        rows[i].pop(rng.randrange(len(rows[i])))
    elif kind == "trailing_delim":
        return (
            rows,
            "".join(sep.join(r) + sep + "\n" for r in rows[:1] + [r for r in rows[1:]])
            if rng.random() < 0.5
            else "".join(sep.join(r) + (sep if k else "") + "\n" for k, r in enumerate(rows)),
            kind,
        )
    elif kind == "no_header":
        rows = rows[1:] or rows
    elif kind == "dup_column":
        rows[0][j] = rows[0][(j + 1) % len(rows[0])]
    elif kind == "empty_column":
        rows[0][j] = ""
    elif kind == "odd_value":
        rows[i][j] = rng.choice(ODD_VALUES)
    elif kind == "dup_row":
        rows.insert(i, list(rows[i]))
    elif kind == "unclosed_quote":
        text = _render(rows, sep)
        pos = rng.randrange(len(text))
        return rows, text[:pos] + '"' + text[pos:], kind
    elif kind == "other_sep":
        return rows, _render(rows, "\t" if sep == "," else ","), kind
    elif kind == "drop_column" and len(rows[0]) > 1:
        for r in rows:
            if len(r) > j:
                r.pop(j)
    elif kind == "only_header":
        rows = rows[:1]
    elif kind == "long_field":
        rows[i][j] = "y" * rng.choice([10_000, 200_000])
    elif kind == "crlf":
        return rows, _render(rows, sep).replace("\n", "\r\n"), kind
    elif kind == "bom":
        return rows, "\ufeff" + _render(rows, sep), kind
    elif kind == "quoted_newline":
        rows[i][j] = rows[i][j] + "\nsecond line, with a comma"
    return rows, "", kind


def _bytewise(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    kind = rng.choice(["nul", "cp1252", "insert", "delete", "replace", "truncate", "garbage", "empty"])
    pos = rng.randrange(len(data) + 1)
    if kind == "nul":
        return data[:pos] + b"\x00" + data[pos:], kind
    if kind == "cp1252":
        return data[:pos] + rng.choice([b"\xe9", b"\x92", b"\x81\x8d", b"\xff\xfe"]) + data[pos:], kind
    if kind == "insert":
        return data[:pos] + bytes(rng.choice(b',;\t"\n\r .-/\\') for _ in range(rng.randint(1, 4))) + data[pos:], kind
    if kind == "delete":
        return data[:pos] + data[pos + rng.randint(1, 8) :], kind
    if kind == "replace" and data:
        p = rng.randrange(len(data))
        return data[:p] + bytes([rng.randrange(256)]) + data[p + 1 :], kind
    if kind == "truncate":
        return data[:pos], kind
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))), kind
    return b"", kind


YAML_VALUES = [
    ".nan",
    ".inf",
    "-.inf",
    "-1",
    "0",
    "1e309",
    "''",
    "[]",
    "{}",
    "[1, 2]",
    "{a: 1}",
    "null",
    "yes",
    '"x"',
    "José",
    "../x",
    "1.5",
    "-0.5",
    "100000000000",
]


def _config_case(rng: random.Random, seed: int) -> Case:
    """The project's config.yaml with one to three values, lines or bytes changed."""
    lines = (ROOT / "config.yaml").read_text().splitlines(keepends=True)
    mutations = []
    for _ in range(rng.randint(1, 3)):
        values = [
            k for k, ln in enumerate(lines) if ":" in ln.split("#")[0] and ln.split("#")[0].split(":", 1)[1].strip()
        ]
        kind = rng.choice(["value", "value", "value", "drop_line", "dup_line", "indent", "tab"])
        k = rng.choice(values)
        ln = lines[k]
        if kind == "value":
            key, rest = ln.split(":", 1)
            comment = ("  #" + rest.split("#", 1)[1]) if "#" in rest else "\n"
            lines[k] = f"{key}: {rng.choice(YAML_VALUES)}{comment if comment.endswith(chr(10)) else comment + chr(10)}"
        elif kind == "drop_line":
            lines[k] = ""
        elif kind == "dup_line":
            lines.insert(k, ln)
        elif kind == "indent":
            lines[k] = " " + ln
        else:
            lines[k] = "\t" + ln.lstrip(" ")
        mutations.append(f"{kind}@{k + 1}")
    data = "".join(lines).encode()
    if rng.random() < 0.15:
        data, name = _bytewise(rng, data)
        mutations.append(name)
    return Case("config", seed, data, mutations)


def _predictions_case(rng: random.Random, seed: int) -> Case:
    """A predictions parquet (CONTRACTS.md) with a column dropped, renamed or given odd values, or its bytes damaged."""
    import numpy as np
    import pandas as pd

    n = 8
    df = pd.DataFrame(
        {
            "method": "FiVE",
            "shots": np.full(n, 2, dtype=np.int64),
            "run": np.arange(n) % 2,
            "slide_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "label": ["LUAD", "LUSC"] * (n // 2),
            "prob": np.linspace(0.05, 0.95, n),
            "pred": ["LUAD", "LUSC"] * (n // 2),
        }
    )
    mutations = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(["drop", "rename", "odd", "odd", "odd", "empty", "extra", "dtype"])
        col = rng.choice(list(df.columns))
        i = rng.randrange(len(df)) if len(df) else 0
        if kind == "drop":
            df = df.drop(columns=[col])
        elif kind == "rename":
            df = df.rename(columns={col: col.upper()})
        elif kind == "odd" and len(df):
            df[col] = df[col].astype(object)
            df.loc[df.index[i], col] = rng.choice([None, float("nan"), float("inf"), -0.1, 1.5, "x", "", 2.5, -1, " "])
        elif kind == "empty":
            df = df.iloc[:0]
        elif kind == "extra":
            df["extra"] = 1
        elif kind == "dtype":
            df[col] = df[col].astype(str)
        mutations.append(f"{kind}:{col}")
    buf = io.BytesIO()
    try:
        df.to_parquet(buf, index=False)
    except Exception:  # noqa: BLE001 - a column mixing numbers and text: Parquet keeps one type, so text
        for c in [c for c in df.columns if df[c].dtype.kind == "O"]:
            df[c] = df[c].map(lambda v: v if v is None else str(v))
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
    data = buf.getvalue()
    if rng.random() < 0.25:
        data, name = _bytewise(rng, data)
        mutations.append(name)
    return Case("predictions", seed, data, mutations)


def _case(reader: str, seed: int) -> Case:
    rng = random.Random(f"{reader}:{seed}")
    if reader == "config":
        return _config_case(rng, seed)
    if reader == "predictions":
        return _predictions_case(rng, seed)
    _, rows, sep = SEEDS[reader]
    mutations: list[str] = []
    text = ""
    for _ in range(rng.randint(1, 2)):
        rows, override, name = _structural(rng, rows, sep)
        mutations.append(name)
        if override:
            text = override
            break
    data = (text or _render(rows, sep, quote_all=rng.random() < 0.15)).encode("utf-8")
    if rng.random() < 0.35:
        data, name = _bytewise(rng, data)
        mutations.append(name)
    return Case(reader, seed, data, mutations)


# ----------------------------------------------------------------------------- sandbox


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        for name in filenames + [x for x in dirnames if (d / x).is_symlink()]:
            p = d / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _setup(tmp: Path, case: Case) -> tuple[Path, list[str]]:
    """Write the case into tmp/in, return (output folder, CLI argv)."""
    name = SEEDS[case.reader][0]
    inp = tmp / "in"
    inp.mkdir(parents=True, exist_ok=True)
    src = inp / name
    src.write_bytes(case.data)
    out = tmp / "out"
    cfg = str(ROOT / "config.yaml")
    if case.reader == "reports":
        return out, [
            "reports",
            "extract",
            str(src),
            "--out",
            str(out / "labels.parquet"),
            "--backend",
            "rules",
            "--config",
            cfg,
        ]
    if case.reader == "answers":
        reports = inp / "reports.csv"
        reports.write_text(_render(SEEDS["reports"][1], ","))
        return out, [
            "reports",
            "extract",
            str(reports),
            "--backend",
            "import",
            "--answers",
            str(src),
            "--out",
            str(out / "labels.parquet"),
            "--config",
            cfg,
        ]
    if case.reader == "samples":
        return out, ["split", str(src), "--out", str(out / "splits"), "--config", cfg]
    if case.reader == "manifest":
        # port 9 (discard) on this host: a valid row fails at once with "connection refused", nothing leaves
        return out, [
            "download",
            "--manifest",
            str(src),
            "--out",
            str(out / "gdc"),
            "--jobs",
            "1",
            "--retries",
            "0",
            "--base-url",
            "http://127.0.0.1:9/data",
        ]
    if case.reader == "predictions":
        return out, ["evaluate", str(src), "--out", str(out), "--config", cfg]
    if case.reader == "config":
        samples = inp / "samples.csv"
        samples.write_text(_render(SEEDS["samples"][1], ","))
        return out, ["split", str(samples), "--out", str(out / "splits"), "--config", str(src)]
    if case.reader == "dsmil_csv":
        return out, ["import-bags", str(src), "--out", str(out / "bags"), "--format", "dsmil_csv"]
    raise AssertionError(case.reader)


def _api(case: Case, src: Path) -> None:
    """Call the reader's API directly."""
    if case.reader == "reports":
        from fiveflow.reports.inputs import read_report_inputs

        read_report_inputs(src)
    elif case.reader == "answers":
        from fiveflow.reports.structure import read_precomputed

        read_precomputed(src)
    elif case.reader == "samples":
        from fiveflow.samples import read_samples

        read_samples(src, classes=["LUAD", "LUSC"], check_files=False)
    elif case.reader == "manifest":
        from fiveflow.download.manifest import read_manifest

        read_manifest(src)
    elif case.reader == "predictions":
        from fiveflow.evaluate.metrics import per_run_metrics, summarize
        from fiveflow.evaluate.tables import load_predictions

        pred = load_predictions([str(src)])
        summarize(pred, classes=["LUAD", "LUSC"], runs=per_run_metrics(pred, classes=["LUAD", "LUSC"]), n_boot=20)
    elif case.reader == "config":
        from fiveflow.config import load_config

        load_config(src)
    elif case.reader == "dsmil_csv":
        from fiveflow.embed.importers import read_dsmil_csv

        read_dsmil_csv(src)


READERS = list(SEEDS)


def _rectangular(data: bytes, sep: str) -> bool:
    """Every non-blank row has the header's field count (what a strict reader must have checked)."""
    import csv

    csv.field_size_limit(1 << 30)
    for enc in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep) if any(c.strip() for c in r)]
    except csv.Error:
        return False
    return all(len(r) == len(rows[0]) for r in rows)


@pytest.mark.parametrize("reader", READERS)
def test_reader_api_raises_only_user_errors_naming_the_file(reader, tmp_path):
    from fiveflow.embed.bags import BagError

    problems = []
    for seed in range(N_CASES):
        case = _case(reader, seed)
        d = tmp_path / f"c{seed}"
        d.mkdir()
        src = d / SEEDS[reader][0]
        src.write_bytes(case.data)
        try:
            _api(case, src)
            if reader not in ("config", "predictions") and not _rectangular(case.data, SEEDS[reader][2]):
                problems.append(
                    f"read without error, but some row's field count differs from the header's "
                    f"(silently misread)\n  {case.describe()}"
                )
        except (ValueError, FileNotFoundError, BagError) as exc:
            if str(src) not in str(exc) and src.name not in str(exc):
                problems.append(f"error does not name the file: {exc!r}\n  {case.describe()}")
        except Exception as exc:  # noqa: BLE001 - that is what the property is about
            problems.append(f"{type(exc).__name__}: {exc}\n  {case.describe()}")
        if len(problems) >= 5:
            break
    assert not problems, f"{len(problems)} input(s) broke the {reader} reader:\n" + "\n".join(problems)


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    from fiveflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _check_cli_result(case: Case, rc, err: str, before: dict, after: dict, problems: list[str]) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not isinstance(rc, int) or rc not in (0, 1, 2):
        problems.append(f"exit code {rc!r}\n  {case.describe()}")
    if "Traceback" in err:
        problems.append(f"traceback on stderr: {err[-800:]}\n  {case.describe()}")
    errors = [ln for ln in lines if ln.startswith("fiveflow ") and ": error: " in ln]
    if rc == 2 and len(errors) != 1:
        problems.append(f"exit 2 with {len(errors)} error line(s) on stderr: {lines[-5:]}\n  {case.describe()}")
    if rc == 2 and errors and errors[-1] != lines[-1]:
        problems.append(f"the error line is not the last line on stderr: {lines[-5:]}\n  {case.describe()}")
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    changed -= {str(Path("in") / SEEDS[case.reader][0])}
    if changed:
        problems.append(f"written outside the output folder: {sorted(changed)[:5]}\n  {case.describe()}")


@pytest.mark.parametrize("reader", READERS)
def test_cli_gives_an_exit_code_or_one_line_never_a_traceback(reader, tmp_path, monkeypatch):
    """Every generated input through ``fiveflow.cli.main``: no escaping exception, one error line, no stray writes."""
    monkeypatch.chdir(tmp_path)  # a relative default output would land in the sandbox and be caught
    monkeypatch.delenv("GDC_TOKEN", raising=False)
    problems: list[str] = []
    for seed in range(N_CASES):
        case = _case(reader, seed)
        box = tmp_path / f"c{seed}"
        out, argv = _setup(box, case)
        before = _snapshot(tmp_path, out)
        try:
            rc, _, err = _run_cli(argv)
        except SystemExit as exc:  # argparse: the arguments here are always valid
            rc, err = f"SystemExit({exc.code})", ""
        except Exception as exc:  # noqa: BLE001 - the property under test
            problems.append(f"{type(exc).__name__} escaped main(): {exc}\n  {case.describe()}")
            continue
        finally:
            pass
        _check_cli_result(case, rc, err, before, _snapshot(tmp_path, out), problems)
        if len(problems) >= 5:
            break
    assert not problems, f"{len(problems)} input(s) broke `fiveflow` on a malformed {reader} file:\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize("reader", READERS)
def test_real_process_prints_no_traceback(reader, tmp_path):
    """A few cases per reader through the interpreter itself (an uncaught exception prints a traceback)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    env.pop("GDC_TOKEN", None)
    problems: list[str] = []
    # the cases most likely to fail: the first of each structural kind among the generated ones
    seen, picked = set(), []
    for seed in range(N_CASES):
        case = _case(reader, seed)
        if case.mutations[0] not in seen:
            seen.add(case.mutations[0])
            picked.append(case)
        if len(picked) == N_SUBPROCESS:
            break
    for case in picked:
        box = tmp_path / f"c{case.seed}"
        out, argv = _setup(box, case)
        before = _snapshot(tmp_path, out)
        r = subprocess.run(
            [sys.executable, "-m", "fiveflow.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        _check_cli_result(case, r.returncode, r.stderr, before, _snapshot(tmp_path, out), problems)
    assert not problems, "\n".join(problems)


def test_generator_makes_varied_and_reproducible_inputs():
    """The generator is deterministic per (reader, seed) and covers every mutation kind over 200 seeds."""
    for reader in READERS:
        cases = [_case(reader, s) for s in range(200)]
        if reader in ("config", "predictions"):
            assert len({c.data for c in cases}) > 100, reader
            continue
        assert [c.data for c in cases] == [_case(reader, s).data for s in range(200)]
        kinds = {m for c in cases for m in c.mutations}
        assert {
            "unquoted_delim",
            "extra_field",
            "missing_field",
            "trailing_delim",
            "odd_value",
            "nul",
            "garbage",
        } <= kinds, (reader, kinds)
        assert len({c.data for c in cases}) > 120, reader
