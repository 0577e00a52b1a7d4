"""OpenAI-compatible LLM backend: one chat request per report, cached on disk, retried, bounded.

* The API key is read from the environment variable *named* by ``api_key_env`` (never from
  config) and only when a request must actually be sent: a fully cached rerun needs no key.
  The key never reaches logs, cache files, exceptions or outputs (errors are rebuilt from the
  status code and a redacted message, outside the ``except`` block, so no original exception
  carrying it is chained).
* Cache: one JSON file per answer, ``{cache_dir}/{key}.json``, key = sha256 of (prompt version,
  model, report text); written atomically. Changing ``prompt_version`` changes every key.
* Transient failures (HTTP 408/409/429/5xx, timeouts, connection errors) are retried with
  exponential backoff and jitter, honouring ``Retry-After``; other errors fail at once.
* Up to ``max_concurrency`` requests run in parallel threads; progress is shown with tqdm.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ..io import atomic_write_text
from .prompts import Prompt

LOG = logging.getLogger("fiveflow.reports.llm")
TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class LLMError(RuntimeError):
    """An LLM request failed for good (after retries, or with a non-transient error)."""


class MissingAPIKeyError(LLMError):
    """The environment variable that should hold the API key is unset or empty."""


@dataclass(frozen=True)
class LLMConfig:
    """The ``reports.openai`` config section, plus retry knobs (not config keys)."""

    model: str = "gpt-4"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_concurrency: int = 4
    cache_dir: str = "results/reports/cache"
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 120.0

    @classmethod
    def from_cfg(cls, cfg: dict | None, **overrides: Any) -> "LLMConfig":
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
        return out


@dataclass(frozen=True)
class LLMAnswer:
    """One report's raw answer and where it came from."""

    key: str
    answer: str
    cached: bool


def cache_key(prompt_version: str, model: str, report_text: str) -> str:
    """sha256 over (prompt version, model, report text), NUL-separated."""
    h = hashlib.sha256()
    for part in (prompt_version, model, report_text):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


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
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("answer"), str):
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

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    status = _status_of(exc)
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


class _Requester:
    """Sends one report's chat request with retries; safe to call from several threads."""

    def __init__(self, cfg: LLMConfig, prompt: Prompt, client: Any, secret: str):
        self.cfg, self.prompt, self.client, self._secret = cfg, prompt, client, secret
        self._rng = random.Random()
        self._lock = threading.Lock()

    def _sleep_for(self, attempt: int, exc: BaseException) -> float:
        base = min(self.cfg.max_backoff_s, self.cfg.backoff_s * (2 ** attempt))
        with self._lock:
            delay = base * (0.5 + 0.5 * self._rng.random())
        ra = _retry_after(exc)
        return min(self.cfg.max_backoff_s, max(delay, ra)) if ra is not None else delay

    def __call__(self, report: str) -> tuple[str, dict]:
        messages = self.prompt.messages(report)
        failure: tuple[str, int | None, str, int] = ("unknown", None, "", 0)
        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(
                    model=self.cfg.model, messages=messages, temperature=self.cfg.temperature
                )
                content = resp.choices[0].message.content if resp.choices else None
                usage = getattr(resp, "usage", None)
                meta = {
                    "response_model": getattr(resp, "model", None),
                    "usage": usage.model_dump() if hasattr(usage, "model_dump") else None,
                    "attempts": attempt + 1,
                }
                return (content or "").strip(), meta
            except Exception as exc:  # noqa: BLE001 - classified below, never re-raised as is
                status = _status_of(exc)
                msg = redact(str(exc), self._secret)[:500]
                if _is_transient(exc) and attempt < self.cfg.max_retries:
                    delay = self._sleep_for(attempt, exc)
                    LOG.warning(
                        "transient LLM error (%s, status %s), retry %d/%d in %.1fs",
                        type(exc).__name__, status, attempt + 1, self.cfg.max_retries, delay,
                    )
                    time.sleep(delay)
                    continue
                failure = (type(exc).__name__, status, msg, attempt + 1)
                break
        # Raised here, outside the except block: no chained exception can carry the key.
        name, status, msg, attempts = failure
        raise LLMError(
            f"LLM request to model {self.cfg.model!r} failed ({name}, HTTP status {status}) "
            f"after {attempts} attempt(s): {msg}"
        )


def make_client(cfg: LLMConfig, api_key: str) -> Any:
    """An ``openai.OpenAI`` client (its own retries off: ours are logged and bounded)."""
    from openai import OpenAI

    return OpenAI(api_key=api_key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout_s)


def answer_reports(
    texts: Sequence[str],
    cfg: LLMConfig,
    prompt: Prompt,
    log: logging.Logger | None = None,
    client: Any = None,
) -> list[LLMAnswer]:
    """Raw LLM answers for ``texts`` (in order): cached ones from disk, the rest requested.

    Identical texts are requested once. Every new answer is cached as soon as it arrives, so an
    interrupted run loses at most the requests in flight.
    """
    log = log or LOG
    cache = AnswerCache(cfg.cache_dir)
    keys = [cache_key(prompt.version, cfg.model, t) for t in texts]
    found: dict[str, str] = {}
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if k in found or k in todo:
            continue
        entry = cache.get(k)
        if entry is not None:
            found[k] = entry["answer"]
            if entry.get("prompt_sha256") not in (None, prompt.sha256):
                log.warning(
                    "cached answer %s was made with a different prompt text under the same prompt_version "
                    "%r: bump prompt_version in questions.yaml after editing the prompt", k[:12], prompt.version
                )
        else:
            todo[k] = t
    log.info("LLM answers: %d cached, %d to request (model %s, prompt %s)", len(found), len(todo), cfg.model, prompt.version)
    if todo:
        secret = read_api_key(cfg.api_key_env)
        requester = _Requester(cfg, prompt, client if client is not None else make_client(cfg, secret), secret)
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=cfg.max_concurrency) as pool:
            futures = {pool.submit(requester, t): k for k, t in todo.items()}
            with tqdm(total=len(futures), desc="LLM answers", unit="report", disable=None) as bar:
                for fut in as_completed(futures):
                    k = futures[fut]
                    bar.update(1)
                    try:
                        answer, meta = fut.result()
                    except LLMError as e:
                        errors.append(str(e))
                        continue
                    found[k] = answer
                    if answer:
                        cache.put(k, {
                            "key": k,
                            "answer": answer,
                            "model": cfg.model,
                            "prompt_version": prompt.version,
                            "prompt_sha256": prompt.sha256,
                            "temperature": cfg.temperature,
                            "report_sha256": hashlib.sha256(todo[k].encode("utf-8")).hexdigest(),
                            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            **meta,
                        })
        if errors:
            raise LLMError(
                f"{len(errors)} of {len(todo)} LLM request(s) failed (answers that succeeded are cached; "
                f"rerun to retry the rest). First error: {errors[0]}"
            )
    cached_keys = set(keys) - set(todo)
    return [LLMAnswer(key=k, answer=found[k], cached=k in cached_keys) for k in keys]
