"""Hostile inputs and outputs at the command line (issue 16): every user-caused OS error, bad number option,
unreadable input file or Ctrl-C ends in one line on stderr and a fixed exit code, never a traceback; a
genuine programming error still shows its traceback.

Running as root (CI does) makes chmod-based tests pass vacuously: the permission tests drop root's
file-permission override with ``setpriv`` when running as root (skipped where that is impossible), and
every defect also has a variant that fails the same way for root (a file where a folder is needed, a
folder where a file is written, a simulated full disk).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, write_test_slide
from fiveflow.cli import build_parser, main
from fiveflow.errors import InputFileError, os_error_line, user_error_line

CONFIG = ["--config", str(PROJECT_ROOT / "config.yaml")]


def one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fiveflow {command}: error: ") and "Fix: " in lines[0], lines[0]
    return lines[0]


def samples_sheet(tmp_path: Path) -> Path:
    sheet = tmp_path / "samples.csv"
    rows = [f"P{i},{'LUAD' if i % 2 else 'LUSC'},s{i}.svs" for i in range(8)]
    sheet.write_text("patient_id,label,path\n" + "\n".join(rows) + "\n")
    return sheet


# --- OS errors: root-proof variants ------------------------------------------------------------------------


def test_split_out_is_an_existing_file(tmp_path, capsys):
    """--out names a file: mkdir fails with FileExistsError (was a traceback)."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["split", str(samples_sheet(tmp_path)), "--out", str(blocker), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert str(blocker) in line and "remove or rename it, or choose another --out" in line


def test_tile_and_demo_out_under_a_file(small_slide, tmp_path, capsys):
    """An --out whose parent is a regular file: NotADirectoryError names the file in the way (was a traceback)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["tile", "--slide", str(small_slide), "--out", str(blocker / "res"), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "tile")
    assert f"({blocker} is a file, not a folder)" in line and f"remove or rename the file {blocker}" in line
    assert main(["demo", "--out", str(blocker / "demo"), "--n-slides", "8", *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "demo")
    assert f"{blocker} is a file" in line and "--out" in line


def test_samples_sheet_is_a_folder(tmp_path, capsys):
    """An input path that is a folder: one line (IsADirectoryError), however the sheet is read."""
    (tmp_path / "sheet").mkdir()
    assert main(["split", str(tmp_path / "sheet"), "--out", str(tmp_path / "o"), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert str(tmp_path / "sheet") in line


def test_config_that_is_a_folder_names_the_cli_option(tmp_path, capsys):
    (tmp_path / "cfg").mkdir()
    assert main(["split", str(samples_sheet(tmp_path)), "--config", str(tmp_path / "cfg")]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert "pass --config with the path of a YAML file" in line


def test_missing_config_names_the_cli_option_not_snakemakes(tmp_path, capsys):
    """`fiveflow` takes --config; --configfile is Snakemake's option (the message said --configfile)."""
    assert main(["split", str(samples_sheet(tmp_path)), "--config", str(tmp_path / "nope.yaml")]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert "pass --config with an existing file" in line and "--configfile" not in line


def test_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC (simulated: any user can meet it) says to free space, naming the file."""
    import fiveflow.train.splits as splits

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "o" / "split.csv"))

    monkeypatch.setattr(splits, "make_split", full)
    assert main(["split", str(samples_sheet(tmp_path)), "--out", str(tmp_path / "o"), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert "No space left on device" in line and "free space" in line and "split.csv" in line


def test_permission_error_is_one_line_simulated(tmp_path, capsys, monkeypatch):
    """A PermissionError on an output (simulated, so it also runs as root) points at the folder's permissions."""
    import fiveflow.train.splits as splits

    out = tmp_path / "o"

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))

    monkeypatch.setattr(splits, "make_split", denied)
    assert main(["split", str(samples_sheet(tmp_path)), "--out", str(out), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "split")
    assert f"cannot write {out}: Permission denied" in line and "ls -ld" in line and "choose another --out" in line


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.EROFS, "on a writable disk"),
        (errno.EISDIR, "remove or rename that folder"),
        (errno.ENAMETOOLONG, "shorter path"),
        (errno.EMFILE, "ulimit -n"),
        (errno.EIO, "check the disk"),
    ],
)
def test_os_error_kinds(tmp_path, code, words):
    line = os_error_line(
        OSError(code, os.strerror(code), str(tmp_path / "out" / "f.csv")), [("--out", tmp_path / "out")]
    )
    assert line and os.strerror(code) in line and words in line and str(tmp_path / "out" / "f.csv") in line


def test_rename_onto_a_folder_names_the_destination(tmp_path):
    """os.replace(tmp, dest) onto a folder: the line names dest (filename2), not the temporary file."""
    tmp, dest = tmp_path / ".x.tmp", tmp_path / "out" / "x.csv"
    tmp.write_text("x")
    dest.mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as exc:
        os.replace(tmp, dest)
    line = os_error_line(exc.value, [("--out", tmp_path / "out")])
    assert line.startswith(f"cannot write {dest}: Is a directory") and "remove or rename that folder" in line


def test_library_messages_name_the_file():
    """h5py and pyarrow give the file name in the message only; the line names it."""
    exc = PermissionError(
        errno.EACCES,
        "Unable to synchronously open file (unable to open file: name = 'b.h5', "
        "errno = 13, error message = 'Permission denied')",
    )
    assert "cannot access b.h5: Permission denied" in user_error_line(exc)
    exc = FileNotFoundError(errno.ENOENT, "Failed to open local file 'x.parquet'. Detail: [errno 2] No such file")
    assert "cannot find x.parquet" in user_error_line(exc)
    from PIL import UnidentifiedImageError

    assert "not readable" in user_error_line(UnidentifiedImageError("cannot identify image file 'q.png'"))


# --- OS errors: real permissions (as a non-root user, or root without its override) -------------------------


def _unprivileged() -> list[str]:
    """A command prefix that runs without root's permission override; skip when that is impossible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot drop root's permission override here: {probe.stderr.decode().strip()}")
    return prefix


def _fiveflow(prefix, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "fiveflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_real_permission_errors_are_one_line(tmp_path):
    prefix = _unprivileged()
    sheet = samples_sheet(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    slide = write_test_slide(tmp_path / "locked.tif")
    slide.chmod(0)
    cfg = tmp_path / "locked.yaml"
    shutil.copy(PROJECT_ROOT / "config.yaml", cfg)
    cfg.chmod(0)
    try:
        r = _fiveflow(prefix, "split", str(sheet), "--out", str(ro / "splits"), *CONFIG)
        assert r.returncode == 2
        line = one_error_line(r.stderr, "split")
        assert "Permission denied" in line and f"ls -ld {ro}" in line and "choose another --out" in line
        readable = write_test_slide(tmp_path / "open.tif")
        for cmd, args in (("demo", ["--n-slides", "8"]), ("tile", ["--slide", str(readable)])):
            r = _fiveflow(prefix, cmd, *args, "--out", str(ro / cmd), *CONFIG)
            assert r.returncode == 2, r.stderr
            line = one_error_line(r.stderr, cmd)
            assert "Permission denied" in line and "choose another --out" in line
        r = _fiveflow(prefix, "tile", "--slide", str(slide), "--out", str(tmp_path / "t"), *CONFIG)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "permission denied" in r.stderr and "re-download" not in r.stderr  # a permission, not a bad file
        r = _fiveflow(prefix, "split", str(sheet), "--config", str(cfg))
        assert r.returncode == 2
        assert "permission denied" in one_error_line(r.stderr, "split").lower()
    finally:
        ro.chmod(0o755)


def test_unreadable_slide_says_check_permissions(small_slide):
    """open_slide: OpenSlide calls an unreadable file an unknown format; the fix was to re-download it."""
    prefix = _unprivileged()
    small_slide.chmod(0)
    code = (
        "from fiveflow.slides.reader import open_slide, SlideError\n"
        f"try:\n    open_slide({str(small_slide)!r})\nexcept SlideError as e:\n    print(e)\n"
    )
    r = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
    )
    assert "permission denied" in r.stdout and "ls -l" in r.stdout and "re-download" not in r.stdout, (
        r.stdout + r.stderr
    )


def test_unreadable_bag_says_check_permissions(tmp_path):
    prefix = _unprivileged()
    import numpy as np

    from fiveflow.embed.bags import write_bag

    bag = write_bag(tmp_path / "s.h5", np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64))
    bag.chmod(0)
    code = (
        "from fiveflow.embed.bags import read_bag, BagError\n"
        f"try:\n    read_bag({str(bag)!r})\nexcept BagError as e:\n    print(e)\n"
    )
    r = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
    )
    assert "permission denied" in r.stdout and "re-create" not in r.stdout, r.stdout + r.stderr


# --- unreadable input files from libraries ------------------------------------------------------------------


def test_evaluate_names_a_parquet_that_is_not_parquet(tmp_path, capsys):
    """pyarrow reads through a buffer here and names '<Buffer>', not the file."""
    bad = tmp_path / "FiVE_1.parquet"
    bad.write_text("not a parquet file")
    assert main(["evaluate", str(bad), "--out", str(tmp_path / "o"), *CONFIG]) == 2
    line = one_error_line(capsys.readouterr().err, "evaluate")
    assert f"{bad}: not a readable predictions parquet" in line


def test_heatmap_bag_that_is_not_hdf5_names_the_file(tmp_path):
    """h5py's "file signature not found" OSError carries neither errno nor file name (it was a traceback)."""
    from fiveflow.evaluate.attention import bag_geometry

    bad = tmp_path / "s.h5"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(InputFileError, match=r"s\.h5: not a readable HDF5 feature bag .*Fix: "):
        bag_geometry(bad)


def test_coords_file_that_is_not_parquet_names_the_file(tmp_path):
    from fiveflow.slides.tiling import read_coords, read_meta

    bad = tmp_path / "s.parquet"
    bad.write_text("garbage")
    for fn in (read_coords, read_meta):
        with pytest.raises(
            InputFileError, match=r"s\.parquet: not a readable coordinates parquet.*tile the slide again"
        ):
            fn(bad)


# --- what stays a traceback, Ctrl-C ------------------------------------------------------------------------


def test_programming_errors_keep_their_traceback(monkeypatch, tmp_path):
    import fiveflow.train.splits as splits

    def bug(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(splits, "make_split", bug)
    with pytest.raises(KeyError):
        main(["split", str(samples_sheet(tmp_path)), "--out", str(tmp_path / "o"), *CONFIG])

    def odd(*a, **k):
        raise OSError("something without a number or a file")

    monkeypatch.setattr(splits, "make_split", odd)
    with pytest.raises(OSError):
        main(["split", str(samples_sheet(tmp_path)), "--out", str(tmp_path / "o"), *CONFIG])


def test_ctrl_c_exits_130_with_one_line(monkeypatch, tmp_path, capsys):
    import fiveflow.train.splits as splits

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(splits, "make_split", interrupted)
    assert main(["split", str(samples_sheet(tmp_path)), "--out", str(tmp_path / "o"), *CONFIG]) == 130
    assert capsys.readouterr().err.strip() == "fiveflow split: interrupted"


# --- number options ---------------------------------------------------------------------------------------


BAD_NUMBERS = [
    (["tile", "--slide", "x"], "--mpp", ["nan", "inf", "-inf", "0", "-0.5", "abc"]),
    (["tile", "--slide", "x"], "--target-mpp", ["nan", "inf", "0", "-1"]),
    (["tile", "--slide", "x"], "--patch-px", ["0", "-3", "1.5"]),
    (["demo"], "--n-slides", ["0", "-1"]),
    (["embed", "s.svs"], "--batch-size", ["0"]),
    (["embed", "s.svs"], "--workers", ["-1"]),
    (["heatmap", "--attention", "a", "--slide", "s", "--out", "o.png"], "--alpha", ["nan", "-0.1", "1.5"]),
    (["heatmap", "--attention", "a", "--slide", "s", "--out", "o.png"], "--thumbnail-size", ["0"]),
    (["train", "--split", "s", "--labels", "l", "--bags", "b"], "--threads", ["0"]),
    (["fewshot", "--ckpt", "c", "--split", "s", "--bags", "b", "--out", "o"], "--shots", ["-1", "nan"]),
    (["download", "--manifest", "m", "--out", "o"], "--jobs", ["0"]),
    (["download", "--manifest", "m", "--out", "o"], "--retries", ["-1"]),
    (["reports", "agree", "--pred", "p", "--ref", "r"], "--show", ["-1"]),
]


@pytest.mark.parametrize("base, option, values", BAD_NUMBERS, ids=[o for _, o, _ in BAD_NUMBERS])
def test_bad_number_options_are_usage_errors(base, option, values, capsys):
    """NaN/inf/out-of-range numbers are refused by argparse: exit 2, one `error:` line naming the option
    (`--mpp nan` used to be accepted, then silently ignored)."""
    for v in values:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*base, f"{option}={v}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert [ln for ln in err.splitlines() if "error:" in ln] == [ln for ln in err.splitlines()[-1:]]
        assert f"argument {option}: {v!r}" in err.splitlines()[-1] and "Traceback" not in err


def test_good_number_options_still_parse():
    a = build_parser().parse_args(["tile", "--slide", "x", "--mpp", "0.25", "--target-mpp", "1", "--patch-px", "224"])
    assert (a.mpp, a.target_mpp, a.patch_px) == (0.25, 1.0, 224)
    a = build_parser().parse_args(
        ["fewshot", "--ckpt", "c", "--split", "s", "--bags", "b", "--out", "o", "--shots", "0"]
    )
    assert a.shots == 0
    a = build_parser().parse_args(["heatmap", "--attention", "a", "--slide", "s", "--out", "o.png", "--alpha", "1"])
    assert a.alpha == 1.0


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tile", "--slide", "x", "--nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "fiveflow: error: unrecognized arguments: --nope" and "Traceback" not in err


def test_unreadable_pdf_report_and_checkpoint_say_check_permissions(tmp_path):
    """A PermissionError is not a broken file: the advice was to re-export / re-download it."""
    prefix = _unprivileged()
    import torch

    pdf = tmp_path / "TCGA-AA-0001.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    ckpt = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, ckpt)
    pdf.chmod(0)
    ckpt.chmod(0)
    code = (
        "from pathlib import Path\nfrom fiveflow.reports.inputs import read_pdf\n"
        "from fiveflow.embed.encoders.base import load_state_dict, EncoderError\n"
        f"print(read_pdf(Path({str(pdf)!r}))[2])\n"
        f"try:\n    load_state_dict({str(ckpt)!r})\nexcept EncoderError as e:\n    print(e)\n"
    )
    r = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
    )
    pdf_line, ckpt_line = r.stdout.splitlines()[:2]
    assert "check its permissions" in pdf_line and "re-download" not in pdf_line, r.stdout + r.stderr
    assert "permission denied" in ckpt_line and "re-download" not in ckpt_line, r.stdout + r.stderr


def test_split_missing_sheet_names_the_argument_not_the_config_key(tmp_path, capsys):
    """`fiveflow split SAMPLES`: the fix said to set `cohort.samples`, which this command does not read."""
    assert main(["split", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o"), *CONFIG]) == 2
    err = capsys.readouterr().err
    assert "fiveflow split SAMPLES" in err and "cohort.samples" not in err


def test_closed_stdout_is_quiet():
    """`fiveflow encoders | head -1`: the reader leaves early; no BrokenPipeError traceback, exit 141 as shells do."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    p = subprocess.Popen(
        [sys.executable, "-m", "fiveflow.cli", "encoders"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    p.stdout.close()  # long before the listing is printed (imports take a second)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err
