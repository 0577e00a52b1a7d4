"""OpenAI-compatible LLM backend: one chat request per report, cached on disk, retried, bounded.

* The API key is read from the environment variable *named* by ``api_key_env`` (never from
  config) and only when a request must actually be sent: a fully cached rerun needs no key.
  The key never reaches logs, cache files, exceptions or outputs (errors are rebuilt from the
  status code and a redacted message, outside the ``except`` block, so no original exception
  carrying it is chained; replies are redacted too).
* Cache: one JSON file per answer, ``{cache_dir}/{key}.json``, key = sha256 of everything that
  changes the answer (:func:`cache_key`: report text, backend ``openai``, model, prompt version,
  prompt sha256, base_url, temperature, output format); written atomically. Only well-formed
  answers are cached: a failed or malformed report is retried by the next run.
* Well-formed answer (:func:`check_answer`): a non-truncated reply (``finish_reason`` not
  ``length``) that is a JSON object with the six FIELDS as string values (structured output), or
  text that :func:`fiveflow.reports.normalize.split_answer` splits into exactly six phrases
  (``;``-joined; six lines without ``;`` also pass) without padding or merging. A malformed reply
  gets ONE repair request (the conversation plus the bad reply and a request for exactly the
  format); if that is malformed too, the report is recorded as ``malformed`` carrying the raw
  reply (structure.py then repairs it as before and flags it), never cached.
* Structured output (``structured``: ``auto`` | ``json`` | ``text``): ``auto`` (default) sends
  ``response_format={"type": "json_schema", ...}`` and, if the server rejects it (HTTP 400
  mentioning response_format / json_schema), falls back to ``;``-joined text for the rest of the
  run; a JSON answer is stored as the six values joined by ``"; "`` so every consumer sees one
  format. ``auto`` also accepts a text reply from a server that ignores ``response_format``.
* Transient failures (HTTP 408/409/429/5xx, timeouts past ``timeout_s``, connection errors,
  unparsable response bodies) are retried with exponential backoff and jitter, honouring
  ``Retry-After``; other errors fail at once. A report whose request fails for good is recorded
  as ``failed``; the batch always completes, then (``raise_on_failure=True``, the default)
  :class:`LLMBatchError` is raised carrying every record and the run summary.
* Up to ``max_concurrency`` requests run in parallel threads; progress is shown with tqdm.
* :class:`RunSummary` (``AnswerBatch.summary``): requests sent (retries and repairs included),
  cache hits, answered / malformed / failed counts, summed ``usage`` tokens, seconds; one log line.
* ``dry_run=True`` sends nothing and returns a :class:`DryRunEstimate`: requests that would be sent
  (unique reports not in the cache) and a token estimate: ``ceil(len(content) / 4) + 4`` per
  message (characters / 4 is the usual English rule of thumb, 4 the per-message chat overhead),
  plus ``ASSUMED_COMPLETION_TOKENS`` (100: the worked answers are 150-330 characters) per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..fileio import atomic_write_text
from ..settings import default
from .normalize import FIELDS, SEP, split_answer
from .prompts import Prompt

LOG = logging.getLogger("fiveflow.reports.llm")
TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
STRUCTURED_MODES = ("auto", "json", "text")
ASSUMED_COMPLETION_TOKENS = 100
BACKEND = "openai"

JSON_SCHEMA_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "five_answers",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {f: {"type": "string"} for f in FIELDS},
            "required": list(FIELDS),
            "additionalProperties": False,
        },
    },
}
JSON_INSTRUCTION = (
    "\nReply with one JSON object and nothing else, with exactly these keys in this order: "
    + ", ".join(FIELDS)
    + "; each value is your one short phrase for the matching perspective (Unknown when it cannot be answered)."
)
TEXT_REPAIR = (
    "Your reply above is not in the required format. Reply again with exactly six short phrases, one per "
    "perspective in the order given, joined by ';' (exactly five ';' characters), with no numbering, no line "
    "breaks and no other text. Answer a perspective that cannot be answered with the exact word Unknown."
)
JSON_REPAIR = (
    "Your reply above is not in the required format. Reply again with only one JSON object with exactly the keys "
    + ", ".join(FIELDS)
    + ", each a short phrase (Unknown when it cannot be answered), and no other text."
)


class LLMError(RuntimeError):
    """An LLM request failed for good (after retries, or with a non-transient error)."""


class MissingAPIKeyError(LLMError):
    """The environment variable that should hold the API key is unset or empty."""


@dataclass(frozen=True)
class LLMConfig:
    """The ``reports.openai`` config section, plus retry knobs (not config keys)."""

    # config keys: their defaults are the schema's (fiveflow.settings); backoff_s and max_backoff_s are not keys
    model: str = default("reports.openai.model")
    base_url: str | None = default("reports.openai.base_url")
    api_key_env: str = default("reports.openai.api_key_env")
    temperature: float = default("reports.openai.temperature")
    max_concurrency: int = default("reports.openai.max_concurrency")
    cache_dir: str = default("reports.openai.cache_dir")
    max_retries: int = default("reports.openai.max_retries")
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = default("reports.openai.timeout_s")
    structured: str = default("reports.openai.structured")
    # Read by structure_reports, not here: the share of reports (sent to the LLM) that may end ``failed``
    # before the run fails (0 = none; ``malformed`` replies do not count); and how often the workflow
    # restarts a failed ``reports`` job (Snakemake ``retries``). Neither changes an answer or the cache key.
    max_failed_share: float = default("reports.openai.max_failed_share")
    rule_retries: int = default("reports.openai.rule_retries")
    # After this many reports in a row failed for good (server down, key revoked, model gone), the rest are
    # not sent: each ends ``failed`` at once ("not sent: ...") instead of waiting through its own retries.
    # 0 = off. Any reply (even a malformed one) resets the count.
    circuit_breaker: int = default("reports.openai.circuit_breaker")

    @classmethod
    def from_cfg(cls, cfg: dict | None, **overrides: Any) -> LLMConfig:
        """Build from the ``reports.openai`` dict (missing keys take the defaults above)."""
        cfg = dict(cfg or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"reports.openai: unknown key(s) {sorted(unknown)}")
        cfg.update(overrides)
        out = cls(**{k: v for k, v in cfg.items() if v is not None or k == "base_url"})
        if out.max_concurrency < 1:
            raise ValueError("reports.openai.max_concurrency must be >= 1")
        if out.structured not in STRUCTURED_MODES:
            raise ValueError(
                f"reports.openai.structured must be one of {', '.join(STRUCTURED_MODES)}, got {out.structured!r}"
            )
        if not out.timeout_s or out.timeout_s <= 0:
            raise ValueError("reports.openai.timeout_s must be > 0")
        if isinstance(out.max_failed_share, bool) or not 0 <= float(out.max_failed_share) < 1:
            raise ValueError(
                f"reports.openai.max_failed_share must be >= 0 and < 1 (a share of the reports), "
                f"got {out.max_failed_share!r}"
            )
        if isinstance(out.rule_retries, bool) or int(out.rule_retries) != out.rule_retries or out.rule_retries < 0:
            raise ValueError(f"reports.openai.rule_retries must be an integer >= 0, got {out.rule_retries!r}")
        if (
            isinstance(out.circuit_breaker, bool)
            or int(out.circuit_breaker) != out.circuit_breaker
            or out.circuit_breaker < 0
        ):
            raise ValueError(
                f"reports.openai.circuit_breaker must be an integer >= 0 (0 = off), got {out.circuit_breaker!r}"
            )
        return out


@dataclass(frozen=True)
class LLMAnswer:
    """One report's answer and where it came from.

    ``status``: ``ok`` (well-formed; cached), ``malformed`` (the reply, after one repair request, is
    still not six answers: ``answer`` holds the raw reply, not cached) or ``failed`` (no usable
    reply: ``answer`` is the raw reply if any, else ""; ``error`` says why; not cached).
    """

    key: str
    answer: str
    cached: bool
    status: str = "ok"
    error: str = ""
    raw_replies: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RunSummary:
    """What one :func:`answer_reports` call did."""

    reports: int = 0  # unique report texts
    cache_hits: int = 0
    requests: int = 0  # HTTP requests sent, retries and repair requests included
    repairs: int = 0  # repair requests sent
    answered: int = 0  # new well-formed answers (cached)
    malformed: int = 0
    failed: int = 0
    not_sent: int = 0  # of the failed: not sent because the circuit breaker had opened
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    structured: str = ""  # output format used at the end of the run: json | text

    def line(self) -> str:
        return (
            f"LLM run: {self.reports} report(s), {self.cache_hits} cached, {self.requests} request(s) "
            f"({self.repairs} repair), {self.answered} answered, {self.malformed} malformed, {self.failed} failed"
            f"{f' ({self.not_sent} not sent: circuit breaker)' if self.not_sent else ''}, "
            f"tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion, {self.seconds:.1f}s"
            + (f", format {self.structured}" if self.structured else "")
        )


class AnswerBatch(list):
    """``list[LLMAnswer]`` in input order, plus ``.summary`` (:class:`RunSummary`)."""

    def __init__(self, items: Sequence[LLMAnswer] = (), summary: RunSummary | None = None):
        super().__init__(items)
        self.summary = summary or RunSummary()

    @property
    def failures(self) -> list[LLMAnswer]:
        return [a for a in self if not a.ok]


class LLMBatchError(LLMError):
    """Some reports failed for good; the batch completed. ``.batch`` holds every record."""

    def __init__(self, message: str, batch: AnswerBatch):
        super().__init__(message)
        self.batch = batch


class LLMFailuresError(LLMError):
    """More reports failed for good (status ``failed``, after the client's retries) than
    ``reports.openai.max_failed_share`` tolerates. Raised by
    :func:`fiveflow.reports.structure.structure_reports` after the labels were written with those rows
    flagged ``llm_failed``; ``.n_failed``, ``.n_total`` (reports sent to the LLM) and ``.labels`` say what."""

    def __init__(self, message: str, n_failed: int, n_total: int, labels: str | os.PathLike):
        super().__init__(message)
        self.n_failed, self.n_total, self.labels = n_failed, n_total, Path(labels)


@dataclass(frozen=True)
class DryRunEstimate:
    """What :func:`answer_reports` would send (``dry_run=True``); see the module docstring."""

    reports: int
    cache_hits: int
    requests: int
    est_prompt_tokens: int
    est_completion_tokens: int

    def line(self) -> str:
        return (
            f"LLM dry run: {self.reports} report(s), {self.cache_hits} cached, {self.requests} request(s) would be "
            f"sent, ~{self.est_prompt_tokens} prompt + ~{self.est_completion_tokens} completion tokens (estimate)"
        )


def cache_key(
    report_text: str,
    *,
    model: str,
    prompt_version: str,
    prompt_sha256: str | None = None,
    base_url: str | None = None,
    temperature: float = 0.0,
    structured: str = "auto",
    backend: str = BACKEND,
) -> str:
    """sha256 over every input that changes the answer, as NUL-separated fields."""
    h = hashlib.sha256()
    for part in (
        report_text,
        backend,
        model,
        prompt_version,
        prompt_sha256 or "",
        (base_url or "").rstrip("/"),
        repr(float(temperature)),
        structured,
    ):
        h.update(str(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def report_cache_key(report_text: str, cfg: LLMConfig, prompt: Prompt) -> str:
    """The cache key of ``report_text`` under ``cfg`` and ``prompt``."""
    return cache_key(
        report_text,
        model=cfg.model,
        prompt_version=prompt.version,
        prompt_sha256=getattr(prompt, "sha256", None),
        base_url=cfg.base_url,
        temperature=cfg.temperature,
        structured=cfg.structured,
    )


# ----------------------------------------------------------------------------- answers

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S | re.I)


def _parse_json_answer(content: str) -> str | None:
    """A JSON object with the six FIELDS as strings -> the values joined by SEP; else None."""
    m = _FENCE.match(content)
    text = m.group(1) if m else content
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or any(not isinstance(obj.get(f), str) for f in FIELDS):
        return None
    return SEP.join(re.sub(r"\s+", " ", obj[f].replace(";", ",")).strip() for f in FIELDS)


def check_answer(
    content: str | None, finish_reason: str | None = None, json_mode: bool = False
) -> tuple[str | None, str]:
    """(well-formed answer as ``;``-joined text, "") or (None, why it is malformed).

    ``json_mode``: a JSON object is expected, but a text reply is accepted too (servers that
    ignore ``response_format``).
    """
    content = (content or "").strip()
    if finish_reason == "length":
        return None, "truncated (finish_reason length)"
    if not content:
        return None, "empty reply"
    if json_mode or content.startswith(("{", "```")):
        parsed = _parse_json_answer(content)
        if parsed is not None:
            return parsed, ""
        if content.startswith(("{", "```")):
            return None, "not a JSON object with the six fields"
    _, flag = split_answer(content)
    if flag not in ("", "lines"):
        return None, f"not six ';'-separated answers ({flag})"
    return content, ""


# ----------------------------------------------------------------------------- secrets

_KEY_PATTERNS = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+", re.I)


def redact(text: str, secret: str | None) -> str:
    """Remove the secret (and anything shaped like an API key or bearer token) from ``text``."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_PATTERNS.sub("***", text)


def read_api_key(env_name: str) -> str:
    """The key from ``os.environ[env_name]``; a clear error naming the variable if it is missing."""
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise MissingAPIKeyError(
            f"the LLM backend needs an API key in the environment variable {env_name}, which is not set. "
            f"Export it first (export {env_name}=...); for a local server without authentication any "
            f"non-empty value works. Keys are never read from config files "
            f"(reports.openai.api_key_env names the variable)."
        )
    return key.strip()


# ----------------------------------------------------------------------------- cache


class AnswerCache:
    """One JSON file per cache key under ``root``; atomic writes; unreadable files are misses."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            LOG.warning("ignoring unreadable cache file %s (%s)", p, type(e).__name__)
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("key") != key
            or not isinstance(entry.get("answer"), str)
            or not entry["answer"].strip()
        ):
            LOG.warning("ignoring malformed cache file %s", p)
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        atomic_write_text(self.path(key), json.dumps(entry, ensure_ascii=False, indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- requests


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        resp = getattr(exc, "response", None)
        status = getattr(resp, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError)):
        return True
    if isinstance(exc, ValueError):  # a response body that is not JSON (proxy hiccup, cut connection)
        return True
    status = _status_of(exc)
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def _rejects_response_format(exc: BaseException) -> bool:
    if _status_of(exc) != 400:
        return False
    text = str(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "json_object", "response format"))


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


def _json_mode(cfg: LLMConfig, prompt: Prompt) -> bool:
    """Whether to ask for JSON-schema output first: ``structured`` auto/json, and a prompt of the system shape
    (the authors' shape asks for ';'-joined text)."""
    return cfg.structured in ("auto", "json") and prompt.shape == "system"


def _messages(prompt: Prompt, report: str, json_mode: bool) -> list[dict[str, str]]:
    """The prompt's chat messages; in JSON mode the system message also asks for the JSON object."""
    msgs = prompt.messages(report)
    if json_mode:
        msgs[0] = {"role": "system", "content": msgs[0]["content"] + JSON_INSTRUCTION}
    return msgs


class _RequestFailed(Exception):
    """Internal: one request failed for good (message already redacted)."""


@dataclass
class _Outcome:
    status: str
    answer: str
    error: str = ""
    raw_replies: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


class _Requester:
    """Sends one report's chat request(s) with retries and one repair; safe to call from several threads."""

    def __init__(self, cfg: LLMConfig, prompt: Prompt, client: Any, secret: str):
        self.cfg, self.prompt, self.client, self._secret = cfg, prompt, client, secret
        self._rng = random.Random()
        self._lock = threading.Lock()
        self.json_mode = _json_mode(cfg, prompt)
        self.requests = self.repairs = self.prompt_tokens = self.completion_tokens = 0
        self.failed_in_a_row, self.not_sent = 0, 0
        self.open_reason: str | None = None  # set when the circuit breaker opens: nothing more is sent

    def _sleep_for(self, attempt: int, exc: BaseException) -> float:
        base = min(self.cfg.max_backoff_s, self.cfg.backoff_s * (2**attempt))
        with self._lock:
            delay = base * (0.5 + 0.5 * self._rng.random())
        ra = _retry_after(exc)
        return min(self.cfg.max_backoff_s, max(delay, ra)) if ra is not None else delay

    def messages(self, report: str, json_mode: bool) -> list[dict[str, str]]:
        return _messages(self.prompt, report, json_mode)

    def _send(self, messages: list[dict[str, str]]) -> tuple[str, str | None, dict, bool]:
        """One logical request with transient retries -> (content, finish_reason, meta, json_mode used)."""
        failure: tuple[str, int | None, str, int] = ("unknown", None, "", 0)
        attempt = 0
        while attempt <= self.cfg.max_retries:
            json_mode = self.json_mode
            kwargs: dict[str, Any] = {
                "model": self.cfg.model,
                "messages": messages,
                "temperature": self.cfg.temperature,
            }
            if json_mode:
                kwargs["response_format"] = JSON_SCHEMA_FORMAT
            with self._lock:
                self.requests += 1
            try:
                resp = self.client.chat.completions.create(**kwargs)
                choice = resp.choices[0] if resp.choices else None
                content = choice.message.content if choice is not None and choice.message is not None else None
                usage = getattr(resp, "usage", None)
                with self._lock:
                    self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                    self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
                meta = {
                    "response_model": getattr(resp, "model", None),
                    "usage": usage.model_dump() if hasattr(usage, "model_dump") else None,
                    "attempts": attempt + 1,
                }
                content = redact(content or "", self._secret).strip()
                return content, getattr(choice, "finish_reason", None), meta, json_mode
            except Exception as exc:  # noqa: BLE001 - classified below, never re-raised as is
                status = _status_of(exc)
                msg = redact(str(exc), self._secret)[:500]
                if json_mode and self.cfg.structured == "auto" and _rejects_response_format(exc):
                    with self._lock:
                        if self.json_mode:
                            LOG.warning(
                                "the server rejects response_format (HTTP 400): using ';'-joined text answers "
                                "for the rest of this run"
                            )
                        self.json_mode = False
                    messages = [dict(m) for m in messages]
                    if messages[0]["content"].endswith(JSON_INSTRUCTION):
                        messages[0]["content"] = messages[0]["content"][: -len(JSON_INSTRUCTION)]
                    messages = [
                        m if m.get("content") != JSON_REPAIR else {**m, "content": TEXT_REPAIR} for m in messages
                    ]
                    continue  # not a retry: the same request in the text format
                if _is_transient(exc) and attempt < self.cfg.max_retries:
                    delay = self._sleep_for(attempt, exc)
                    LOG.warning(
                        "transient LLM error (%s, status %s), retry %d/%d in %.1fs",
                        type(exc).__name__,
                        status,
                        attempt + 1,
                        self.cfg.max_retries,
                        delay,
                    )
                    time.sleep(delay)
                    attempt += 1
                    continue
                failure = (type(exc).__name__, status, msg, attempt + 1)
                break
        name, status, msg, attempts = failure
        raise _RequestFailed(
            f"LLM request to model {self.cfg.model!r} failed ({name}, HTTP status {status}) "
            f"after {attempts} attempt(s): {msg}"
        )

    def __call__(self, report: str) -> _Outcome:
        with self._lock:
            reason = self.open_reason
            if reason is not None:
                self.not_sent += 1
        if reason is not None:
            return _Outcome("failed", "", error=reason)
        out = self._answer(report)
        with self._lock:
            if out.status != "failed":  # a reply came: the server is there
                self.failed_in_a_row = 0
            else:
                self.failed_in_a_row += 1
                n = self.cfg.circuit_breaker
                if n and self.failed_in_a_row >= n and self.open_reason is None:
                    self.open_reason = (
                        f"not sent: {n} reports in a row failed for good before it "
                        f"(reports.openai.circuit_breaker), so the run stopped sending; last error: "
                        f"{out.error[:300]}"
                    )
                    LOG.error(
                        "%d LLM reports in a row failed for good: sending no more requests this run "
                        "(reports.openai.circuit_breaker: %d; 0 = off). Last error: %s",
                        n,
                        n,
                        out.error[:300],
                    )
        return out

    def _answer(self, report: str) -> _Outcome:
        messages = self.messages(report, self.json_mode)
        replies: list[str] = []
        try:
            content, finish, meta, json_mode = self._send(messages)
            replies.append(content)
            answer, why = check_answer(content, finish, json_mode)
            if answer is not None:
                return _Outcome("ok", answer, raw_replies=tuple(replies), meta=meta)
            LOG.warning("malformed LLM answer (%s): sending one repair request", why)
            json_mode = self.json_mode  # the format may have changed (fallback) in another thread
            base = self.messages(report, json_mode)
            repair = base + [
                {"role": "assistant", "content": content or "(empty reply)"},
                {"role": "user", "content": JSON_REPAIR if json_mode else TEXT_REPAIR},
            ]
            with self._lock:
                self.repairs += 1
            content2, finish2, meta2, json_mode2 = self._send(repair)
            replies.append(content2)
            answer2, why2 = check_answer(content2, finish2, json_mode2)
            if answer2 is not None:
                return _Outcome(
                    "ok",
                    answer2,
                    raw_replies=tuple(replies),
                    meta={**meta2, "attempts": meta["attempts"] + meta2["attempts"], "repaired": True},
                )
            best = content2 or content
            return _Outcome(
                "malformed",
                best,
                error=f"malformed answer after one repair request: {why2}",
                raw_replies=tuple(replies),
            )
        except _RequestFailed as e:
            err = str(e)
        # Built here, outside the except block: no chained exception can carry the key.
        raw = next((r for r in reversed(replies) if r), "")
        return _Outcome("failed", raw, error=err, raw_replies=tuple(replies))


def make_client(cfg: LLMConfig, api_key: str) -> Any:
    """An ``openai.OpenAI`` client (its own retries off: ours are logged and bounded)."""
    from openai import OpenAI

    return OpenAI(api_key=api_key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout_s)


def _estimate_tokens(messages: list[dict[str, str]]) -> int:
    return sum(math.ceil(len(m.get("content") or "") / 4) + 4 for m in messages)


def answer_reports(
    texts: Sequence[str],
    cfg: LLMConfig,
    prompt: Prompt,
    log: logging.Logger | None = None,
    client: Any = None,
    *,
    dry_run: bool = False,
    raise_on_failure: bool = True,
) -> AnswerBatch | DryRunEstimate:
    """Answers for ``texts`` (in order): cached ones from disk, the rest requested.

    Identical texts are requested once. Every new well-formed answer is cached as soon as it
    arrives, so an interrupted run loses at most the requests in flight. Returns an
    :class:`AnswerBatch` (a list of :class:`LLMAnswer`, with ``.summary``). Reports that end
    ``malformed`` come back with their raw reply; reports that end ``failed`` make the call
    raise :class:`LLMBatchError` (with ``.batch``) after the whole batch, unless
    ``raise_on_failure=False``. ``dry_run=True`` sends nothing, needs no key and returns a
    :class:`DryRunEstimate`.
    """
    log = log or LOG
    if prompt.shape != "system" and cfg.structured == "json":
        raise ValueError(
            f"prompt {prompt.version} has the {prompt.shape!r} shape (';'-joined text answers, as the "
            f"FiVE authors asked): reports.openai.structured: json does not apply. Fix: set it to auto "
            f"or text, or use a prompt with the system shape (five-v1)"
        )
    t0 = time.perf_counter()
    cache = AnswerCache(cfg.cache_dir)
    keys = [report_cache_key(t, cfg, prompt) for t in texts]
    found: dict[str, LLMAnswer] = {}
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if k in found or k in todo:
            continue
        entry = cache.get(k)
        if entry is not None:  # the key covers the prompt's hash: a cached answer always fits this prompt
            found[k] = LLMAnswer(key=k, answer=entry["answer"], cached=True)
        else:
            todo[k] = t
    summary = RunSummary(reports=len(found) + len(todo), cache_hits=len(found))
    if dry_run:
        json_mode = _json_mode(cfg, prompt)
        est = DryRunEstimate(
            reports=summary.reports,
            cache_hits=len(found),
            requests=len(todo),
            est_prompt_tokens=sum(_estimate_tokens(_messages(prompt, t, json_mode)) for t in todo.values()),
            est_completion_tokens=ASSUMED_COMPLETION_TOKENS * len(todo),
        )
        log.info("%s", est.line())
        return est
    log.info(
        "LLM answers: %d cached, %d to request (model %s, prompt %s)", len(found), len(todo), cfg.model, prompt.version
    )
    if todo:
        secret = read_api_key(cfg.api_key_env)
        requester = _Requester(cfg, prompt, client if client is not None else make_client(cfg, secret), secret)
        with ThreadPoolExecutor(max_workers=cfg.max_concurrency) as pool:
            futures = {pool.submit(requester, t): k for k, t in todo.items()}
            with tqdm(total=len(futures), desc="LLM answers", unit="report", disable=None) as bar:
                for fut in as_completed(futures):
                    k = futures[fut]
                    bar.update(1)
                    out: _Outcome = fut.result()
                    found[k] = LLMAnswer(
                        key=k,
                        answer=out.answer,
                        cached=False,
                        status=out.status,
                        error=out.error,
                        raw_replies=out.raw_replies,
                    )
                    if out.status != "ok":
                        log.warning("LLM report %s %s: %s", k[:12], out.status, out.error[:300])
                        continue
                    cache.put(
                        k,
                        {
                            "key": k,
                            "answer": out.answer,
                            "backend": BACKEND,
                            "model": cfg.model,
                            "base_url": cfg.base_url,
                            "prompt_version": prompt.version,
                            "prompt_sha256": prompt.sha256,
                            "temperature": cfg.temperature,
                            "structured": cfg.structured,
                            "report_sha256": hashlib.sha256(todo[k].encode("utf-8")).hexdigest(),
                            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            **out.meta,
                        },
                    )
        summary.requests, summary.repairs = requester.requests, requester.repairs
        summary.not_sent = requester.not_sent
        summary.prompt_tokens, summary.completion_tokens = requester.prompt_tokens, requester.completion_tokens
        summary.structured = "json" if requester.json_mode else "text"
    new = [found[k] for k in todo]
    summary.answered = sum(a.status == "ok" for a in new)
    summary.malformed = sum(a.status == "malformed" for a in new)
    summary.failed = sum(a.status == "failed" for a in new)
    summary.seconds = round(time.perf_counter() - t0, 3)
    log.info("%s", summary.line())
    batch = AnswerBatch([found[k] for k in keys], summary)
    if summary.failed and raise_on_failure:
        first = next(a for a in new if a.status == "failed")
        raise LLMBatchError(
            f"{summary.failed} of {len(todo)} LLM request(s) failed (answers that succeeded are cached; "
            f"rerun to retry the rest). First error: {first.error}",
            batch,
        )
    return batch
