"""Small I/O helpers shared by every stage: atomic writes and safe identifiers."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_id(raw: str) -> str:
    """Turn a file name stem or manifest id into a safe slide/patient id.

    Anything outside ``[A-Za-z0-9._-]`` becomes ``_``; leading dots are stripped so an id
    can never be ``.``/``..`` or hidden, and so it can never escape its output folder.
    """
    s = _SAFE_ID.sub("_", str(raw)).lstrip(".")
    if not s:
        raise ValueError(f"cannot derive a usable id from {raw!r}: rename the file")
    return s


def slide_id_from_path(path: str | os.PathLike) -> str:
    """Slide id = file name without its (last) extension, sanitised."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return sanitize_id(name[: -len(ext)])
    return sanitize_id(Path(name).stem)


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


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete temporary files that killed writers of ``dest`` left behind (this host, process gone)."""
    host = socket.gethostname()
    removed = []
    for p in dest.parent.glob(f".{glob.escape(dest.name)}.*"):
        rest = p.name[len(dest.name) + 2:]
        pid = rest[len(host) + 1:].split(".")[0] if rest.startswith(host + ".") else ""
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    A crash or kill mid-write leaves at most a ``.tmp`` file, never a truncated ``dest``; the next
    write of ``dest`` removes such leftovers.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    # host and pid in the name let a later writer recognise temporaries whose writer was killed
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{socket.gethostname()}.{os.getpid()}.",
                               suffix=suffix or (dest.suffix + ".tmp"), dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
