"""GDC downloads against a local HTTP server the tests start (no real network)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, shared_path
from fiveflow.download import DownloadError, ManifestRow, download_file, download_manifest, gdc, read_manifest


def gid(name: str) -> str:
    """A stable GDC-style file id (a UUID) for a test file name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


CHUNK = 8192  # client chunk size; cuts fall on chunk boundaries so the resume offset is exact
K = 12 * CHUNK


class FakeGDC:
    """``/data/{id}`` with Range support, and per-file misbehaviour:

    cut: send only this many body bytes once, then drop the connection; corrupt: serve a flipped byte this many
    times; status: queue of error codes answered before the file; ignore_range: always answer 200 with the whole
    file; retry_after: Retry-After header sent with error codes; delay: seconds to sleep per 16 KiB chunk.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.rules: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with fake.lock:
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                    fake.requests.append((self.path, dict(self.headers)))
                try:
                    fake.serve(self)
                finally:
                    with fake.lock:
                        fake.active -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add(self, name: str, data: bytes, **rules) -> ManifestRow:
        """Serve ``data`` as ``NAME.svs`` under the file id ``gid(NAME)``."""
        file_id = gid(name)
        self.files[file_id] = data
        self.rules[file_id] = rules
        return ManifestRow(file_id, f"{name}.svs", hashlib.md5(data).hexdigest(), len(data), "released")

    def gets(self, name: str) -> list[dict]:
        return [h for p, h in self.requests if p == f"/data/{gid(name)}"]

    def serve(self, h: BaseHTTPRequestHandler):
        file_id = h.path.rsplit("/", 1)[-1]
        rules = self.rules.get(file_id, {})
        if file_id not in self.files:
            h.send_error(404)
            return
        if rules.get("status"):
            h.send_response(rules["status"].pop(0))
            if "retry_after" in rules:
                h.send_header("Retry-After", rules["retry_after"])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if rules.get("token") and h.headers.get("X-Auth-Token") != rules["token"]:
            h.send_error(403)
            return
        data = self.files[file_id]
        if rules.get("corrupt", 0) > 0:
            rules["corrupt"] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = h.headers.get("Range")
        if rng and not rules.get("ignore_range"):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        limit = rules.pop("cut", None)
        if limit is not None:
            body = body[:limit]
        for i in range(0, len(body), 16384):
            if rules.get("delay"):
                time.sleep(rules["delay"])
            h.wfile.write(body[i : i + 16384])
        h.wfile.flush()
        if limit is not None:
            h.close_connection = True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    srv = FakeGDC()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(gdc, "_sleep", waits.append)
    monkeypatch.delenv("GDC_TOKEN", raising=False)
    return waits


def payload(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def get(fake, row, dest, **kw):
    kw.setdefault("base_url", fake.url)
    kw.setdefault("retries", 3)
    kw.setdefault("backoff", 0.5)
    kw.setdefault("timeout", 10)
    return download_file(row.id, dest, row.md5, row.size, chunk_size=CHUNK, **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".md5ok"))


def test_interrupted_transfer_resumes_with_range(fake, tmp_path):
    data = payload(300_000)
    row = fake.add("f-cut", data, cut=K)
    res = get(fake, row, tmp_path / row.filename)
    assert res.status == "downloaded" and res.attempts == 2
    first, second = fake.gets("f-cut")
    assert "Range" not in first and second["Range"] == f"bytes={K}-"
    assert (tmp_path / row.filename).read_bytes() == data
    assert leftovers(tmp_path) == []


def test_failed_run_leaves_only_a_partial_and_the_rerun_resumes(fake, tmp_path):
    data = payload(200_000, seed=1)
    row = fake.add("f-resume", data, cut=6 * CHUNK)
    dest = tmp_path / row.filename
    with pytest.raises(DownloadError, match="f-resume.*rerun to resume"):
        get(fake, row, dest, retries=0)
    assert not dest.exists()
    assert leftovers(tmp_path) == [f".{row.filename}.partial"]
    assert (tmp_path / f".{row.filename}.partial").stat().st_size == 6 * CHUNK
    res = get(fake, row, dest)
    assert res.status == "downloaded" and res.resumed_from == 6 * CHUNK and res.bytes_fetched == 200_000 - 6 * CHUNK
    assert fake.gets("f-resume")[-1]["Range"] == f"bytes={6 * CHUNK}-"
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_from_zero(fake, tmp_path):
    data = payload(120_000, seed=2)
    row = fake.add("f-norange", data, cut=5 * CHUNK, ignore_range=True)
    res = get(fake, row, tmp_path / row.filename)
    assert fake.gets("f-norange")[1]["Range"] == f"bytes={5 * CHUNK}-"  # asked to resume, got the whole file
    assert res.status == "downloaded" and (tmp_path / row.filename).read_bytes() == data


def test_md5_mismatch_redownloads_once_then_names_the_file(fake, tmp_path):
    data = payload(50_000, seed=3)
    row = fake.add("f-bad", data, corrupt=99)
    dest = tmp_path / row.filename
    with pytest.raises(DownloadError) as err:
        get(fake, row, dest)
    msg = str(err.value)
    assert "f-bad" in msg and row.filename in msg and row.md5 in msg
    assert hashlib.md5(bytes([data[0] ^ 0xFF]) + data[1:]).hexdigest() in msg
    assert len(fake.gets("f-bad")) == 2  # the first download and exactly one retry from scratch
    assert not dest.exists() and leftovers(tmp_path) == []


def test_md5_mismatch_once_is_repaired(fake, tmp_path):
    data = payload(50_000, seed=4)
    row = fake.add("f-flaky", data, corrupt=1)
    res = get(fake, row, tmp_path / row.filename)
    assert res.status == "downloaded" and (tmp_path / row.filename).read_bytes() == data
    assert "Range" not in fake.gets("f-flaky")[1]  # from scratch


def test_404_names_the_file_and_is_not_retried(fake, tmp_path, no_wait):
    row = ManifestRow(gid("no-such-id"), "TCGA-XX-0000-01Z-00-DX1.svs", "0" * 32, 10)
    dest = tmp_path / row.filename
    with pytest.raises(DownloadError, match=rf"{row.id} \(TCGA-XX-0000-01Z-00-DX1.svs\).*404"):
        get(fake, row, dest)
    assert len(fake.gets("no-such-id")) == 1 and no_wait == []
    assert not dest.exists() and leftovers(tmp_path) == []


def test_503_is_retried_with_backoff_and_retry_after(fake, tmp_path, no_wait):
    data = payload(30_000, seed=5)
    row = fake.add("f-busy", data, status=[503, 429, 503], retry_after="7")
    res = get(fake, row, tmp_path / row.filename, backoff=0.5)
    assert res.status == "downloaded" and res.attempts == 4
    assert no_wait == [7, 7, 7]  # Retry-After beats the 0.5, 1, 2 s backoff
    row2 = fake.add("f-down", data, status=[500] * 10)
    with pytest.raises(DownloadError, match="f-down.*3 failed attempts"):
        get(fake, row2, tmp_path / row2.filename, retries=2, backoff=0.5)
    assert no_wait[3:] == [0.5, 1.0]  # exponential
    assert not (tmp_path / row2.filename).exists()


def test_token_goes_in_the_header_never_in_logs(fake, tmp_path, monkeypatch, caplog):
    secret = "tok-3f9a7c1e-SECRET"
    data = payload(40_000, seed=6)
    row = fake.add("f-ctrl", data, token=secret, cut=CHUNK)
    denied = fake.add("f-denied", data, token="another-token")
    with pytest.raises(DownloadError, match="f-ctrl.*403.*GDC_TOKEN"):
        get(fake, row, tmp_path / row.filename)  # no token set: the fix names the variable
    monkeypatch.setenv("GDC_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    res = get(fake, row, tmp_path / row.filename)
    assert res.status == "downloaded"
    assert all(h.get("X-Auth-Token") == secret for h in fake.gets("f-ctrl")[1:])
    with pytest.raises(DownloadError, match="refused") as err:
        get(fake, denied, tmp_path / denied.filename)
    table = download_manifest([denied], tmp_path / "m", jobs=1, base_url=fake.url, backoff=0)
    text = caplog.text + str(err.value) + (tmp_path / "m" / gdc.SUMMARY_NAME).read_text() + table.to_string()
    assert f"resuming at byte {CHUNK}" in caplog.text and secret not in text


def test_present_file_is_skipped_and_md5_is_cached(fake, tmp_path, monkeypatch):
    data = payload(20_000, seed=7)
    row = fake.add("f-done", data)
    dest = tmp_path / row.filename
    assert get(fake, row, dest).status == "downloaded"
    monkeypatch.setattr(gdc, "file_md5", lambda p: pytest.fail("a verified file was hashed again"))
    assert get(fake, row, dest).status == "skipped" and len(fake.gets("f-done")) == 1
    monkeypatch.undo()
    monkeypatch.setattr(gdc, "_sleep", lambda s: None)
    dest.write_bytes(b"\0" * len(data))  # same size, wrong bytes: the stamp no longer matches
    assert get(fake, row, dest).status == "downloaded" and dest.read_bytes() == data


@pytest.mark.parametrize(
    "which, target_exists", [("partial", True), ("partial", False), ("lock", True), ("lock", False)]
)
def test_a_link_planted_at_the_partial_or_lock_is_refused(fake, tmp_path, which, target_exists):
    """A symlink at .NAME.partial / .NAME.lock must not let the download write (or create) a file elsewhere."""
    row = fake.add("f-link", payload(30_000, seed=40))
    out = tmp_path / "slides"
    out.mkdir()
    outside = tmp_path / "elsewhere" / "precious.txt"
    outside.parent.mkdir()
    if target_exists:
        outside.write_bytes(b"precious bytes\n")
    link = out / f".{row.filename}.{which}"
    link.symlink_to(outside)
    with pytest.raises(DownloadError) as err:
        get(fake, row, out / row.filename)
    msg = str(err.value)
    assert str(link) in msg and "symbolic link" in msg and "remove" in msg, msg
    if target_exists:
        assert outside.read_bytes() == b"precious bytes\n"
    else:
        assert not outside.exists()
    assert link.is_symlink() and not (out / row.filename).exists() and fake.gets("f-link") == []
    link.unlink()  # the fix the message names
    assert get(fake, row, out / row.filename).status == "downloaded"


def test_the_md5_stamp_is_not_written_through_a_planted_link(fake, tmp_path):
    row = fake.add("f-stamp", payload(20_000, seed=41))
    out = tmp_path / "slides"
    out.mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"precious bytes\n")
    (out / f".{row.filename}.md5ok.{os.getpid()}.tmp").symlink_to(outside)  # the stamp's temp name was predictable
    assert get(fake, row, out / row.filename).status == "downloaded"
    assert outside.read_bytes() == b"precious bytes\n"
    stamp = out / f".{row.filename}.md5ok"
    assert stamp.is_file() and not stamp.is_symlink() and row.md5 in stamp.read_text()


def test_a_directory_at_the_destination_is_reported(fake, tmp_path):
    row = fake.add("f-dir", payload(10_000, seed=42))
    (tmp_path / row.filename).mkdir()
    with pytest.raises(DownloadError, match=rf"{row.filename} is a directory.*move or remove"):
        get(fake, row, tmp_path / row.filename)
    assert fake.gets("f-dir") == []


BAD_IDS = [
    "../../status",
    "../v0/files",
    f"{gid('x')}/../../status",
    "c6e36f24-46f3-4e20-8154-970e749aa0c",
    "c6e36f24-46f3-4e20-8154-970e749aa0ca?x=1",
    "c6e36f24-46f3-4e20-8154-970e749aa0ca\n",
    "%2e%2e%2fstatus",
    "c6e36f24_46f3_4e20_8154_970e749aa0ca",
    "zzzzzzzz-46f3-4e20-8154-970e749aa0ca",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_file_id_that_is_not_a_uuid_never_reaches_the_server(fake, tmp_path, bad, monkeypatch):
    """A crafted id (``../``, query, encoded dots) would send the token to another path of the GDC host."""
    monkeypatch.setenv("GDC_TOKEN", "tok-SECRET")
    with pytest.raises(DownloadError, match="not a GDC file id.*UUID") as err:
        download_file(bad, tmp_path / "x.svs", "0" * 32, 10, base_url=fake.url, retries=0)
    assert repr(bad) in str(err.value) and "tok-SECRET" not in str(err.value)
    assert fake.requests == [] and list(tmp_path.iterdir()) == []


def test_manifest_ids_must_be_uuids(fake, tmp_path):
    good = fake.add("f-good", payload(1_000, seed=43))
    m = tmp_path / "m.txt"
    m.write_text(
        "id\tfilename\tmd5\tsize\tstate\n"
        f"{good.id}\t{good.filename}\t{good.md5}\t{good.size}\treleased\n"
        f"../../status\tB.svs\t{'b' * 32}\t2\treleased\n"
    )
    with pytest.raises(ValueError, match=r"m\.txt, line 3: id '\.\./\.\./status' is not a GDC file id.*UUID"):
        read_manifest(m)
    with pytest.raises(ValueError, match="line 3"):
        download_manifest(m, tmp_path / "out", base_url=fake.url)
    assert fake.requests == []
    m.write_text(f"id\tfilename\tmd5\tsize\n{good.id.upper()}\t{good.filename}\t{good.md5}\t{good.size}\n")
    assert read_manifest(m)[0].id == good.id.upper()  # hex digits in either case are a UUID


def test_manifest_download_is_bounded_and_isolates_failures(fake, tmp_path):
    rows = [fake.add(f"f{i}", payload(64_000, seed=10 + i), delay=0.01) for i in range(6)]
    rows.append(ManifestRow(gid("gone"), "gone.svs", "1" * 32, 5))
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(
        "id\tfilename\tmd5\tsize\tstate\n"
        + "".join(f"{r.id}\t{r.filename}\t{r.md5}\t{r.size}\treleased\n" for r in rows)
    )
    out = tmp_path / "slides"
    table = download_manifest(manifest, out, jobs=2, base_url=fake.url, retries=1, backoff=0)
    assert fake.max_active <= 2
    status = dict(zip(table["filename"], table["status"]))
    assert status.pop("gone.svs") == "failed" and set(status.values()) == {"downloaded"}
    assert gid("gone") in table.set_index("filename").loc["gone.svs", "error"]
    for r in rows[:-1]:
        assert hashlib.md5((out / r.filename).read_bytes()).hexdigest() == r.md5
    assert not (out / "gone.svs").exists() and leftovers(out) == []
    assert (out / gdc.SUMMARY_NAME).read_text().count("\n") == 8
    again = download_manifest(manifest, out, jobs=3, base_url=fake.url, retries=0, backoff=0)
    assert (again["status"] == "skipped").sum() == 6


def test_cli_download(fake, tmp_path):
    from fiveflow.cli import main

    row = fake.add("f-cli", payload(10_000, seed=20))
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"id\tfilename\tmd5\tsize\tstate\n{row.id}\t{row.filename}\t{row.md5}\t{row.size}\treleased\n")
    assert main(["download", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--base-url", fake.url]) == 0
    assert (tmp_path / "o" / row.filename).stat().st_size == row.size
    manifest.write_text(manifest.read_text() + f"{gid('missing')}\tx.svs\t{'2' * 32}\t3\treleased\n")
    assert (
        main(
            [
                "download",
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "o"),
                "--base-url",
                fake.url,
                "--retries",
                "0",
            ]
        )
        == 1
    )


def test_read_manifest_errors_name_the_file_and_line(tmp_path):
    m = tmp_path / "m.txt"
    m.write_text("id\tfilename\tsize\n")
    with pytest.raises(ValueError, match=r"m.txt: missing column\(s\) md5"):
        read_manifest(m)
    a, b = gid("a"), gid("b")
    m.write_text(f"id\tfilename\tmd5\tsize\tstate\n{a}\tA.svs\tnothex\t1\treleased\n")
    with pytest.raises(ValueError, match=r"m.txt, line 2: md5 'nothex' of A.svs"):
        read_manifest(m)
    m.write_text(f"id\tfilename\tmd5\tsize\n{a}\tA.svs\t{'a' * 32}\t1\n{b}\tA.svs\t{'b' * 32}\t2\n")
    with pytest.raises(ValueError, match="line 3: file name A.svs repeats line 2"):
        read_manifest(m)
    m.write_text(f"id\tfilename\tmd5\tsize\n{a}\t../x.svs\t{'a' * 32}\t1\n")
    with pytest.raises(ValueError, match="bad file name"):
        read_manifest(m)
    with pytest.raises(FileNotFoundError, match="GDC manifest not found"):
        read_manifest(tmp_path / "nope.txt")


def test_real_gdc_manifest_parses():
    rows = read_manifest(shared_path("manifests/gdc_manifest.2023-10-03-TCGA-LUAD.txt"))
    assert len(rows) == 541 and len({r.id for r in rows}) == 541
    assert all(r.filename.endswith(".svs") and r.size > 0 and len(r.md5) == 32 for r in rows)
    assert rows[0].id == "c6e36f24-46f3-4e20-8154-970e749aa0ca" and rows[0].size == 483720657


def test_snakemake_rule_downloads_through_the_fake_server(fake, tmp_path):
    rows = [fake.add(f"s{i}", payload(30_000, seed=30 + i)) for i in range(2)]
    (tmp_path / "m.txt").write_text(
        "id\tfilename\tmd5\tsize\tstate\n"
        + "".join(f"{r.id}\t{r.filename}\t{r.md5}\t{r.size}\treleased\n" for r in rows)
    )
    (tmp_path / "Snakefile").write_text(
        f'GDC_MANIFEST = "m.txt"\nGDC_DIR = "slides"\nGDC_BASE_URL = "{fake.url}"\n'
        f'include: "{PROJECT_ROOT}/workflow/rules/download.smk"\n'
    )
    cmd = [
        str(PROJECT_ROOT / "tools" / "snakemake.sh"),
        "-s",
        str(tmp_path / "Snakefile"),
        "--directory",
        str(tmp_path),
        "gdc_download_all",
        "--cores",
        "2",
        "--resources",
        "gdc_connections=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in rows:
        assert (tmp_path / "slides" / r.filename).read_bytes() == fake.files[r.id]
        assert "downloaded" in (tmp_path / "logs" / "gdc_download" / f"{r.filename}.log").read_text()
    assert fake.max_active == 1


@pytest.mark.parametrize(
    "row, match",
    [
        (f"b\tB.svs\t{'b' * 32}\t2\treleased\textra", r"m\.txt: line 3: 6 tab-separated field\(s\) where the header"),
        (f"b\tB.svs\t{'b' * 32}", r"m\.txt: line 3: 3 tab-separated field\(s\)"),
    ],
)
def test_read_manifest_rejects_rows_with_the_wrong_field_count(tmp_path, row, match):
    m = tmp_path / "m.txt"
    m.write_text(f"id\tfilename\tmd5\tsize\tstate\na\tA.svs\t{'a' * 32}\t1\treleased\n{row}\n")
    with pytest.raises(ValueError, match=match):
        read_manifest(m)
    m.write_bytes(b"id\tfilename\x00\x01")
    with pytest.raises(ValueError, match=r"m\.txt: binary content"):
        read_manifest(m)
