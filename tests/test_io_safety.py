"""Safe temporary and partial outputs (fiveflow.fileio): no write ever goes through a planted link."""

from __future__ import annotations

import os

import pytest

from fiveflow.fileio import UnsafePathError, atomic_path, atomic_write_text, check_plain_target, open_output


@pytest.fixture
def precious(tmp_path):
    p = tmp_path / "elsewhere" / "precious.txt"
    p.parent.mkdir()
    p.write_bytes(b"precious bytes\n")
    return p


@pytest.mark.parametrize("mode", ["wb", "ab", "w", "a", "xb"])
def test_open_output_refuses_a_symlink_and_leaves_its_target_alone(tmp_path, precious, mode):
    link = tmp_path / ".out.partial"
    link.symlink_to(precious)
    with pytest.raises(UnsafePathError, match=rf"{link} is a symbolic link \(to {precious}\).*Fix: remove the link"):
        open_output(link, mode)
    assert precious.read_bytes() == b"precious bytes\n" and link.is_symlink()
    dangling = tmp_path / ".other.partial"
    dangling.symlink_to(tmp_path / "elsewhere" / "new.txt")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        open_output(dangling, mode)
    assert not (tmp_path / "elsewhere" / "new.txt").exists()


def test_open_output_refuses_pipes_directories_and_hard_links_without_writing(tmp_path, precious):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match=rf"{fifo} is a named pipe.*Fix: move it away"):
        open_output(fifo, "ab")  # must not block waiting for a reader
    (tmp_path / "d").mkdir()
    with pytest.raises(UnsafePathError, match="is a directory"):
        open_output(tmp_path / "d", "wb")
    hard = tmp_path / ".hard.partial"
    os.link(precious, hard)
    with pytest.raises(UnsafePathError, match="hard link"):
        open_output(hard, "wb")  # checked before truncating: the other name keeps its bytes
    assert precious.read_bytes() == b"precious bytes\n"
    with pytest.raises(UnsafePathError):
        check_plain_target(fifo)
    check_plain_target(tmp_path / "missing")  # a missing name is fine


def test_open_output_modes(tmp_path):
    p = tmp_path / "f"
    with open_output(p, "wb") as fh:
        fh.write(b"abc")
    with open_output(p, "ab") as fh:
        fh.write(b"def")
    assert p.read_bytes() == b"abcdef"
    with open_output(p, "w") as fh:
        fh.write("x")
    assert p.read_text() == "x"
    with pytest.raises(FileExistsError):
        open_output(p, "x")
    with open_output(tmp_path / "fresh", "x") as fh:
        fh.write("new")
    assert (tmp_path / "fresh").read_text() == "new"
    with pytest.raises(ValueError, match="mode"):
        open_output(p, "r")


def test_atomic_path_onto_a_directory_names_it_before_any_work(tmp_path):
    dest = tmp_path / "table.csv"
    dest.mkdir()
    ran = []
    with pytest.raises(UnsafePathError, match=rf"{dest} is a directory.*Fix: move or remove"):
        with atomic_path(dest) as tmp:
            ran.append(tmp)
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    assert isinstance(UnsafePathError("x"), ValueError)  # the command line reports it as an error, no traceback


def test_atomic_path_replaces_a_link_at_dest_and_never_renames_a_swapped_temp(tmp_path, precious):
    dest = tmp_path / "out.txt"
    dest.symlink_to(precious)
    atomic_write_text(dest, "new")
    assert not dest.is_symlink() and dest.read_text() == "new" and precious.read_bytes() == b"precious bytes\n"
    other = tmp_path / "other.txt"
    with pytest.raises(UnsafePathError, match="symbolic link"):
        with atomic_path(other) as tmp:
            tmp.unlink()
            tmp.symlink_to(precious)  # swapped for a link while the caller wrote
    assert not other.exists() and not tmp.is_symlink() and precious.read_bytes() == b"precious bytes\n"
