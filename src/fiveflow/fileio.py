"""Small I/O helpers shared by every stage: atomic writes, safe temporary outputs and safe identifiers.

Every temporary or partial file that is later renamed onto its final name goes through here:
:func:`atomic_path` (a fresh, randomly named temporary next to the destination) or :func:`open_output`
(a fixed name such as a resumable download's ``.NAME.partial``, opened without following a link).
Both refuse a symbolic link or a non-file where they write (:class:`UnsafePathError`, naming the
path and the fix), so a link planted in an output folder cannot redirect a write elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .ids import clean_id as sanitize_id  # the one id policy lives in fiveflow.ids
from .ids import slide_stem


def slide_id_from_path(path: str | os.PathLike) -> str:
    """Slide id = file name without its (last) extension, sanitised (:func:`fiveflow.ids.clean_id`)."""
    return sanitize_id(slide_stem(path))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MB blocks."""
    return file_digest(path, "sha256")


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest (``hashlib`` algorithm name, e.g. sha256, md5) of a file's bytes, read in 1 MB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class UnsafePathError(OSError, ValueError):
    """A temporary or partial output path is a symbolic link, or exists and is not a plain file.

    Writing through it could overwrite (or create) a file anywhere the process can write, or fail
    half-way; the message names the path and the fix. It is an ``OSError`` (a file-system problem)
    and a ``ValueError`` (the command line reports it as an error, without a traceback).
    """


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse(path: Path, st: os.stat_result) -> UnsafePathError:
    if stat.S_ISLNK(st.st_mode):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        return UnsafePathError(
            f"{path} is a symbolic link{target}; writing through it would change or create "
            "the file it points to, so it is refused. Fix: remove the link (rm it; its target "
            "is left alone), then rerun"
        )
    if stat.S_ISREG(st.st_mode):  # only reached for hard links
        return UnsafePathError(
            f"{path} is a hard link ({st.st_nlink} names for one file); writing to it "
            "would change the other names too. Fix: remove it, then rerun"
        )
    return UnsafePathError(
        f"{path} is {_kind(st.st_mode)}, where a file is written. Fix: move it away or remove it, then rerun"
    )


def check_plain_target(path: str | os.PathLike) -> None:
    """Raise :class:`UnsafePathError` when ``path`` is a symbolic link or exists and is not a regular file.

    Checks the name itself (``lstat``), not what a link points to. A missing path is fine.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st)


def open_output(path: str | os.PathLike, mode: str = "wb", *, perm: int = 0o666):
    """Open ``path`` for writing without following a symbolic link; returns a file object.

    ``mode``: ``w`` (truncate), ``a`` (append), ``x`` (a fresh file: ``O_EXCL``, fails with
    ``FileExistsError`` when the name exists), each with ``b`` for bytes. The name is opened with
    ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a named pipe cannot hang the open); a symbolic link, a
    non-regular file or a file with other hard links raises :class:`UnsafePathError` naming the path
    and the fix, and nothing is written or truncated. For temporary and partial outputs that are
    later renamed onto their final name (:func:`atomic_path` is the usual way to write a whole file).
    """
    path = Path(path)
    kind = mode.replace("b", "")
    if kind not in ("w", "a", "x"):
        raise ValueError(f"open_output: mode {mode!r} is not one of w, a, x (with an optional b)")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    flags |= {"w": 0, "a": os.O_APPEND, "x": os.O_EXCL}[kind]
    try:
        fd = os.open(path, flags, perm)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EMLINK, errno.EEXIST):
            try:  # a link, a pipe, a directory (EEXIST: mode x found the name taken, by a link or a file)
                st = os.lstat(path)
            except OSError:
                raise exc from None
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(path, st) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise _refuse(path, st)
        os.set_blocking(fd, True)
        if kind == "w":
            os.ftruncate(fd, 0)  # only now: truncating before the checks could empty someone else's file
        return os.fdopen(fd, ("a" if kind == "a" else "w") + ("b" if "b" in mode else ""))
    except BaseException:
        os.close(fd)
        raise


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete temporary files that killed writers of ``dest`` left behind (this host, process gone)."""
    host = socket.gethostname()
    removed = []
    for p in dest.parent.glob(f".{glob.escape(dest.name)}.*"):
        rest = p.name[len(dest.name) + 2 :]
        pid = rest[len(host) + 1 :].split(".")[0] if rest.startswith(host + ".") else ""
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    A crash or kill mid-write leaves at most a ``.tmp`` file, never a truncated ``dest``; the next
    write of ``dest`` removes such leftovers. The temporary is a fresh file with a random name
    (``O_EXCL``, so a planted link cannot be reused); a ``dest`` that is a directory raises
    :class:`UnsafePathError` naming it before anything is written, and a temporary that is no longer
    a plain file when the write ends (replaced by a link meanwhile) is not renamed onto ``dest``.
    A ``dest`` that is a symbolic link is replaced by the new file (the rename never follows it).
    """
    dest = Path(dest)
    _check_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    # host and pid in the name let a later writer recognise temporaries whose writer was killed
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.{socket.gethostname()}.{os.getpid()}.",
        suffix=suffix or (dest.suffix + ".tmp"),
        dir=dest.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        check_plain_target(tmp_path)
        try:
            os.replace(tmp_path, dest)
        except (IsADirectoryError, NotADirectoryError):
            _check_dest(dest)  # a directory appeared there meanwhile: say so
            raise
    finally:
        tmp_path.unlink(missing_ok=True)  # never follows a link


def _check_dest(dest: Path) -> None:
    try:
        st = os.lstat(dest)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"{dest} is a directory, so the output file cannot be written there. Fix: move "
            "or remove that directory, or choose another output path"
        )


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
