"""The HTTP transfer shared by the GDC downloader (:mod:`.gdc`) and the URL downloader (:mod:`.fetch`).

:func:`_fetch` streams a URL into a hidden ``.NAME.partial`` next to its destination, resuming an
interrupted transfer from the partial's length with ``Range: bytes=N-`` (a server that ignores the
range, answering 200, restarts from byte 0) and retrying network errors and 408/429/5xx with
exponential backoff. It only fills the partial: the callers verify it (size, md5 or another checksum)
and rename a verified file onto its final name. :func:`_exclusive` keeps a second process off the
same destination with a ``flock``-ed ``.NAME.lock``. The partial and the lock are opened through
:func:`fiveflow.fileio.open_output`, so a symbolic link planted at their names is refused, never
written through.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from ..fileio import check_plain_target, open_output

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_PROGRESS_MIN_BYTES = 64 << 20

log = logging.getLogger("fiveflow.download")
_sleep = time.sleep  # tests replace it (or the callers' own ``_sleep``) to record the backoff without waiting


class DownloadError(RuntimeError):
    """A file could not be downloaded or verified; the message names the file and the fix."""


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


@dataclass
class DownloadResult:
    file_id: str  # the GDC file id, or the URL
    filename: str
    status: str  # downloaded | skipped | failed
    bytes_fetched: int = 0
    resumed_from: int = 0
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""


def partial_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def stamp_path(dest: Path, kind: str = "md5ok") -> Path:
    """The hidden ``.NAME.KIND`` stamp saying ``dest`` was verified (``md5ok``: GDC; ``ok``: URL downloads)."""
    return dest.parent / f".{dest.name}.{kind}"


@contextlib.contextmanager
def _exclusive(dest: Path, label: str) -> Iterator[None]:
    """One writer per destination: a second process downloading the same file fails at once."""
    lock = dest.parent / f".{dest.name}.lock"
    fh = open_output(lock, "a")  # never through a planted link (it would create or touch a file elsewhere)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"{label}: another process is downloading {dest} (lock {lock}); wait for it or stop it"
            ) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # still holding it: the next writer creates a fresh one
    finally:
        fh.close()


def keep_verified(dest: Path, label: str, verified: Callable[[], bool], stamp: Path, what: str) -> bool:
    """True when ``dest`` is present and ``verified()`` (skip the download); a present ``dest`` that fails the
    check is removed with its ``stamp`` (and a warning naming ``what`` was wrong), so it is downloaded again."""
    if not dest.exists():
        return False
    if verified():
        log.info("%s: already present and verified: skipped", label)
        return True
    log.warning("%s: %s exists but its %s is wrong: downloading it again", label, dest, what)
    dest.unlink()
    stamp.unlink(missing_ok=True)
    return False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_total(r: requests.Response) -> int | None:
    """The full file length the server announced (206: Content-Range ``/total``; 200: Content-Length)."""
    try:
        if r.status_code == 206:
            return int(r.headers.get("Content-Range", "").rsplit("/", 1)[1])
        return int(r.headers["Content-Length"])
    except (IndexError, KeyError, ValueError):
        return None


def _progress(total: int | None, initial: int, name: str, show: bool | None):
    if show is None:
        show = (total or 0) >= _PROGRESS_MIN_BYTES and sys.stderr.isatty()
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name[:40],
        disable=not show,
        leave=False,
    )


def _give_up(label: str, partial: Path, failures: int, error: str) -> DownloadError:
    return DownloadError(
        f"{label}: giving up after {failures} failed attempts in a row ({error}); rerun to "
        f"resume from the partial file {partial}"
    )


def _fetch(
    session: requests.Session,
    url: str,
    headers: dict,
    partial: Path,
    size: int | None,
    label: str,
    *,
    retries: int,
    backoff: float,
    max_backoff: float,
    timeout: float,
    chunk_size: int,
    fail_status: Callable[[int], DownloadError],
    show_progress: bool | None,
    name: str,
    give_up: Callable[[int, str], DownloadError] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> tuple[int, int, int]:
    """Stream ``url`` into ``partial`` until it holds the whole file; the caller verifies it.

    The file is complete when the partial holds ``size`` bytes or, with ``size=None`` (length unknown),
    the total the server announced (206 ``Content-Range`` total, 200 ``Content-Length``), or, when it
    announced none, when the stream ended without error. Returns (bytes fetched, offset resumed from,
    requests made). Network errors and 408/429/5xx are retried with exponential backoff
    (``Retry-After`` honoured); ``retries`` counts consecutive failed attempts, so a long transfer that
    keeps making progress is not given up. Other statuses >= 400 raise ``fail_status(code)`` at once;
    running out of retries raises ``give_up(failures, "Type: error")`` (default: "giving up ... rerun
    to resume"). ``sleep`` (default :data:`_sleep`, read at call time) waits between attempts.
    """
    sleep = sleep or _sleep
    fetched = requests_made = failures = 0
    resumed_from = partial.stat().st_size if partial.exists() else 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have > size:
            log.warning("%s: partial file is larger than expected (%d > %d bytes): starting over", label, have, size)
            partial.unlink()
            have = 0
        if size is not None and have == size and size > 0:
            return fetched, resumed_from, requests_made
        before = have
        req_headers = dict(headers)
        if have:
            req_headers["Range"] = f"bytes={have}-"
            log.info("%s: resuming at byte %d of %s", label, have, size if size is not None else "(unknown)")
        try:
            requests_made += 1
            with session.get(url, headers=req_headers, stream=True, timeout=timeout) as r:
                if r.status_code == 416 and have:
                    return fetched, resumed_from, requests_made  # nothing left to send: verify what we have
                if r.status_code in RETRY_STATUS:
                    raise _Retryable(f"HTTP {r.status_code}", _retry_after(r.headers.get("Retry-After")))
                if r.status_code >= 400:
                    raise fail_status(r.status_code)
                if r.status_code == 206 and have:
                    start = r.headers.get("Content-Range", "").replace("bytes", "").strip().split("-")[0]
                    if start != str(have):
                        partial.unlink(missing_ok=True)
                        raise _Retryable(
                            f"server answered range {r.headers.get('Content-Range')!r} to bytes={have}-: starting over"
                        )
                    mode = "ab"
                else:  # 200: the whole file (a server that ignores Range restarts from byte 0)
                    if have:
                        log.info("%s: the server ignored the range request: restarting from byte 0", label)
                    have, mode = 0, "wb"
                total = _server_total(r)
                with (
                    open_output(partial, mode) as fh,
                    _progress(size if size is not None else total, have, name, show_progress) as bar,
                ):
                    for chunk in r.iter_content(chunk_size):
                        fh.write(chunk)
                        fetched += len(chunk)
                        bar.update(len(chunk))
                    fh.flush()
                    os.fsync(fh.fileno())
            got = partial.stat().st_size if partial.exists() else 0
            want = size if size is not None else total
            if want is None or got >= want or got == total:
                return fetched, resumed_from, requests_made  # complete, or all the server has: verify
            raise _Retryable(f"connection ended after {got} of {want} bytes")
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            _Retryable,
        ) as exc:
            grew = partial.exists() and partial.stat().st_size > before
            failures = 1 if grew else failures + 1  # progress resets the count of consecutive failures
            if failures > retries:
                error = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
                raise (give_up or (lambda n, e: _give_up(label, partial, n, e)))(failures, error) from None
            wait = min(max_backoff, backoff * 2 ** (failures - 1))
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                wait = min(max_backoff, max(wait, exc.retry_after))
            log.warning("%s: %s; retry %d/%d in %.1f s", label, exc, failures, retries, wait)
            sleep(wait)


def fetch_verified(
    session: requests.Session,
    url: str,
    headers: dict,
    partial: Path,
    dest: Path,
    size: int | None,
    label: str,
    *,
    check: Callable[[Path], str | None],
    on_verified: Callable[[Path], None],
    verified_as: str,
    mismatch: Callable[[str], DownloadError],
    **fetch_kw,
) -> tuple[int, int, int]:
    """:func:`_fetch` ``url`` into ``partial``, then ``check(partial)`` (None: verified; else what is wrong).

    A verified partial is renamed onto ``dest`` and ``on_verified(dest)`` stamps it; a bad one is deleted and
    downloaded once more from scratch; a second bad one raises ``mismatch(problem)``. ``verified_as`` names
    the check in the log (e.g. "md5 ..."). Returns (bytes fetched, offset the first round resumed from,
    requests made); ``fetch_kw`` go to :func:`_fetch`.
    """
    total_fetched = total_requests = resumed_from = 0
    for round_ in (1, 2):
        fetched, resumed, n = _fetch(session, url, headers, partial, size, label, **fetch_kw)
        total_fetched += fetched
        total_requests += n
        if round_ == 1:
            resumed_from = resumed
        problem = check(partial)
        if problem is None:
            got_size = partial.stat().st_size
            check_plain_target(partial)  # still the file written above, not a link swapped in
            os.replace(partial, dest)
            on_verified(dest)
            log.info(
                "%s: %d bytes verified (%s)%s",
                label,
                got_size,
                verified_as,
                f", resumed at byte {resumed_from}" if resumed_from else "",
            )
            return total_fetched, resumed_from, total_requests
        partial.unlink(missing_ok=True)
        if round_ == 1:
            log.warning("%s: verification failed (%s): downloading once more from scratch", label, problem)
    raise mismatch(problem)
