"""Download one file from an http(s) URL: resumable (HTTP Range), checksum-pinned, retried, atomic.

The transfer is the GDC downloader's (:func:`fiveflow.download.http._fetch`): the file is streamed
into a hidden ``.NAME.partial`` next to its destination, an interrupted transfer resumes from the
partial's length, and network errors and 408/429/5xx are retried with backoff. The size may be
unknown (``size=None``): the transfer then ends with the length the server announced, or with the
stream. The complete partial is checked against a pinned checksum (:func:`parse_checksum`:
``sha256:``, ``md5:`` or ``gitsha1:``, the git blob hash ``git hash-object FILE`` prints) and only a
verified file is renamed onto its final name. A mismatch deletes the partial and downloads once
more from scratch; a second mismatch is an error naming the file, the URL, both checksums and the
fix. A verified file leaves a ``.NAME.ok`` stamp (checksum, size, mtime) so reruns skip it without
rehashing; a ``.NAME.lock`` keeps a second process off the same file. As for GDC downloads, a
symbolic link at the partial or the lock, or a directory at the destination, is refused with a
:class:`DownloadError` naming it. Every error is one line; when the file cannot be fetched it says
how to supply it by hand (plus the caller's ``hint``, e.g. a config key that takes a local copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ..fileio import UnsafePathError, atomic_write_text, check_plain_target, file_digest
from .http import DownloadError, DownloadResult, _exclusive, fetch_verified, keep_verified, partial_path, stamp_path

log = logging.getLogger("fiveflow.download")
_sleep = time.sleep  # tests replace it to record the backoff without waiting (passed to _fetch at call time)

_HEX_DIGITS = {"sha256": 64, "md5": 32, "gitsha1": 40}
CHECKSUM_FORMS = (
    "sha256:<64 hex digits>, md5:<32 hex digits> or gitsha1:<40 hex digits> (the git blob "
    "hash that `git hash-object FILE` prints)"
)


@dataclass(frozen=True)
class Checksum:
    """A pinned checksum: ``algo`` (sha256, md5 or gitsha1) and its lower-case hex digest."""

    algo: str
    hex: str

    def of_file(self, path: str | os.PathLike) -> str:
        """This checksum's algorithm over the file at ``path`` (lower-case hex), read in 1 MiB blocks."""
        if self.algo != "gitsha1":
            return file_digest(path, self.algo)
        h = hashlib.sha1()
        with open(path, "rb") as fh:
            h.update(b"blob %d\0" % os.fstat(fh.fileno()).st_size)  # git's blob header, then the content
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"


def parse_checksum(text: str) -> Checksum:
    """``"sha256:<hex>"``, ``"md5:<hex>"`` or ``"gitsha1:<hex>"`` (hex in either case) as a :class:`Checksum`.

    Anything else raises ``ValueError`` naming the text and listing the accepted forms.
    """
    algo, _, digest = str(text).strip().partition(":")
    algo, digest = algo.lower(), digest.lower()
    n = _HEX_DIGITS.get(algo)
    if not isinstance(text, str) or n is None or not re.fullmatch(f"[0-9a-f]{{{n}}}", digest):
        raise ValueError(f"checksum {text!r} is not one of {CHECKSUM_FORMS}")
    return Checksum(algo, digest)


def _verified(dest: Path, checksum: Checksum, size: int | None) -> bool:
    """``dest`` has the right size and checksum; the checksum is computed once, then cached in a stamp."""
    try:
        st = dest.stat()
    except FileNotFoundError:
        return False
    if size is not None and st.st_size != size:
        return False
    want = {"checksum": str(checksum), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        if json.loads(stamp_path(dest, "ok").read_text()) == want:
            return True
    except (OSError, ValueError):
        pass
    if checksum.of_file(dest) != checksum.hex:
        return False
    _write_stamp(dest, checksum)
    return True


def _write_stamp(dest: Path, checksum: Checksum) -> None:
    st = dest.stat()
    atomic_write_text(
        stamp_path(dest, "ok"), json.dumps({"checksum": str(checksum), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )


def _with_hint(text: str, hint: str | None) -> str:
    """``text`` then the caller's ``hint`` on the same line ("..., or set X" / "... (config X)" / "... Hint.")."""
    hint = " ".join((hint or "").split())
    if not hint:
        return text
    return f"{text}, {hint}" if hint[0].islower() else f"{text} {hint}" if hint[0] == "(" else f"{text}. {hint}"


def fetch_url(
    url: str,
    dest: str | os.PathLike,
    checksum: str | Checksum,
    *,
    size: int | None = None,
    name: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    max_backoff: float = 120.0,
    timeout: float = 60.0,
    session: requests.Session | None = None,
    chunk_size: int = 1 << 18,
    progress: bool | None = None,
    hint: str | None = None,
) -> DownloadResult:
    """Download ``url`` to ``dest``, verified against ``checksum`` (and ``size`` when given).

    Skips a ``dest`` that is already verified; resumes a partial; re-downloads once on a mismatch, then
    raises :class:`DownloadError` naming the file, the URL and both checksums. 404/401/403 fail at once;
    network errors are retried, and running out of retries keeps the partial (a rerun resumes from it).
    Every error is one line, ending, when the file could not be fetched, with how to supply it by hand
    and then ``hint`` (a caller's sentence, e.g. "or set cohort.reports to a local copy"). Only http and
    https URLs are fetched (anything else raises :class:`DownloadError` before any request); a bad
    ``checksum`` text raises ``ValueError`` (:func:`parse_checksum`). ``name`` labels the file in
    messages (default: the name of ``dest``); the result's ``file_id`` is the URL. A cut connection
    loses at most the ``chunk_size`` bytes being read (256 KiB), the rest is kept for the resume.
    """
    dest = Path(dest)
    name = name or dest.name
    if not isinstance(checksum, Checksum):
        try:
            checksum = parse_checksum(checksum)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DownloadError(
            _with_hint(
                f"{name}: {url!r} is not an http:// or https:// URL, so it is not "
                f"downloaded. Fix: give its http(s) URL, or save the file (checksum "
                f"{checksum}) as {dest} yourself",
                hint,
            )
        )
    label = f"{name} from {url}"
    try:
        return _download(
            url,
            dest,
            checksum,
            size,
            label,
            name,
            hint=hint,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            session=session,
            chunk_size=chunk_size,
            progress=progress,
        )
    except UnsafePathError as exc:
        raise DownloadError(f"{label}: {exc}") from None


def _download(
    url: str,
    dest: Path,
    checksum: Checksum,
    size: int | None,
    label: str,
    name: str,
    *,
    hint: str | None,
    retries: int,
    backoff: float,
    max_backoff: float,
    timeout: float,
    session: requests.Session | None,
    chunk_size: int,
    progress: bool | None,
) -> DownloadResult:
    size = None if size is None else int(size)
    t0 = time.perf_counter()
    fix = _with_hint(
        f"Fix: download {url} by hand (e.g. on a machine with internet), check its checksum "
        f"{checksum}, and save it as {dest}",
        hint,
    )
    if dest.is_dir():
        raise DownloadError(
            f"{label}: {dest} is a directory, where the file is to be saved. Fix: move or remove that directory"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)

    def fail_status(code: int) -> DownloadError:
        what = (
            "not found at the URL (HTTP 404): the file may have moved or been removed"
            if code == 404
            else f"access denied (HTTP {code}): the server refuses the file"
            if code in (401, 403)
            else f"HTTP {code} from the server"
        )
        return DownloadError(f"{label}: {what}. {fix}")

    def give_up(failures: int, error: str) -> DownloadError:
        have = partial.stat().st_size if partial.exists() else 0
        kept = f"a rerun resumes from the {have} bytes kept in {partial}" if have else "nothing was received"
        return DownloadError(f"{label}: giving up after {failures} failed attempts in a row ({error}); {kept}. {fix}")

    with _exclusive(dest, label):
        check_plain_target(partial)  # before anything reads its size or appends to it
        if keep_verified(
            dest, label, lambda: _verified(dest, checksum, size), stamp_path(dest, "ok"), "size or checksum"
        ):
            return DownloadResult(url, name, "skipped", seconds=time.perf_counter() - t0)
        headers = {"Accept-Encoding": "identity"}  # byte ranges of the stored file, not of a compressed stream
        actual: dict = {}

        def check(part: Path) -> str | None:
            got_size = part.stat().st_size if part.exists() else 0
            got = checksum.of_file(part) if part.exists() else "(nothing received)"
            actual.update(got=got, size=got_size)
            if got == checksum.hex and (size is None or got_size == size):
                return None
            expected = f"{checksum}" + (f", {size} bytes" if size is not None else "")
            return f"expected {expected}; got {checksum.algo}:{got}, {got_size} bytes"

        def mismatch(problem: str) -> DownloadError:
            got = actual["got"]
            pin = (
                f"pin {checksum.algo}:{got} in the config instead of {checksum}"
                if got != checksum.hex
                else f"the checksum matches but the size does not: correct the size to {actual['size']} (or drop it)"
            )
            return DownloadError(
                _with_hint(
                    f"{label}: verification failed twice ({problem}): the file at the URL changed or is corrupt. Fix: "
                    f"download it by hand and compare its checksum, or, if you trust the new file, {pin}",
                    hint,
                )
            )

        own = session is None
        sess = requests.Session() if own else session
        try:
            fetched, resumed_from, n = fetch_verified(
                sess,
                url,
                headers,
                partial,
                dest,
                size,
                label,
                check=check,
                on_verified=lambda d: _write_stamp(d, checksum),
                verified_as=str(checksum),
                mismatch=mismatch,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                chunk_size=chunk_size,
                fail_status=fail_status,
                give_up=give_up,
                show_progress=progress,
                name=name,
                sleep=_sleep,
            )
            return DownloadResult(url, name, "downloaded", fetched, resumed_from, n, time.perf_counter() - t0)
        finally:
            if own:
                sess.close()
