"""LLM report-structuring throughput against a fake OpenAI-compatible server (no network, no key).

The script starts its own chat-completions server on 127.0.0.1 (``ThreadingHTTPServer``) that
waits ``--latency-ms`` (default 50 ms) per request, then answers with the report's own answer
from the dev CSV (or a canned well-formed answer), with a ``usage`` block and, when asked for,
JSON structured output. It then runs :func:`fiveflow.reports.llm.answer_reports` end to end (the
official ``openai`` client, cache writes, threads) on ``--reports`` report texts (default 300:
the texts of ../shared/data/reports/tcga_lung_reports_dev.csv when present, else synthetic ones)
with ``--concurrency`` (default 16) and an empty cache, then once more with everything cached.

- ``seconds``: the first (uncached) run, wall clock; ``reports_per_s`` = reports / seconds.
  The floor is reports x latency / concurrency (0.94 s for the defaults); the rest is the
  one-time ``import openai`` (about 1 s on a 2-core machine), client, server, thread and cache
  overhead (the fake server shares the CPUs with the client).
- ``requests``: requests the server received in the first run (== reports: no retries).
- ``cached_rerun_requests`` (must be 0) and ``cached_rerun_seconds``: the rerun, fully cached.
- ``prompt_tokens`` / ``completion_tokens``: summed from the responses' ``usage`` (fake numbers).
- ``est_prompt_tokens``: the dry-run estimate for the same batch (characters / 4 per message).

Usage: ``.venv/bin/python benchmarks/bench_llm.py [--reports 300] [--concurrency 16] [--latency-ms 50]
[--structured auto] [--csv PATH]``
Last line: ``RESULT reports=... seconds=... requests=... cached_rerun_requests=0 cached_rerun_seconds=...
reports_per_s=... floor_seconds=... prompt_tokens=... completion_tokens=... est_prompt_tokens=...
failures=... concurrency=... latency_ms=...``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fiveflow.logs import setup_logging  # noqa: E402
from fiveflow.reports.llm import LLMConfig, answer_reports  # noqa: E402
from fiveflow.reports.normalize import FIELDS  # noqa: E402
from fiveflow.reports.prompts import load_prompt  # noqa: E402

DEV_CSV = ROOT.parent / "shared" / "data" / "reports" / "tcga_lung_reports_dev.csv"
KEY_ENV = "FIVEFLOW_BENCH_LLM_KEY"
CANNED = (
    "Moderately differentiated; Unknown; No vascular invasion; Pleural invasion present; Unknown; "
    "Margins clear of disease (R0)"
)


class FakeOpenAI:
    """A chat-completions endpoint with a fixed latency; counts requests."""

    def __init__(self, latency_s: float, answers: dict[str, str]):
        self.count = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server.lock:
                    server.count += 1
                time.sleep(latency_s)
                report = body["messages"][-1]["content"].split("\n", 1)[-1]
                content = answers.get(report) or CANNED
                parts = content.split(";")
                if len(parts) != len(FIELDS):
                    content = CANNED
                if "response_format" in body:
                    content = json.dumps(dict(zip(FIELDS, [p.strip() for p in content.split(";")])))
                data = json.dumps(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                        "usage": {
                            "prompt_tokens": len(json.dumps(body["messages"])) // 4,
                            "completion_tokens": len(content) // 4,
                            "total_tokens": 0,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def load_texts(csv: Path, n: int) -> tuple[list[str], dict[str, str], str]:
    texts: list[str] = []
    answers: dict[str, str] = {}
    source = "synthetic"
    if csv.is_file():
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        for t, a in zip(df["text"], df["answer"] if "answer" in df.columns else [""] * len(df)):
            if t.strip() and t not in answers:
                texts.append(t)
                answers[t] = a
        source = csv.name
    i = 0
    while len(texts) < n:  # unique synthetic reports fill up the rest
        texts.append(f"Synthetic report {i}: adenocarcinoma, {i % 5 + 1}.{i % 10} cm, margins clear (R0).")
        i += 1
    return texts[:n], answers, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--reports", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--structured", default="auto", choices=["auto", "json", "text"])
    ap.add_argument("--csv", type=Path, default=DEV_CSV)
    args = ap.parse_args()
    setup_logging(level=logging.WARNING)

    texts, answers, source = load_texts(args.csv, args.reports)
    server = FakeOpenAI(args.latency_ms / 1000, answers)
    os.environ[KEY_ENV] = "sk-bench-not-a-real-key"
    prompt = load_prompt()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = LLMConfig(
                model="fake-gpt",
                base_url=server.url,
                api_key_env=KEY_ENV,
                max_concurrency=args.concurrency,
                cache_dir=str(Path(tmp) / "cache"),
                backoff_s=0.05,
                max_backoff_s=1.0,
                timeout_s=30.0,
                structured=args.structured,
            )
            est = answer_reports(texts, cfg, prompt, dry_run=True)
            t0 = time.perf_counter()
            first = answer_reports(texts, cfg, prompt, raise_on_failure=False)
            seconds = time.perf_counter() - t0
            requests = server.count
            t0 = time.perf_counter()
            again = answer_reports(texts, cfg, prompt)
            rerun_seconds = time.perf_counter() - t0
            rerun_requests = server.count - requests
    finally:
        server.close()
    s = first.summary
    floor = len(texts) * args.latency_ms / 1000 / args.concurrency
    assert all(a.cached for a in again) and [a.answer for a in again] == [a.answer for a in first]
    print(
        f"{len(texts)} reports ({source}), {args.concurrency} threads, {args.latency_ms:.0f} ms latency, "
        f"format {s.structured}: {seconds:.2f} s ({len(texts) / seconds:.1f} reports/s; floor {floor:.2f} s), "
        f"{requests} requests; cached rerun {rerun_seconds:.3f} s, {rerun_requests} requests"
    )
    print(
        f"RESULT reports={len(texts)} seconds={seconds:.3f} requests={requests} cached_rerun_requests={rerun_requests} "
        f"cached_rerun_seconds={rerun_seconds:.3f} reports_per_s={len(texts) / seconds:.1f} floor_seconds={floor:.3f} "
        f"prompt_tokens={s.prompt_tokens} completion_tokens={s.completion_tokens} "
        f"est_prompt_tokens={est.est_prompt_tokens} failures={s.failed + s.malformed} "
        f"concurrency={args.concurrency} latency_ms={args.latency_ms:.0f}"
    )


if __name__ == "__main__":
    main()
