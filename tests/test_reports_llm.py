"""OpenAI-compatible LLM backend against a fake chat-completions server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from fiveflow.reports import llm
from fiveflow.reports.llm import (
    LLMBatchError,
    LLMConfig,
    LLMError,
    LLMFailuresError,
    MissingAPIKeyError,
    answer_reports,
    cache_key,
    report_cache_key,
)
from fiveflow.reports.normalize import FIELDS
from fiveflow.reports.prompts import load_prompt
from fiveflow.reports.structure import structure_reports

KEY_ENV = "FIVEFLOW_TEST_LLM_KEY"
SECRET = "sk-test-SECRET-0123456789abcdef"
GOOD = (
    "Moderately differentiated; Unknown; No vascular invasion; Pleural invasion present; Unknown; "
    "Margins clear of disease (R0)"
)


class FakeServer:
    """POST /v1/chat/completions: records every request; answers from a script, then canned.

    ``script``: (status, body, headers) served first, in arrival order. ``fault_for(report, n)``
    (n: how many requests this report has had, repairs included, 1-based) may return a fault:
    ``("status", code, body, headers)``, ``("sleep", seconds)`` (then the normal answer),
    ``("reply", content, finish_reason)``, ``("raw", bytes)`` (a 200 whose body is not JSON).
    ``latency``: seconds every request waits. ``structured``: what to do with ``response_format``:
    ``ignore`` (answer text anyway), ``accept`` (answer a JSON object) or ``reject`` (HTTP 400).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, dict]] = []
        self.answer_for = lambda report: GOOD
        self.fault_for = lambda report, n: None
        self.latency = 0.0
        self.structured = "ignore"
        self.per_report: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                report = server.report_of(body)
                with server.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append(
                        {
                            "path": self.path,
                            "headers": headers,
                            "body": body,
                            "report": report,
                            "repair": server.is_repair(body),
                            "t": time.monotonic(),
                        }
                    )
                    scripted = server.script.pop(0) if server.script else None
                    n = server.per_report[report] = server.per_report.get(report, 0) + 1
                if server.latency:
                    time.sleep(server.latency)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if scripted:
                    return self._send(*scripted)
                fault = server.fault_for(report, n)
                content, finish = server.answer_for(report), "stop"
                if fault and fault[0] == "status":
                    return self._send(*fault[1:])
                if fault and fault[0] == "sleep":
                    time.sleep(fault[1])
                if fault and fault[0] == "raw":
                    return self._send_bytes(200, fault[1])
                if fault and fault[0] == "reply":
                    content, finish = fault[1], fault[2]
                if "response_format" in body and server.structured == "reject":
                    return self._send(
                        400,
                        {
                            "error": {
                                "message": "Unrecognized request argument supplied: response_format",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                if "response_format" in body and server.structured == "accept" and (not fault or fault[0] == "sleep"):
                    content = json.dumps(dict(zip(FIELDS, [p.strip() for p in content.split(";")])))
                return self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    },
                )

            def _send(self, status, payload, headers=None):
                self._send_bytes(status, json.dumps(payload).encode(), headers)

            def _send_bytes(self, status, data, headers=None):
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout): nothing to answer
                    pass

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @staticmethod
    def report_of(body: dict) -> str:
        users = [
            m["content"]
            for m in body.get("messages", [])
            if m["role"] == "user" and m["content"].startswith("Pathology report:\n")
        ]
        return users[-1].split("\n", 1)[1] if users else ""

    @staticmethod
    def is_repair(body: dict) -> bool:
        msgs = body.get("messages", [])
        return bool(msgs) and msgs[-1]["content"] in (llm.TEXT_REPAIR, llm.JSON_REPAIR)

    def requests_for(self, report: str) -> list[dict]:
        return [r for r in self.requests if r["report"] == report]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def cfg(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return LLMConfig(
        model="fake-gpt",
        base_url=server.url,
        api_key_env=KEY_ENV,
        temperature=0.0,
        max_concurrency=3,
        cache_dir=str(tmp_path / "cache"),
        backoff_s=0.01,
        max_backoff_s=0.05,
        timeout_s=10.0,
    )


@pytest.fixture(scope="module")
def prompt():
    return load_prompt()


def all_text_under(path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in Path(path).rglob("*") if p.is_file())


def test_request_shape_cache_and_dedup(server, cfg, prompt, monkeypatch):
    texts = ["report one: poorly differentiated", "report two", "report one: poorly differentiated"]
    got = answer_reports(texts, cfg, prompt)
    assert [a.answer for a in got] == [GOOD] * 3 and not any(a.cached for a in got)
    assert len(server.requests) == 2  # identical reports are requested once
    for req in server.requests:
        body = req["body"]
        assert req["path"] == "/v1/chat/completions"
        assert body["model"] == "fake-gpt" and body["temperature"] == 0
        assert body["response_format"]["type"] == "json_schema"  # structured: auto (this server ignores it)
        assert body["response_format"]["json_schema"]["schema"]["required"] == list(FIELDS)
        assert req["headers"].get("authorization") == f"Bearer {SECRET}"
        msgs = body["messages"]
        assert msgs[0]["role"] == "system" and "exact word Unknown" in msgs[0]["content"]
        assert "Ignore statements about lymph nodes" in msgs[0]["content"]
        assert "spread through air spaces around the lesion and explain the reasons." in msgs[0]["content"]
        assert len(msgs) == 2 + 2 * len(prompt.examples) and len(prompt.examples) == 3
        for i, (rep, ans) in enumerate(prompt.examples):  # the worked examples, as user/assistant turns
            assert msgs[1 + 2 * i] == {"role": "user", "content": f"Pathology report:\n{rep}"}
            assert msgs[2 + 2 * i] == {"role": "assistant", "content": ans}
        assert msgs[-1]["role"] == "user" and msgs[-1]["content"].split("\n", 1)[1] in texts
    files = sorted(Path(cfg.cache_dir).glob("*.json"))
    assert [f.stem for f in files] == sorted({report_cache_key(t, cfg, prompt) for t in texts})
    entry = json.loads(files[0].read_text())
    assert entry["answer"] == GOOD and entry["prompt_version"] == prompt.version and entry["model"] == "fake-gpt"
    assert SECRET not in all_text_under(cfg.cache_dir)

    # A rerun costs nothing, and needs no key when every answer is cached.
    monkeypatch.delenv(KEY_ENV)
    again = answer_reports(texts, cfg, prompt)
    assert len(server.requests) == 2 and all(a.cached for a in again)
    assert [a.answer for a in again] == [GOOD] * 3


def test_cache_key_changes_with_everything_that_changes_the_answer(server, cfg, prompt):
    answer_reports(["r"], cfg, prompt)
    answer_reports(["r"], cfg, dataclasses.replace(prompt, version=prompt.version + "-b"))
    answer_reports(["r"], cfg, dataclasses.replace(prompt, instruction=prompt.instruction + " "))  # same version
    answer_reports(["r"], dataclasses.replace(cfg, model="other-model"), prompt)
    answer_reports(["r"], dataclasses.replace(cfg, temperature=0.5), prompt)
    answer_reports(["r"], dataclasses.replace(cfg, structured="text"), prompt)
    answer_reports(["r"], dataclasses.replace(cfg, max_retries=1, timeout_s=5.0, max_concurrency=1), prompt)  # cached
    assert len(server.requests) == 6
    base = dict(model="m", prompt_version="v1", prompt_sha256="p", base_url=None, temperature=0.0, structured="auto")
    variants = [
        {},
        {"model": "n"},
        {"prompt_version": "v2"},
        {"prompt_sha256": "q"},
        {"base_url": "http://x/v1"},
        {"temperature": 0.7},
        {"structured": "text"},
        {"backend": "other"},
    ]
    keys = {cache_key("r", **{**base, **v}) for v in variants} | {cache_key("s", **base)}
    assert len(keys) == len(variants) + 1
    assert cache_key("r", **base) == cache_key("r", **{**base, "temperature": 0})  # 0 and 0.0 are one setting
    assert cache_key("r", **{**base, "base_url": "http://x/v1/"}) == cache_key(
        "r", **{**base, "base_url": "http://x/v1"}
    )


def test_retry_on_500_and_429_then_success(server, cfg, prompt, caplog):
    server.script = [
        (500, {"error": {"message": "boom"}}, {}),
        (429, {"error": {"message": "slow down"}}, {"retry-after": "0"}),
    ]
    with caplog.at_level(logging.WARNING, logger="fiveflow.reports.llm"):
        got = answer_reports(["only report"], cfg, prompt)
    assert got[0].answer == GOOD
    assert len(server.requests) == 3
    assert caplog.text.count("transient LLM error") == 2
    assert json.loads(next(Path(cfg.cache_dir).glob("*.json")).read_text())["attempts"] == 3


def test_gives_up_after_max_retries(server, cfg, prompt):
    cfg = dataclasses.replace(cfg, max_retries=2)
    server.script = [(503, {"error": {"message": "down"}}, {})] * 3
    with pytest.raises(LLMBatchError, match="503") as info:
        answer_reports(["r"], cfg, prompt)
    assert len(server.requests) == 3
    (rec,) = info.value.batch  # the batch completed: the report is recorded as failed
    assert rec.status == "failed" and "503" in rec.error and info.value.batch.summary.failed == 1
    assert not list(Path(cfg.cache_dir).glob("*.json"))  # failures are never cached


def test_key_never_leaks(server, cfg, prompt, caplog, capsys):
    # A server that echoes the key in its error (as some do): the error we raise must not carry it.
    server.script = [
        (401, {"error": {"message": f"Incorrect API key provided: {SECRET}", "code": "invalid_api_key"}}, {})
    ]
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(LLMError) as info:
            answer_reports(["r"], cfg, prompt)
    err = info.value
    assert len(server.requests) == 1  # 401 is not retried
    assert "401" in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err)
    assert err.__cause__ is None and err.__context__ is None  # nothing chained that could hold it
    out = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in out.out and SECRET not in out.err
    assert SECRET not in llm.redact(f"Bearer {SECRET} and sk-abcdef123456", None)


def test_missing_env_var_is_a_clear_error(server, cfg, prompt, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(MissingAPIKeyError, match=KEY_ENV) as info:
        answer_reports(["r"], cfg, prompt)
    assert "environment variable" in str(info.value)
    assert server.requests == []


def test_config_section_is_checked():
    c = LLMConfig.from_cfg(
        {"model": "m", "base_url": None, "api_key_env": "K", "temperature": 0.0, "max_concurrency": 2, "cache_dir": "x"}
    )
    assert c.model == "m" and c.base_url is None and c.max_concurrency == 2
    with pytest.raises(ValueError, match="unknown key"):
        LLMConfig.from_cfg({"api_key": "sk-should-not-be-here"})
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMConfig.from_cfg({"max_concurrency": 0})


def test_structure_reports_with_openai_backend(server, cfg, tmp_path, caplog):
    answers = {
        "alpha": GOOD,
        "beta": "Poorly differentiated; Unknown; Vascular invasion is present",
        "gamma": "1. Well differentiated\n2. Unknown\n3. Unknown\n4. Unknown\n5. Unknown\n6. R1",
    }
    server.answer_for = lambda report: next(v for k, v in answers.items() if k in report)
    src = tmp_path / "reports.csv"
    pd.DataFrame(
        {
            "patient_filename": ["TCGA-AA-0001.x", "TCGA-AA-0002.y", "TCGA-AA-0003.z", "TCGA-AA-0004.w"],
            "text": ["report alpha", "report beta", "report gamma", "  "],
        }
    ).to_csv(src, index=False)
    section = {
        "backend": "openai",
        "precomputed": None,
        "openai": {
            "model": cfg.model,
            "base_url": cfg.base_url,
            "api_key_env": KEY_ENV,
            "temperature": 0.0,
            "max_concurrency": 2,
            "cache_dir": cfg.cache_dir,
        },
    }
    out = tmp_path / "labels.parquet"
    with caplog.at_level(logging.DEBUG):
        df = structure_reports(src, out, section)
    # The empty report is not sent; beta's three phrases are malformed: one repair request (answered the same),
    # then beta keeps its raw reply (normalised and flagged below) and is not cached.
    assert len(server.requests) == 4 and [r["repair"] for r in server.requests].count(True) == 1
    assert df["backend"].eq("openai").all() and df["model"].eq("fake-gpt").all()
    assert df["prompt_version"].eq(load_prompt().version).all()
    a, b, g, e = (df.iloc[i] for i in range(4))
    assert (a.differentiation, a.vascular_invasion, a.pleural_invasion, a.margins, a.flag) == (
        "moderate",
        "absent",
        "present",
        "negative",
        "",
    )
    assert b.flag == "padded:3" and b.vascular_invasion == "present" and b.margins == "unknown"
    assert g.flag == "lines" and g.differentiation == "well" and g.margins == "positive"
    assert e.flag == "empty_report"
    assert SECRET.encode() not in out.read_bytes() and SECRET not in caplog.text
    # Rerun: only the malformed report is requested again (with its repair); the rest are cached.
    df2 = structure_reports(src, tmp_path / "labels2.parquet", section)
    assert len(server.requests) == 6 and {r["report"] for r in server.requests[4:]} == {"report beta"}
    pd.testing.assert_frame_equal(df[list(FIELDS)], df2[list(FIELDS)])


def test_prompt_file_is_checked(tmp_path):
    import yaml

    from fiveflow.reports.prompts import DEFAULT_QUESTIONS

    doc = yaml.safe_load(DEFAULT_QUESTIONS.read_text())
    p = load_prompt()
    assert p.questions[1] == "Is there any indication of spread through air spaces around the lesion?"
    assert [q.endswith(" and explain the reasons.") for q in p.llm_questions] == [False, True, True, True, True, False]
    assert p.sha256 == load_prompt(DEFAULT_QUESTIONS).sha256
    bad = dict(doc, questions=doc["questions"][::-1])
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="in this order"):
        load_prompt(tmp_path / "q.yaml")
    bad = dict(doc, examples=[{"report": "r", "answer": "only; three; phrases"}])
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="six|6"):
        load_prompt(tmp_path / "q.yaml")


def test_check_answer_defines_well_formed():
    ok, why = llm.check_answer(GOOD)
    assert ok == GOOD and why == ""
    assert llm.check_answer(GOOD + ";")[0] == GOOD + ";"  # a trailing ';' is not a seventh answer
    assert llm.check_answer("\n".join(f"{i}. Unknown" for i in range(1, 7)))[0] is not None  # six lines
    assert llm.check_answer(GOOD, finish_reason="length") == (None, "truncated (finish_reason length)")
    assert llm.check_answer("")[0] is None and llm.check_answer(None)[0] is None
    assert "padded:3" in llm.check_answer("a; b; c")[1]
    assert "merged:7" in llm.check_answer(GOOD + "; extra")[1]
    as_json = json.dumps(dict(zip(FIELDS, [p.strip() for p in GOOD.split(";")])))
    assert llm.check_answer(as_json, json_mode=True)[0] == GOOD
    assert llm.check_answer(f"```json\n{as_json}\n```", json_mode=True)[0] == GOOD
    assert llm.check_answer(GOOD, json_mode=True)[0] == GOOD  # a server that ignored response_format
    assert llm.check_answer('{"differentiation": "x"}', json_mode=True)[0] is None
    assert llm.check_answer('{"differentiation": "x", "stas": "a; b"', json_mode=True)[0] is None  # cut JSON
    semi = json.dumps(dict(zip(FIELDS, ["a; b", "Unknown", "c", "d", "e", "f"])))
    assert llm.check_answer(semi, json_mode=True)[0] == "a, b; Unknown; c; d; e; f"  # stays six phrases


FAULTS = {  # report -> (fault for its n-th request, expected status, expected requests)
    "ok": (lambda n: None, "ok", 1),
    "slow": (lambda n: ("sleep", 0.1), "ok", 1),
    "timeout-once": (lambda n: ("sleep", 1.0) if n == 1 else None, "ok", 2),
    "truncated-once": (lambda n: ("reply", "Moderately differentiated; Unk", "length") if n == 1 else None, "ok", 2),
    "truncated": (lambda n: ("reply", "Moderately differentiated; Unk", "length"), "malformed", 2),
    "badjson-once": (lambda n: ("raw", b'{"id": "chatcmpl-x", "choices": [') if n == 1 else None, "ok", 2),
    "badjson": (lambda n: ("raw", b"<html>bad gateway</html>"), "failed", 3),
    "malformed-once": (lambda n: ("reply", "Poorly differentiated; Unknown", "stop") if n == 1 else None, "ok", 2),
    "malformed": (lambda n: ("reply", "I cannot answer that.", "stop"), "malformed", 2),
    "429-once": (
        lambda n: ("status", 429, {"error": {"message": "slow down"}}, {"retry-after": "0.2"}) if n == 1 else None,
        "ok",
        2,
    ),
    "500": (lambda n: ("status", 500, {"error": {"message": "boom"}}, {}), "failed", 3),
    "500-once": (lambda n: ("status", 500, {"error": {"message": "boom"}}, {}) if n == 1 else None, "ok", 2),
}


def test_fault_batch_none_lost_and_rerun_only_failed(server, cfg, prompt, monkeypatch):
    cfg = dataclasses.replace(cfg, max_retries=2, timeout_s=0.5, max_concurrency=4, max_backoff_s=0.5)
    texts = list(FAULTS)
    server.fault_for = lambda report, n: FAULTS[report][0](n)
    t0 = time.monotonic()
    got = answer_reports(texts, cfg, prompt, raise_on_failure=False)
    assert time.monotonic() - t0 < 8
    assert len(got) == len(texts)  # none lost: each report answered or recorded
    assert {t: a.status for t, a in zip(texts, got)} == {t: f[1] for t, f in FAULTS.items()}
    assert {t: len(server.requests_for(t)) for t in texts} == {t: f[2] for t, f in FAULTS.items()}
    for t, a in zip(texts, got):
        assert a.key == report_cache_key(t, cfg, prompt) and not a.cached
        if a.ok:
            assert a.answer == GOOD and a.error == ""
        else:
            assert a.error
    by = dict(zip(texts, got))
    assert (
        by["malformed"].answer == "I cannot answer that."
        and by["malformed"].raw_replies == ("I cannot answer that.",) * 2
    )
    assert by["truncated"].answer == "Moderately differentiated; Unk" and "truncated" in by["truncated"].error
    assert "500" in by["500"].error and by["badjson"].answer == ""
    repairs = [r["report"] for r in server.requests if r["repair"]]
    assert sorted(repairs) == sorted(["truncated-once", "truncated", "malformed-once", "malformed"])
    r429 = server.requests_for("429-once")
    assert r429[1]["t"] - r429[0]["t"] >= 0.2  # Retry-After honoured
    s = got.summary
    assert (s.reports, s.cache_hits, s.requests, s.repairs) == (len(texts), 0, len(server.requests), 4)
    assert (s.answered, s.malformed, s.failed) == (8, 2, 2)
    assert (s.prompt_tokens, s.completion_tokens) == (10 * 14, 5 * 14)  # every 200 with a usage block
    cached = {p.stem for p in Path(cfg.cache_dir).glob("*.json")}
    assert cached == {a.key for a in got if a.ok}  # failures are never cached

    # Rerun against a healthy server: requests ONLY for the reports that did not end well, once each.
    server.fault_for = lambda report, n: None
    n_before = len(server.requests)
    again = answer_reports(texts, cfg, prompt)
    rerun = server.requests[n_before:]
    assert sorted(r["report"] for r in rerun) == sorted(t for t, f in FAULTS.items() if f[1] != "ok")
    assert all(a.ok for a in again) and [a.answer for a in again] == [GOOD] * len(texts)
    assert [a.cached for a in again] == [FAULTS[t][1] == "ok" for t in texts]
    assert again.summary.cache_hits == 8 and again.summary.requests == 4
    # And a third run costs nothing and needs no key.
    monkeypatch.delenv(KEY_ENV)
    third = answer_reports(texts, cfg, prompt)
    assert len(server.requests) == n_before + 4 and all(a.cached for a in third) and third.summary.requests == 0


def test_timeout_is_honoured_and_retried(server, cfg, prompt):
    cfg = dataclasses.replace(cfg, timeout_s=0.3, max_retries=1)
    server.fault_for = lambda report, n: ("sleep", 2.0)
    t0 = time.monotonic()
    with pytest.raises(LLMBatchError, match="APITimeoutError") as info:
        answer_reports(["sleepy"], cfg, prompt)
    assert time.monotonic() - t0 < 1.5  # two attempts of 0.3 s, not two of 2 s
    assert len(server.requests) == 2 and info.value.batch[0].status == "failed"
    server.fault_for = lambda report, n: ("sleep", 0.6) if n == 3 else None
    assert answer_reports(["sleepy"], cfg, prompt)[0].answer == GOOD  # timed out once, then answered
    assert len(server.requests) == 4


def test_structured_output_json_accepted(server, cfg, prompt):
    server.structured = "accept"
    got = answer_reports(["r1", "r2"], cfg, prompt)
    assert [a.answer for a in got] == [GOOD, GOOD] and got.summary.structured == "json"
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema" and llm.JSON_INSTRUCTION in body["messages"][0]["content"]
    assert json.loads(next(Path(cfg.cache_dir).glob("*.json")).read_text())["answer"] == GOOD


def test_structured_output_rejected_falls_back_to_text_for_the_run(server, cfg, prompt, caplog):
    server.structured = "reject"
    cfg = dataclasses.replace(cfg, max_concurrency=1)
    with caplog.at_level(logging.WARNING, logger="fiveflow.reports.llm"):
        got = answer_reports(["r1", "r2", "r3"], cfg, prompt)
    assert [a.answer for a in got] == [GOOD] * 3 and got.summary.structured == "text"
    with_format = ["response_format" in r["body"] for r in server.requests]
    assert with_format == [True, False, False, False]  # rejected once, remembered for the rest of the run
    assert all(llm.JSON_INSTRUCTION not in r["body"]["messages"][0]["content"] for r in server.requests[1:])
    assert caplog.text.count("rejects response_format") == 1
    # structured: text never sends it; structured: json does not fall back.
    answer_reports(["r4"], dataclasses.replace(cfg, structured="text"), prompt)
    assert "response_format" not in server.requests[-1]["body"]
    with pytest.raises(LLMBatchError, match="400"):
        answer_reports(["r5"], dataclasses.replace(cfg, structured="json"), prompt)
    with pytest.raises(ValueError, match="structured"):
        LLMConfig.from_cfg({"structured": "yaml"})


def test_dry_run_sends_nothing_and_estimates(server, cfg, prompt, monkeypatch):
    texts = ["a report", "another report", "a third, longer report " * 20, "a report"]
    answer_reports(texts[:1], cfg, prompt)
    monkeypatch.delenv(KEY_ENV)  # a dry run needs no key
    n = len(server.requests)
    est = answer_reports(texts, cfg, prompt, dry_run=True)
    assert len(server.requests) == n
    assert (est.reports, est.cache_hits, est.requests) == (3, 1, 2)

    def tokens(t):
        return sum(-(-len(m["content"]) // 4) + 4 for m in llm._messages(prompt, t, True))

    assert est.est_prompt_tokens == tokens(texts[1]) + tokens(texts[2])
    assert est.est_completion_tokens == 2 * llm.ASSUMED_COMPLETION_TOKENS
    assert "would be sent" in est.line()


def test_run_summary_is_logged(server, cfg, prompt, caplog):
    with caplog.at_level(logging.INFO, logger="fiveflow.reports.llm"):
        got = answer_reports(["x", "y", "x"], cfg, prompt)
    s = got.summary
    assert (s.reports, s.requests, s.answered, s.prompt_tokens, s.completion_tokens) == (2, 2, 2, 20, 10)
    assert s.seconds > 0 and isinstance(got, list) and got.failures == []
    assert (
        "LLM run: 2 report(s), 0 cached, 2 request(s)" in caplog.text
        and "tokens 20 prompt + 10 completion" in caplog.text
    )


def test_key_never_in_outputs_cache_or_logs_and_labels_are_stable(server, cfg, tmp_path, caplog, capsys):
    faults = {
        "report echo": lambda n: ("reply", f"Unknown; Unknown; Unknown; Unknown; Unknown; R0, key {SECRET}", "stop"),
        "report err": lambda n: ("status", 500, {"error": {"message": f"bad key {SECRET}"}}, {}) if n == 1 else None,
        "report junk": lambda n: ("reply", f"no idea, Bearer {SECRET}", "stop"),
        "report slow": lambda n: ("sleep", 0.05),
    }
    server.fault_for = lambda report, n: (faults.get(report) or (lambda n: None))(n)
    src = tmp_path / "reports.csv"
    pd.DataFrame({"patient_id": [f"TCGA-AA-000{i}" for i in range(5)], "text": ["report ok", *faults]}).to_csv(
        src, index=False
    )
    section = {
        "backend": "openai",
        "openai": {
            "model": cfg.model,
            "base_url": cfg.base_url,
            "api_key_env": KEY_ENV,
            "max_concurrency": 3,
            "cache_dir": str(tmp_path / "out" / "cache"),
            "backoff_s": 0.01,
            "max_backoff_s": 0.05,
        },
    }
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.DEBUG):
        df1 = structure_reports(src, out / "labels.parquet", section, log=out / "run.log")
        n1 = len(server.requests)
        df2 = structure_reports(src, out / "labels2.parquet", section, log=out / "run.log")
    assert df1.set_index("patient_id").loc["TCGA-AA-0003", "flag"] == "padded:1"  # junk: malformed, kept raw
    assert [r["report"] for r in server.requests[n1:]] == ["report junk"] * 2  # only it is retried (+ repair)
    pd.testing.assert_frame_equal(df1[["patient_id", *FIELDS]], df2[["patient_id", *FIELDS]])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.parent.name == "cache" for p in files)
    assert (out / "run.log").stat().st_size > 0
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out and SECRET not in captured.err


def test_a_failed_report_fails_the_run_is_recorded_in_the_labels_and_retried_alone(server, cfg, tmp_path):
    """A report whose requests keep failing fails the stage after the labels are written (flagged), and only
    it is retried by the next run (issue 16: LLM failures are failures)."""
    server.fault_for = lambda report, n: (
        ("status", 400, {"error": {"message": "bad request"}}) if "BOOM" in report else None
    )
    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["A", "B", "C"], "text": ["Tumor one.", "Tumor two BOOM.", "Tumor three."]}).to_csv(
        reports, index=False
    )
    opts = {"backend": "openai", "openai": {**dataclasses.asdict(cfg)}}
    with pytest.raises(LLMFailuresError, match=r"1 of 3 report\(s\)"):
        structure_reports(reports, tmp_path / "l.parquet", opts)
    df = pd.read_parquet(tmp_path / "l.parquet").set_index("patient_id")  # written, for inspection
    assert df.loc["B", "flag"] == "llm_failed" and (df.loc["B", list(FIELDS)] == "unknown").all()
    assert df.loc["A", "flag"] != "llm_failed" and df.loc["A", "differentiation"] == "moderate"
    first = len(server.requests)
    server.fault_for = lambda report, n: None  # the server recovers
    df = structure_reports(reports, tmp_path / "l.parquet", opts).set_index("patient_id")
    assert [r["report"] for r in server.requests[first:]] == ["Tumor two BOOM."]  # only the failed one again
    assert df.loc["B", "flag"] != "llm_failed"


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # a port nothing listens on: every request is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_an_unreachable_server_fails_the_run_with_the_labels_written(cfg, tmp_path, capsys):
    """Every request refused: no silent all-Unknown labels. structure_reports raises after writing the labels
    (every row flagged llm_failed); the CLI prints one line and exits 2."""
    import yaml

    from fiveflow.cli import main

    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["A", "B", "C"], "text": ["Tumor one.", "Tumor two.", ""]}).to_csv(reports, index=False)
    down = dataclasses.replace(cfg, base_url=_closed_port_url(), max_retries=1)
    opts = {"backend": "openai", "openai": dataclasses.asdict(down)}
    out = tmp_path / "l.parquet"
    with pytest.raises(LLMFailuresError) as info:
        structure_reports(reports, out, opts)
    err = info.value
    assert isinstance(err, RuntimeError) and (err.n_failed, err.n_total) == (2, 2)
    msg = str(err)
    assert "2 of 2 report(s)" in msg and "APIConnectionError" in msg and str(out) in msg and "llm_failed" in msg
    assert "cached" in msg and "rerun retries only" in msg and "reports.openai.max_failed_share" in msg
    assert "\n" not in msg and SECRET not in msg
    df = pd.read_parquet(out).set_index("patient_id")
    assert list(df["flag"]) == ["llm_failed", "llm_failed", "empty_report"]
    assert (df.loc[["A", "B"], list(FIELDS)] == "unknown").all().all()
    assert not list(Path(down.cache_dir).glob("*.json"))  # nothing cached: a rerun asks again

    full = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    full["reports"].update(backend="openai")
    full["reports"]["openai"].update(
        model=down.model, base_url=down.base_url, api_key_env=KEY_ENV, max_retries=0, cache_dir=down.cache_dir
    )
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(full))
    capsys.readouterr()
    rc = main(
        [
            "reports",
            "extract",
            "--input",
            str(reports),
            "--config",
            str(conf),
            "--output",
            str(tmp_path / "cli.parquet"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fiveflow reports: error: 2 of 2 report(s)"), captured.err
    assert (tmp_path / "cli.parquet").is_file() and "patients ->" not in captured.out


def test_a_tolerated_share_of_failures_passes_with_a_warning(server, cfg, tmp_path, caplog):
    server.fault_for = lambda report, n: (
        ("status", 400, {"error": {"message": "bad request"}}) if "BOOM" in report else None
    )
    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["A", "B", "C"], "text": ["Tumor one.", "Tumor two BOOM.", "Tumor three."]}).to_csv(
        reports, index=False
    )
    opts = {"backend": "openai", "openai": {**dataclasses.asdict(cfg), "max_failed_share": 0.5}}
    with caplog.at_level(logging.WARNING):
        df = structure_reports(reports, tmp_path / "l.parquet", opts).set_index("patient_id")
    assert df.loc["B", "flag"] == "llm_failed" and df.loc["A", "flag"] == ""
    assert "1 of 3 report(s)" in caplog.text and "max_failed_share" in caplog.text
    # over the share: 2 of 3 > 0.5
    server.fault_for = lambda report, n: ("status", 400, {"error": {"message": "bad"}}) if "one" not in report else None
    pd.DataFrame({"patient_id": ["A", "B", "C"], "text": ["Tumor one.", "Tumor two BOOM.", "Tumor four."]}).to_csv(
        reports, index=False
    )
    with pytest.raises(LLMFailuresError, match=r"2 of 3 report\(s\)"):
        structure_reports(reports, tmp_path / "l.parquet", opts)


def test_malformed_answers_do_not_fail_the_run(server, cfg, tmp_path):
    """A reply still not six phrases after the repair request is kept, repaired and flagged: not a failure."""
    server.fault_for = lambda report, n: ("reply", "I cannot answer that.", "stop") if "odd" in report else None
    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["A", "B"], "text": ["Tumor one.", "Tumor odd."]}).to_csv(reports, index=False)
    df = structure_reports(reports, tmp_path / "l.parquet", {"backend": "openai", "openai": dataclasses.asdict(cfg)})
    assert df.set_index("patient_id").loc["B", "flag"].startswith("padded")


def test_max_failed_share_and_rule_retries_are_checked():
    assert LLMConfig.from_cfg({}).max_failed_share == 0.0 and LLMConfig.from_cfg({}).rule_retries == 2
    assert LLMConfig.from_cfg({"max_failed_share": 0.1, "rule_retries": 0}).max_failed_share == 0.1
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="max_failed_share"):
            LLMConfig.from_cfg({"max_failed_share": bad})
    with pytest.raises(ValueError, match="rule_retries"):
        LLMConfig.from_cfg({"rule_retries": -1})


def test_dry_run_estimates_without_sending(server, cfg, tmp_path, capsys):
    from fiveflow.cli import main

    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["A", "B"], "text": ["Tumor one.", "Tumor two."]}).to_csv(reports, index=False)
    conf = tmp_path / "config.yaml"
    import yaml

    full = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    full["reports"].update(
        backend="openai", openai={k: v for k, v in dataclasses.asdict(cfg).items() if k in full["reports"]["openai"]}
    )
    conf.write_text(yaml.safe_dump(full))
    assert (
        main(
            [
                "reports",
                "extract",
                "--input",
                str(reports),
                "--backend",
                "openai",
                "--dry-run",
                "--config",
                str(conf),
                "--output",
                str(tmp_path / "l.parquet"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 request(s) would be sent" in out and not server.requests and not (tmp_path / "l.parquet").exists()


@pytest.mark.e2e
def test_workflow_reports_rule_fails_and_retries_when_the_server_is_unreachable(cfg, tmp_path):
    """The Snakemake `reports` rule fails (no labels left behind) when the LLM server is down, after
    `reports.openai.rule_retries` restarts; the answers cache survives for the rerun."""
    import yaml

    from conftest import PROJECT_ROOT, run_workflow

    work = tmp_path
    (work / "slides").mkdir()
    rows = []
    for i in range(4):
        (work / "slides" / f"S{i}.svs").write_bytes(b"")  # never read: only the reports rule runs
        rows.append((f"P{i}", f"S{i}", ["LUAD", "LUSC"][i % 2], f"slides/S{i}.svs"))
    pd.DataFrame(rows, columns=["patient_id", "slide_id", "label", "path"]).to_csv(work / "samples.csv", index=False)
    pd.DataFrame(
        {"patient_id": [f"P{i}" for i in range(4)], "text": [f"Carcinoma {i}. Well differentiated." for i in range(4)]}
    ).to_csv(work / "reports.csv", index=False)
    full = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    full["results_dir"] = str(work / "results")
    full["cohort"].update(source="samples", samples=str(work / "samples.csv"), reports=str(work / "reports.csv"))
    full["reports"].update(backend="openai")
    full["reports"]["openai"].update(
        model="fake-gpt",
        base_url=_closed_port_url(),
        api_key_env=KEY_ENV,
        max_retries=0,
        rule_retries=1,
        cache_dir=str(work / "results" / "cache"),
    )
    (work / "config.yaml").write_text(yaml.safe_dump(full))
    labels = work / "results" / "reports" / "labels.parquet"
    r = run_workflow(work, "--cores", "1", str(labels), timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert not labels.exists()  # Snakemake removed the failed job's output
    assert out.count("Trying to restart job") == 1, out[-3000:]  # rule_retries: 1 -> two attempts
    log = (work / "results" / "logs" / "reports.log").read_text()
    assert log.count("4 of 4 report(s) got no LLM answer") == 2 and "max_failed_share" in log
    assert SECRET not in out + log


def test_circuit_breaker_stops_sending_to_a_dead_server(cfg, prompt, caplog):
    """A refused connection for every request: after ``circuit_breaker`` reports in a row fail for good, the
    rest are not sent (one request budget each before; none after), each ends failed with a reason naming the
    setting, one ERROR line says so, and the run still raises as before. 0 = off: every report is tried."""
    texts = [f"Tumor {i}." for i in range(30)]
    down = dataclasses.replace(cfg, base_url=_closed_port_url(), max_retries=1, max_concurrency=1, circuit_breaker=3)
    with caplog.at_level("ERROR"), pytest.raises(LLMBatchError) as info:
        answer_reports(texts, down, prompt)
    batch = info.value.batch
    assert [a.status for a in batch] == ["failed"] * 30
    s = batch.summary
    assert s.requests == 3 * 2 and s.not_sent == 27 and s.failed == 30  # 3 reports x (1 try + 1 retry)
    assert all("APIConnectionError" in a.error for a in batch[:3])
    assert all(a.error.startswith("not sent: 3 reports in a row") and "circuit_breaker" in a.error for a in batch[3:])
    assert sum("sending no more requests" in r.message for r in caplog.records) == 1
    assert "27 not sent: circuit breaker" in s.line()
    off = dataclasses.replace(down, circuit_breaker=0)
    with pytest.raises(LLMBatchError) as info:
        answer_reports(texts[:6], off, prompt)
    assert info.value.batch.summary.requests == 12 and info.value.batch.summary.not_sent == 0


def test_circuit_breaker_counts_only_failures_in_a_row(server, cfg, prompt):
    """Failures between replies never open it: every other report fails for good (HTTP 400), none is skipped."""
    server.fault_for = lambda report, n: (
        ("status", 400, {"error": {"message": "bad"}}) if report.endswith("x.") else None
    )
    texts = [f"Tumor {i}{'x' if i % 2 else ''}." for i in range(12)]
    c = dataclasses.replace(cfg, max_concurrency=1, circuit_breaker=2)
    with pytest.raises(LLMBatchError) as info:
        answer_reports(texts, c, prompt)
    s = info.value.batch.summary
    assert s.failed == 6 and s.answered == 6 and s.not_sent == 0
    with pytest.raises(ValueError, match="circuit_breaker"):
        LLMConfig.from_cfg({"circuit_breaker": -1})


def test_authors_shape_prompt_sends_their_layout(server, cfg, prompt):
    """resources/questions/five-authors-v1.yaml: the FiVE authors' request layout with our texts. On the wire:
    no system message, every user turn is the instruction followed by a report, the worked examples as
    alternating user/assistant turns, the real report last, temperature 0 and no response_format (their
    ';'-joined text). Same instruction and examples as five-v1, its own version and hash (cache keys differ)."""
    from conftest import PROJECT_ROOT
    from fiveflow.reports.prompts import load_prompt as load

    authors = load(PROJECT_ROOT / "resources" / "questions" / "five-authors-v1.yaml")
    assert authors.shape == "authors" and prompt.shape == "system"
    assert (authors.instruction, authors.examples) == (prompt.instruction, prompt.examples)
    assert authors.sha256 != prompt.sha256 and report_cache_key("r", cfg, authors) != report_cache_key("r", cfg, prompt)
    server.structured = "reject"  # would fail loudly if a response_format were sent
    batch = answer_reports(["Tumor A."], cfg, authors)
    assert [a.status for a in batch] == ["ok"]
    (req,) = server.requests
    msgs, body = req["body"]["messages"], req["body"]
    assert "response_format" not in body and body["temperature"] == 0.0
    assert [m["role"] for m in msgs] == ["user", "assistant"] * len(prompt.examples) + ["user"]
    for m, (rep, _ans) in zip(msgs[0::2], prompt.examples):
        assert m["content"] == f"{prompt.instruction}\n\nPathology report:\n{rep}"
    assert [m["content"] for m in msgs[1::2]] == [ans for _, ans in prompt.examples]
    assert msgs[-1]["content"] == f"{prompt.instruction}\n\nPathology report:\nTumor A."
    with pytest.raises(ValueError, match="structured: json does not apply"):
        answer_reports(["Tumor B."], dataclasses.replace(cfg, structured="json"), authors)
