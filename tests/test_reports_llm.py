"""OpenAI-compatible LLM backend against a fake chat-completions server on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from fiveflow.reports import llm
from fiveflow.reports.llm import LLMConfig, LLMError, MissingAPIKeyError, answer_reports, cache_key
from fiveflow.reports.prompts import load_prompt
from fiveflow.reports.structure import structure_reports

KEY_ENV = "FIVEFLOW_TEST_LLM_KEY"
SECRET = "sk-test-SECRET-0123456789abcdef"
GOOD = ("Moderately differentiated; Unknown; No vascular invasion; Pleural invasion present; Unknown; "
        "Margins clear of disease (R0)")


class FakeServer:
    """POST /v1/chat/completions: records every request; answers from a script, then canned."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, dict]] = []  # (status, body, headers) served first, in order
        self.answer_for = lambda report: GOOD
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append({"path": self.path, "headers": headers, "body": body})
                    scripted = server.script.pop(0) if server.script else None
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if scripted:
                    return self._send(*scripted)
                report = body["messages"][-1]["content"]
                return self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": server.answer_for(report)}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

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
    return LLMConfig(model="fake-gpt", base_url=server.url, api_key_env=KEY_ENV, temperature=0.0,
                     max_concurrency=3, cache_dir=str(tmp_path / "cache"), backoff_s=0.01, max_backoff_s=0.05,
                     timeout_s=10.0)


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
    assert [f.stem for f in files] == sorted({cache_key(prompt.version, "fake-gpt", t) for t in texts})
    entry = json.loads(files[0].read_text())
    assert entry["answer"] == GOOD and entry["prompt_version"] == prompt.version and entry["model"] == "fake-gpt"
    assert SECRET not in all_text_under(cfg.cache_dir)

    # A rerun costs nothing, and needs no key when every answer is cached.
    monkeypatch.delenv(KEY_ENV)
    again = answer_reports(texts, cfg, prompt)
    assert len(server.requests) == 2 and all(a.cached for a in again)
    assert [a.answer for a in again] == [GOOD] * 3


def test_cache_key_changes_with_prompt_version_and_model(server, cfg, prompt):
    answer_reports(["r"], cfg, prompt)
    answer_reports(["r"], cfg, dataclasses.replace(prompt, version=prompt.version + "-b"))
    answer_reports(["r"], dataclasses.replace(cfg, model="other-model"), prompt)
    assert len(server.requests) == 3
    k = {cache_key("v1", "m", "r"), cache_key("v2", "m", "r"), cache_key("v1", "n", "r"), cache_key("v1", "m", "s")}
    assert len(k) == 4


def test_retry_on_500_and_429_then_success(server, cfg, prompt, caplog):
    server.script = [(500, {"error": {"message": "boom"}}, {}),
                     (429, {"error": {"message": "slow down"}}, {"retry-after": "0"})]
    with caplog.at_level(logging.WARNING, logger="fiveflow.reports.llm"):
        got = answer_reports(["only report"], cfg, prompt)
    assert got[0].answer == GOOD
    assert len(server.requests) == 3
    assert caplog.text.count("transient LLM error") == 2
    assert json.loads(next(Path(cfg.cache_dir).glob("*.json")).read_text())["attempts"] == 3


def test_gives_up_after_max_retries(server, cfg, prompt):
    cfg = dataclasses.replace(cfg, max_retries=2)
    server.script = [(503, {"error": {"message": "down"}}, {})] * 3
    with pytest.raises(LLMError, match="503"):
        answer_reports(["r"], cfg, prompt)
    assert len(server.requests) == 3
    assert not list(Path(cfg.cache_dir).glob("*.json"))  # failures are never cached


def test_key_never_leaks(server, cfg, prompt, caplog, capsys):
    # A server that echoes the key in its error (as some do): the error we raise must not carry it.
    server.script = [(401, {"error": {"message": f"Incorrect API key provided: {SECRET}", "code": "invalid_api_key"}}, {})]
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
    c = LLMConfig.from_cfg({"model": "m", "base_url": None, "api_key_env": "K", "temperature": 0.0,
                            "max_concurrency": 2, "cache_dir": "x"})
    assert c.model == "m" and c.base_url is None and c.max_concurrency == 2
    with pytest.raises(ValueError, match="unknown key"):
        LLMConfig.from_cfg({"api_key": "sk-should-not-be-here"})
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMConfig.from_cfg({"max_concurrency": 0})


def test_structure_reports_with_openai_backend(server, cfg, tmp_path, caplog):
    answers = {"alpha": GOOD, "beta": "Poorly differentiated; Unknown; Vascular invasion is present",
               "gamma": "1. Well differentiated\n2. Unknown\n3. Unknown\n4. Unknown\n5. Unknown\n6. R1"}
    server.answer_for = lambda report: next(v for k, v in answers.items() if k in report)
    src = tmp_path / "reports.csv"
    pd.DataFrame({"patient_filename": ["TCGA-AA-0001.x", "TCGA-AA-0002.y", "TCGA-AA-0003.z", "TCGA-AA-0004.w"],
                  "text": ["report alpha", "report beta", "report gamma", "  "]}).to_csv(src, index=False)
    section = {"backend": "openai", "precomputed": None, "openai": {
        "model": cfg.model, "base_url": cfg.base_url, "api_key_env": KEY_ENV, "temperature": 0.0,
        "max_concurrency": 2, "cache_dir": cfg.cache_dir}}
    out = tmp_path / "labels.parquet"
    with caplog.at_level(logging.DEBUG):
        df = structure_reports(src, out, section)
    assert len(server.requests) == 3  # the empty report is not sent
    assert df["backend"].eq("openai").all() and df["model"].eq("fake-gpt").all()
    assert df["prompt_version"].eq(load_prompt().version).all()
    a, b, g, e = (df.iloc[i] for i in range(4))
    assert (a.differentiation, a.vascular_invasion, a.pleural_invasion, a.margins, a.flag) == (
        "moderate", "absent", "present", "negative", "")
    assert b.flag == "padded:3" and b.vascular_invasion == "present" and b.margins == "unknown"
    assert g.flag == "lines" and g.differentiation == "well" and g.margins == "positive"
    assert e.flag == "empty_report"
    assert SECRET.encode() not in out.read_bytes() and SECRET not in caplog.text
    # Rerun: everything cached, no request.
    structure_reports(src, tmp_path / "labels2.parquet", section)
    assert len(server.requests) == 3


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
