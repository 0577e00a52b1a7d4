"""URL downloads (fetch_url) against a local HTTP server the tests start (no real network)."""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fiveflow.download import Checksum, DownloadError, fetch_url, parse_checksum
from fiveflow.download import fetch as fetch_mod

CHUNK = 8192  # client chunk size; cuts fall on chunk boundaries so the resume offset is exact
HINT = "or set cohort.reports to a local copy"


class FakeServer:
    """``/x/NAME`` with Range support, and per-file misbehaviour:

    cut: send only this many body bytes once, then drop the connection; corrupt: serve a flipped first byte this
    many times; status: queue of codes answered before the file; no_length: ``chunked`` or ``close`` (no
    Content-Length: chunked transfer encoding, or a body that ends when the connection closes).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.rules: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.requests.append((self.path, dict(self.headers)))
                fake.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/x"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add(self, name: str, data: bytes, **rules) -> str:
        """Serve ``data`` at ``/x/NAME``; returns its URL."""
        self.files[name] = data
        self.rules[name] = rules
        return f"{self.base}/{name}"

    def gets(self, name: str) -> list[dict]:
        return [h for p, h in self.requests if p == f"/x/{name}"]

    def serve(self, h: BaseHTTPRequestHandler):
        name = h.path.rsplit("/", 1)[-1]
        if name not in self.files:
            h.send_error(404)
            return
        rules = self.rules[name]
        if rules.get("status"):
            h.send_response(rules["status"].pop(0))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = self.files[name]
        if rules.get("corrupt", 0) > 0:
            rules["corrupt"] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if h.headers.get("Range"):
            start = int(h.headers["Range"].split("=")[1].split("-")[0])
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
        mode = rules.get("no_length")
        if mode == "chunked":
            h.send_header("Transfer-Encoding", "chunked")
        elif mode == "close":
            h.send_header("Connection", "close")
            h.close_connection = True
        else:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        limit = rules.pop("cut", None)
        if limit is not None:
            body = body[:limit]
            h.close_connection = True
        for i in range(0, len(body), 16384):
            part = body[i : i + 16384]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if mode == "chunked" else part)
        if mode == "chunked" and limit is None:
            h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def srv():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(fetch_mod, "_sleep", waits.append)
    return waits


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get(url, dest, checksum, **kw):
    kw.setdefault("retries", 3)
    kw.setdefault("timeout", 10)
    return fetch_url(url, dest, checksum, chunk_size=CHUNK, **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".ok"))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/x/file.bin"


# --- parse_checksum ----------------------------------------------------------------------------------------------


def test_parse_checksum_three_kinds(tmp_path):
    data = b"hello fiveflow\n" * 1000
    f = tmp_path / "f.txt"
    f.write_bytes(data)
    for algo, hexd in [("sha256", hashlib.sha256(data).hexdigest()), ("md5", hashlib.md5(data).hexdigest())]:
        c = parse_checksum(f"{algo}:{hexd.upper()}")
        assert c == Checksum(algo, hexd) and str(c) == f"{algo}:{hexd}" and c.of_file(f) == hexd
    git = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    c = parse_checksum(f"GITSHA1:{git}")
    assert str(c) == f"gitsha1:{git}" and c.of_file(f) == git
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert Checksum("gitsha1", "").of_file(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "a" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "g" * 64,
        "md5:" + "a" * 64,
        "sha1:" + "a" * 40,
        "gitsha1:" + "a" * 41,
        "md5:" + "a" * 32 + " x",
        "sha256 " + "a" * 64,
        None,
    ],
)
def test_parse_checksum_refuses_other_forms(bad):
    with pytest.raises(ValueError) as err:
        parse_checksum(bad)
    msg = str(err.value)
    assert repr(bad) in msg and all(k in msg for k in ("sha256:", "md5:", "gitsha1:")), msg


# --- downloads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["sha256", "md5", "gitsha1"])
def test_download_verified_by_each_kind(srv, tmp_path, algo):
    data = payload(70_000, seed=1)
    url = srv.add("a.bin", data)
    dest = tmp_path / "a.bin"
    hexd = (
        hashlib.sha256(data)
        if algo == "sha256"
        else hashlib.md5(data)
        if algo == "md5"
        else hashlib.sha1(b"blob %d\0" % len(data) + data)
    ).hexdigest()
    res = get(url, dest, f"{algo}:{hexd}", size=len(data))
    assert res.status == "downloaded" and res.file_id == url and res.filename == "a.bin" and res.attempts == 1
    assert dest.read_bytes() == data and leftovers(tmp_path) == []
    assert srv.gets("a.bin")[0]["Accept-Encoding"] == "identity"
    assert f"{algo}:{hexd}" in (tmp_path / ".a.bin.ok").read_text()


@pytest.mark.parametrize("size", [None, "known"])
def test_cut_connection_resumes_with_range(srv, tmp_path, size):
    data = payload(200_000, seed=2)
    url = srv.add("cut.bin", data, cut=5 * CHUNK)
    dest = tmp_path / "cut.bin"
    res = get(url, dest, sha256(data), size=len(data) if size else None)
    first, second = srv.gets("cut.bin")
    assert "Range" not in first and second["Range"] == f"bytes={5 * CHUNK}-"
    assert res.status == "downloaded" and res.attempts == 2 and res.bytes_fetched == len(data)
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_checksum_mismatch_twice_names_file_url_and_both_checksums(srv, tmp_path):
    data = payload(40_000, seed=3)
    url = srv.add("bad.bin", data, corrupt=99)
    dest = tmp_path / "bad.bin"
    with pytest.raises(DownloadError) as err:
        get(url, dest, sha256(data), hint=HINT)
    msg = str(err.value)
    actual = hashlib.sha256(bytes([data[0] ^ 0xFF]) + data[1:]).hexdigest()
    assert "bad.bin" in msg and url in msg and sha256(data) in msg and actual in msg, msg
    assert "changed or is corrupt" in msg and "by hand" in msg and "pin" in msg and HINT in msg and "\n" not in msg
    assert len(srv.gets("bad.bin")) == 2  # the first download and exactly one from scratch
    assert not dest.exists() and leftovers(tmp_path) == []


def test_checksum_mismatch_once_is_repaired(srv, tmp_path):
    data = payload(40_000, seed=4)
    url = srv.add("flaky.bin", data, corrupt=1)
    res = get(url, tmp_path / "flaky.bin", sha256(data))
    assert res.status == "downloaded" and (tmp_path / "flaky.bin").read_bytes() == data
    assert "Range" not in srv.gets("flaky.bin")[1]  # from scratch


@pytest.mark.parametrize("code, words", [(404, "not found at the URL"), (403, "access denied"), (410, "HTTP 410")])
def test_client_errors_fail_at_once_and_name_the_url(srv, tmp_path, no_wait, code, words):
    url = srv.add("gone.bin", b"x", status=[code])
    dest = tmp_path / "gone.bin"
    with pytest.raises(DownloadError) as err:
        get(url, dest, sha256(b"x"), hint=HINT)
    msg = str(err.value)
    assert words in msg and url in msg and f"save it as {dest}" in msg and HINT in msg and "\n" not in msg, msg
    assert len(srv.gets("gone.bin")) == 1 and no_wait == []
    assert not dest.exists()


def test_unreachable_server_gives_a_one_line_manual_fix_and_keeps_the_partial(srv, tmp_path, no_wait):
    data = payload(50_000, seed=5)
    dest = tmp_path / "file.bin"
    partial = tmp_path / ".file.bin.partial"
    partial.write_bytes(data[: 3 * CHUNK])  # an earlier run got this far
    url = closed_port_url()
    with pytest.raises(DownloadError) as err:
        get(url, dest, sha256(data), retries=2, hint=HINT)
    msg = str(err.value)
    assert "\n" not in msg and "file.bin" in msg and url in msg and "ConnectionError" in msg, msg
    assert f"Fix: download {url} by hand" in msg and sha256(data) in msg and f"save it as {dest}, {HINT}" in msg
    assert f"resumes from the {3 * CHUNK} bytes kept in {partial}" in msg
    assert partial.read_bytes() == data[: 3 * CHUNK] and not dest.exists() and len(no_wait) == 2
    res = get(srv.add("file.bin", data), dest, sha256(data))  # back online: the rerun resumes
    assert res.resumed_from == 3 * CHUNK and srv.gets("file.bin")[0]["Range"] == f"bytes={3 * CHUNK}-"
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_verified_file_is_skipped_without_a_request(srv, tmp_path, monkeypatch, caplog):
    data = payload(30_000, seed=6)
    url = srv.add("done.bin", data)
    dest = tmp_path / "done.bin"
    assert get(url, dest, sha256(data)).status == "downloaded"
    with monkeypatch.context() as m:
        m.setattr(Checksum, "of_file", lambda self, p: pytest.fail("a verified file was hashed again"))
        assert get(url, dest, sha256(data)).status == "skipped"
    assert len(srv.gets("done.bin")) == 1
    dest.write_bytes(b"\0" * len(data))  # same size, wrong bytes: the stamp no longer matches
    caplog.set_level(logging.WARNING)
    assert get(url, dest, sha256(data)).status == "downloaded" and dest.read_bytes() == data
    assert "checksum is wrong" in caplog.text


@pytest.mark.parametrize("mode", ["chunked", "close"])
def test_unknown_size_without_content_length(srv, tmp_path, mode):
    data = payload(90_000, seed=7)
    url = srv.add("nolen.bin", data, no_length=mode)
    res = get(url, tmp_path / "nolen.bin", sha256(data))
    assert res.status == "downloaded" and res.attempts == 1 and (tmp_path / "nolen.bin").read_bytes() == data
    # a cut: chunked encoding shows it (resume with Range); a close-delimited body cannot, so the checksum catches it
    url = srv.add("nolen-cut.bin", data, no_length=mode, cut=4 * CHUNK)
    res = get(url, tmp_path / "nolen-cut.bin", sha256(data))
    assert res.status == "downloaded" and (tmp_path / "nolen-cut.bin").read_bytes() == data
    second = srv.gets("nolen-cut.bin")[1]
    assert second.get("Range") == (f"bytes={4 * CHUNK}-" if mode == "chunked" else None)
    assert leftovers(tmp_path) == []


def test_complete_partial_of_unknown_size_is_verified_after_416(srv, tmp_path):
    data = payload(20_000, seed=8)
    url = srv.add("whole.bin", data)
    (tmp_path / ".whole.bin.partial").write_bytes(data)  # killed between the transfer and the rename
    res = get(url, tmp_path / "whole.bin", sha256(data))
    assert res.status == "downloaded" and res.bytes_fetched == 0 and (tmp_path / "whole.bin").read_bytes() == data


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x/a.bin", "file:///etc/passwd", "127.0.0.1/x/a.bin", "http:///x/a.bin", "/x/a.bin"]
)
def test_non_http_url_is_refused_before_any_request(srv, tmp_path, url):
    with pytest.raises(DownloadError, match="not an http:// or https:// URL") as err:
        get(url, tmp_path / "a.bin", sha256(b"x"), hint=HINT)
    assert repr(url) in str(err.value) and HINT in str(err.value)
    assert srv.requests == [] and list(tmp_path.iterdir()) == []


def test_bad_checksum_text_is_a_value_error_naming_the_file(srv, tmp_path):
    with pytest.raises(ValueError, match="a.bin: checksum 'sha1:abc'"):
        get(srv.add("a.bin", b"x"), tmp_path / "a.bin", "sha1:abc")
    assert srv.requests == []


def test_a_link_planted_at_the_partial_is_refused(srv, tmp_path):
    data = payload(10_000, seed=9)
    url = srv.add("link.bin", data)
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"precious bytes\n")
    out = tmp_path / "out"
    out.mkdir()
    link = out / ".link.bin.partial"
    link.symlink_to(outside)
    with pytest.raises(DownloadError) as err:
        get(url, out / "link.bin", sha256(data))
    msg = str(err.value)
    assert str(link) in msg and "symbolic link" in msg and "remove" in msg, msg
    assert outside.read_bytes() == b"precious bytes\n" and srv.requests == [] and not (out / "link.bin").exists()
    link.unlink()  # the fix the message names
    assert get(url, out / "link.bin", sha256(data)).status == "downloaded"


def test_a_directory_at_the_destination_is_reported(srv, tmp_path):
    url = srv.add("dir.bin", b"x")
    (tmp_path / "dir.bin").mkdir()
    with pytest.raises(DownloadError, match="dir.bin is a directory.*move or remove"):
        get(url, tmp_path / "dir.bin", sha256(b"x"))
    assert srv.requests == []
