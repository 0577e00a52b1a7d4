"""One-line messages for errors the user's files and folders cause, as opposed to bugs.

:func:`user_error_line` turns an operating-system error (permission denied, a folder where a file is
expected, a file where a folder is expected, disk full, read-only file system, ...) or a library's
complaint about an unreadable input file (h5py, pyarrow, PIL) into ``<what> <path>: <reason>. Fix:
<fix>``. Anything else gives ``None``, so a genuine programming error still ends in its traceback (a
bug report). :func:`reading` names the file when a library's error does not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

#: (option, path) pairs of a command's outputs: a problem under one of them is fixed by choosing another
Outputs = Iterable[tuple[str, "str | os.PathLike | None"]]


class InputFileError(ValueError):
    """An input file a library could not read; the message names the file and the fix."""


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _existing_ancestor(p: Path) -> Path:
    """``p`` itself when it exists, else its nearest existing parent folder."""
    for q in (p, *p.parents):
        if _exists(q):
            return q
    return p


def _file_in_the_way(p: Path) -> Path | None:
    """The first of ``p``'s parents (from the root down) that exists but is not a folder."""
    for q in reversed(p.parents):
        if _exists(q) and not q.is_dir():
            return q
    return None


def _output_option(path: Path, outputs: Outputs) -> str | None:
    """The option (e.g. ``--out``) whose path holds ``path``, or lies under a file ``path`` names."""
    here = Path(os.path.abspath(path))
    for option, out in outputs:
        if out is None:
            continue
        out = Path(os.path.abspath(out))
        if here == out or out in here.parents or here in out.parents:
            return option
    return None


#: how h5py ("name = 'x.h5'") and pyarrow ("local file 'x.parquet'") name the file in their messages
_NAME_IN_MESSAGE = re.compile(r"(?:name = |local file |input source )'([^']+)'")


def _path_in_message(text: str) -> str | None:
    m = _NAME_IN_MESSAGE.search(text)
    return m.group(1) if m and not m.group(1).startswith("<") else None


def os_error_line(exc: OSError, outputs: Outputs = ()) -> str | None:
    """``<what> <path>: <reason>. Fix: <fix>`` for an OSError the user can fix, else None."""
    code, raw = exc.errno, exc.filename
    if exc.filename2 is not None and code in (errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY):
        raw = exc.filename2  # a rename onto an output: the destination is in the way, not the temporary file
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not isinstance(raw, (str, os.PathLike)):
        raw = _path_in_message(str(exc))  # h5py and pyarrow put the file name in the message only
    path = Path(raw) if raw is not None else None
    reason = os.strerror(code) if code is not None else (exc.strerror or str(exc))
    option = _output_option(path, outputs) if path is not None else None
    other = f", or choose another {option}" if option else ""
    where = f" {path}" if path is not None else ""
    if code in (errno.EACCES, errno.EPERM):
        if path is None:
            return f"not permitted: {reason}. Fix: check the permissions of the files and folders involved{other}."
        target = _existing_ancestor(path)
        if option:
            return f"cannot write{where}: {reason}. Fix: check that you may write to {target} (ls -ld {target}){other}."
        return (
            f"cannot access{where}: {reason}. Fix: check the permissions of {target} (ls -ld {target}): "
            "the user running fiveflow must be allowed to read it."
        )
    if code == errno.EISDIR:
        if option:
            return f"cannot write{where}: {reason}. Fix: remove or rename that folder{other}."
        return f"cannot read{where}: {reason}. Fix: give the path of a file, not a folder."
    if code == errno.ENOTDIR:
        blocker = _file_in_the_way(path) if path is not None else None
        if blocker is None:
            return f"cannot use{where}: {reason}. Fix: give a folder where a folder is expected{other}."
        fix = f"remove or rename the file {blocker}{other}" if option else "correct the path"
        return f"cannot use{where}: {reason} ({blocker} is a file, not a folder). Fix: {fix}."
    if code in (errno.EEXIST, errno.ENOTEMPTY):
        kind = "a folder" if path is not None and path.is_dir() else "a file"
        return f"cannot create{where}: {reason} ({kind} of that name is in the way). Fix: remove or rename it{other}."
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        disk = f" (df -h {_existing_ancestor(path)})" if path is not None else " (df -h)"
        larger = f"{other} on a disk with room" if option else ""
        return f"cannot write{where}: {reason}. Fix: free space on that disk{disk}{larger}."
    if code == errno.EROFS:
        writable = f"{other} on a writable disk" if option else ", or write somewhere writable"
        return f"cannot write{where}: {reason}. Fix: remount it read-write{writable}."
    if code == errno.ENAMETOOLONG:
        return f"cannot use{where}: {reason}. Fix: use a shorter path or file name."
    if code == errno.ELOOP:
        return f"cannot use{where}: {reason}. Fix: check the symbolic links in that path."
    if code in (errno.EMFILE, errno.ENFILE):
        return f"cannot open{where}: {reason}. Fix: raise the open-file limit (ulimit -n 4096), then run it again."
    if code == errno.EIO:
        return (
            f"cannot read or write{where}: {reason}. Fix: check the disk or network file system (dmesg), "
            "then run the command again."
        )
    if code == errno.ENOENT and path is not None:
        return f"cannot find{where}: {reason}. Fix: check the path."
    if code is not None and path is not None:
        return f"cannot access{where}: {reason}. Fix: check the path and its file system{other}."
    return _library_input_line(exc)


#: messages of libraries that read a file the user gave and found it is not what it should be
_BAD_INPUT_PHRASES = (
    "file signature not found",  # h5py: not an HDF5 file
    "unable to open file",  # h5py
    "unable to synchronously open file",  # h5py
    "truncated file",  # h5py
    "cannot identify image file",  # PIL
    "image file is truncated",  # PIL
    "parquet magic bytes not found",  # pyarrow
    "could not open parquet input source",  # pyarrow
)


def _library_input_line(exc: BaseException) -> str | None:
    text = str(exc)
    if any(p in text.lower() for p in _BAD_INPUT_PHRASES):
        return (
            f"an input file is not readable ({type(exc).__name__}: {text}). Fix: check that each input file is "
            "the kind the command expects and was written completely; make it again if not."
        )
    return None


def is_bad_input(exc: BaseException) -> bool:
    """True for a library's complaint that a file it read is not in its format (or truncated)."""
    try:
        import pyarrow as pa

        if isinstance(exc, (pa.ArrowInvalid, pa.ArrowIOError)) and not isinstance(exc, PermissionError):
            return True
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if isinstance(exc, OSError) and exc.errno is None:  # h5py, PIL: no OS error number
        return _library_input_line(exc) is not None
    return False


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Re-raise a library's "not in my format" error while reading ``path`` as :class:`InputFileError`
    naming the file; operating-system errors (permissions, ...) pass through for :func:`user_error_line`."""
    try:
        yield
    except Exception as exc:
        if is_bad_input(exc):
            raise InputFileError(
                f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc).rstrip('.')}). Fix: {fix.rstrip('.')}."
            ) from exc
        raise


def user_error_line(exc: BaseException, outputs: Outputs = ()) -> str | None:
    """The one line to show for an error the user can fix; None for anything else (a bug: show the traceback)."""
    if isinstance(exc, OSError) and (exc.errno is not None or exc.filename is not None):
        return os_error_line(exc, outputs)
    if isinstance(exc, (ValueError, RuntimeError, FileNotFoundError)):
        # fiveflow's own errors name the problem and the fix; one that lists several problems (a config with
        # several bad keys) or quotes a library's multi-line text is shown on one line, its lines joined
        return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if isinstance(exc, OSError):
        return _library_input_line(exc)
    return None
