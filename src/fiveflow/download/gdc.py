"""Download files from the GDC data API: resumable (HTTP Range), verified (size + md5), retried, atomic.

A file is streamed into a hidden ``.NAME.partial`` next to its destination (the transfer, shared with
the URL downloader :mod:`.fetch`, is :func:`fiveflow.download.http._fetch`). An interrupted transfer
(connection cut, job killed) resumes from the partial's length with ``Range: bytes=N-``; a server that
ignores the range (200) restarts from byte 0. When the transfer ends, size then md5 are checked and only
a verified file is renamed onto its final name, so the final name never holds a partial or corrupt file.
A mismatch deletes the partial and downloads once more from scratch; a second mismatch is an error
naming the file. A verified file leaves a small ``.NAME.md5ok`` stamp so reruns skip it without rehashing,
and a ``.NAME.lock`` (held with ``flock``) keeps a second process off the same file meanwhile.

These hidden files are opened through :mod:`fiveflow.fileio` (:func:`~fiveflow.fileio.open_output`,
:func:`~fiveflow.fileio.atomic_write_text`): a symbolic link (or a directory, a pipe) at one of their names
is refused with a :class:`DownloadError` naming it and the fix (remove the link), never written
through, so a link planted in the slide folder cannot overwrite or create a file elsewhere. File ids
must be UUIDs (:func:`~fiveflow.download.manifest.is_gdc_file_id`) and are URL-escaped, so an id can
only ever address ``{base_url}/{uuid}``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import requests

from ..fileio import UnsafePathError, atomic_write_text, check_plain_target, file_digest
from .http import (  # noqa: F401
    RETRY_STATUS,
    DownloadError,
    DownloadResult,
    _exclusive,
    _fetch,
    _progress,
    _retry_after,
    _server_total,
    fetch_verified,
    keep_verified,
    partial_path,
    stamp_path,
)
from .manifest import GDC_ID_HINT, ManifestRow, is_gdc_file_id, read_manifest

GDC_DATA_URL = "https://api.gdc.cancer.gov/data"
TOKEN_HEADER = "X-Auth-Token"
SUMMARY_NAME = "gdc_download_summary.tsv"

log = logging.getLogger("fiveflow.download")
_sleep = time.sleep  # tests replace it to record the backoff without waiting (passed to _fetch at call time)


def file_md5(path: str | os.PathLike) -> str:
    return file_digest(path, "md5")


def _stamp_ok(dest: Path, md5: str, size: int) -> bool:
    """``dest`` has the right size and md5; the md5 is computed once, then cached in a stamp (size, mtime)."""
    try:
        st = dest.stat()
    except FileNotFoundError:
        return False
    if st.st_size != size:
        return False
    want = {"md5": md5.lower(), "size": size, "mtime_ns": st.st_mtime_ns}
    try:
        if json.loads(stamp_path(dest).read_text()) == want:
            return True
    except (OSError, ValueError):
        pass
    if file_md5(dest) != md5.lower():
        return False
    _write_stamp(dest, md5, size)
    return True


def _write_stamp(dest: Path, md5: str, size: int) -> None:
    st = dest.stat()
    atomic_write_text(stamp_path(dest), json.dumps({"md5": md5.lower(), "size": size, "mtime_ns": st.st_mtime_ns}))


def _fail_status(code: int, label: str, token_env: str, have_token: bool) -> DownloadError:
    if code == 404:
        return DownloadError(
            f"{label}: not found on the GDC (HTTP 404): check the id in the manifest (the file may "
            "have been removed or superseded; export a fresh manifest from the GDC portal)"
        )
    if code in (401, 403):
        fix = (
            (
                f"the token in ${token_env} was refused: it may have expired (tokens last 30 days); download a new "
                "one from the GDC portal (Username > Download Token)"
            )
            if have_token
            else (
                f"the file is controlled-access: set ${token_env} to a GDC token (GDC portal: Username > Download "
                "Token; needs dbGaP authorisation)"
            )
        )
        return DownloadError(f"{label}: access denied (HTTP {code}): {fix}")
    return DownloadError(f"{label}: HTTP {code} from the GDC data endpoint")


def download_file(
    file_id: str,
    dest: str | os.PathLike,
    md5: str,
    size: int,
    *,
    base_url: str = GDC_DATA_URL,
    token_env: str = "GDC_TOKEN",
    retries: int = 5,
    backoff: float = 2.0,
    max_backoff: float = 120.0,
    timeout: float = 60.0,
    session: requests.Session | None = None,
    chunk_size: int = 1 << 20,
    progress: bool | None = None,
    filename: str | None = None,
) -> DownloadResult:
    """Download GDC file ``file_id`` to ``dest``, verified against ``md5`` and ``size``.

    Skips a ``dest`` that is already verified; resumes a partial; re-downloads once on a size/md5
    mismatch, then raises :class:`DownloadError` naming the file. 404/401/403 fail at once. The token,
    when ``$token_env`` is set, goes only into the ``X-Auth-Token`` header (never into logs or errors).
    ``file_id`` must be a UUID (anything else raises :class:`DownloadError` before any request); a
    symbolic link at the hidden ``.NAME.partial``/``.NAME.lock`` or a directory at ``dest`` raises
    :class:`DownloadError` naming the path and the fix.
    """
    dest = Path(dest)
    name = filename or dest.name
    if not is_gdc_file_id(file_id):
        raise DownloadError(
            f"GDC file {file_id!r} ({name}): not a GDC file id; {GDC_ID_HINT}. Fix: use the id "
            "column of a manifest exported from the GDC portal"
        )
    label = f"GDC file {file_id} ({name})"
    try:
        return _download(
            file_id,
            dest,
            md5,
            size,
            label,
            name,
            base_url=base_url,
            token_env=token_env,
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
    file_id: str,
    dest: Path,
    md5: str,
    size: int,
    label: str,
    name: str,
    *,
    base_url: str,
    token_env: str,
    retries: int,
    backoff: float,
    max_backoff: float,
    timeout: float,
    session: requests.Session | None,
    chunk_size: int,
    progress: bool | None,
) -> DownloadResult:
    md5 = md5.lower()
    size = int(size)
    t0 = time.perf_counter()
    if dest.is_dir():
        raise DownloadError(
            f"{label}: {dest} is a directory, where the file is to be saved. Fix: move or remove that directory"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest, label):
        check_plain_target(partial_path(dest))  # before anything reads its size or appends to it
        if keep_verified(dest, label, lambda: _stamp_ok(dest, md5, size), stamp_path(dest), "size or md5"):
            return DownloadResult(file_id, name, "skipped", seconds=time.perf_counter() - t0)
        headers = {"Accept-Encoding": "identity"}  # byte ranges of the stored file, not of a compressed stream
        token = os.environ.get(token_env, "").strip() if token_env else ""
        if token:
            headers[TOKEN_HEADER] = token
        url = f"{base_url.rstrip('/')}/{quote(file_id, safe='')}"
        partial = partial_path(dest)
        have_token = TOKEN_HEADER in headers

        def fail_status(code: int) -> DownloadError:
            return _fail_status(code, label, token_env, have_token)

        def check(part: Path) -> str | None:
            got_size = part.stat().st_size if part.exists() else 0
            got_md5 = file_md5(part) if got_size == size else "(not computed: wrong size)"
            if got_size == size and got_md5 == md5:
                return None
            return f"expected {size} bytes, md5 {md5}; got {got_size} bytes, md5 {got_md5}"

        def mismatch(problem: str) -> DownloadError:
            return DownloadError(
                f"{label}: verification failed twice ({problem}); the file on the server does not "
                "match the manifest: export a fresh manifest from the GDC portal, or report the file "
                "to the GDC help desk"
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
                on_verified=lambda d: _write_stamp(d, md5, size),
                verified_as=f"md5 {md5}",
                mismatch=mismatch,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                chunk_size=chunk_size,
                fail_status=fail_status,
                show_progress=progress,
                name=name,
                sleep=_sleep,
            )
            return DownloadResult(file_id, name, "downloaded", fetched, resumed_from, n, time.perf_counter() - t0)
        finally:
            if own:
                sess.close()


def download_manifest(
    manifest: str | os.PathLike | Iterable[ManifestRow],
    out_dir: str | os.PathLike,
    jobs: int = 4,
    summary: str | os.PathLike | None = "",
    **kwargs,
):
    """Download every file of a GDC manifest into ``out_dir`` with at most ``jobs`` transfers at a time.

    A failing file is recorded (status ``failed`` and its error) and does not stop or touch the others.
    Returns the per-file table (pandas DataFrame) and writes it as a TSV to ``summary`` (default
    ``out_dir/gdc_download_summary.tsv``; ``None``: no file). ``kwargs`` go to :func:`download_file`.
    """
    import pandas as pd

    from ..fileio import atomic_path

    rows = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
    if int(jobs) < 1:
        raise ValueError(f"jobs must be at least 1 (got {jobs})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def one(row: ManifestRow) -> DownloadResult:
        t0 = time.perf_counter()
        try:
            return download_file(row.id, out / row.filename, row.md5, row.size, **kwargs)
        except Exception as exc:  # one bad file must not stop the others
            log.error("%s", exc)
            return DownloadResult(row.id, row.filename, "failed", seconds=time.perf_counter() - t0, error=str(exc))

    with ThreadPoolExecutor(max_workers=int(jobs), thread_name_prefix="gdc") as pool:
        results = list(pool.map(one, rows))
    table = pd.DataFrame([asdict(r) for r in results])
    if summary is not None:
        dest = Path(summary) if summary else out / SUMMARY_NAME
        with atomic_path(dest) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    counts = table["status"].value_counts().to_dict()
    log.info("GDC download: %d files -> %s (%s)", len(table), out, ", ".join(f"{v} {k}" for k, v in counts.items()))
    return table
