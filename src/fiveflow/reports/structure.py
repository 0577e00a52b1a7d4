"""Reports CSV -> six FiVE answers per patient (any backend) -> the labels Parquet of CONTRACTS.md.

Backends (``reports.backend``):

* ``offline``: :mod:`fiveflow.reports.offline` rules; no network; ``model`` = ``rules-v8``. The
  descriptions answer the six questions only; ``reports.name_histotype: true`` (an opt-in extension that
  leaks the class label) names the histologic type after the grade, and ``model`` = ``rules-v8+histotype``.
* ``openai``: :mod:`fiveflow.reports.llm` against any OpenAI-compatible server (``reports.openai``).
  A report whose requests fail for good (after the client's retries) gets the flag ``llm_failed`` and
  all fields unknown; when more than ``reports.openai.max_failed_share`` (default 0) of the reports
  sent failed, the labels are written anyway (for inspection) and then
  :class:`fiveflow.reports.llm.LLMFailuresError` is raised, so the CLI and the workflow rule fail
  and a rerun retries only the failures (succeeded answers are cached). A ``malformed`` reply (still
  not six phrases after the repair request) is not a failure: it is kept, repaired and flagged.
* ``precomputed``: answers already made elsewhere (e.g. the FiVE authors' GPT-4 answers), a CSV
  with ``patient_id`` (or ``patient_filename``) and ``answer`` (``reports.precomputed``), matched to
  the reports by patient id after the same id cleaning (:mod:`fiveflow.ids`).

Whatever the backend, the answers go through :func:`fiveflow.reports.normalize.normalize_answer`
(offline answers are canonical already), so the categorical columns mean the same everywhere.
Extra columns next to the contract's: ``answer_raw`` (the backend's answer as given),
``flag`` (empty, or what was repaired: ``empty``, ``padded:N``, ``merged:N``, ``lines``,
``empty_report``, ``missing_answer``, ``no_text``, ``unreadable``, ``llm_failed``), and the report input's
``status`` (``ok``, ``empty``, ``no_text``, ``unreadable``) and ``reason`` (why it was not usable).
Reports are read by :mod:`fiveflow.reports.inputs` (tables, or folders of .txt/.pdf files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .. import __version__
from ..config import answer_files
from ..fileio import atomic_path, file_sha256
from ..logs import logging_to
from ..settings import with_defaults
from . import backend_name, llm, offline
from .inputs import patient_ids, read_report_inputs, read_table
from .normalize import FIELDS, SEP, UNKNOWN, normalize_answer
from .prompts import Prompt, load_prompt

LOG = logging.getLogger("fiveflow.reports")
BACKENDS = ("offline", "openai", "precomputed")
COLUMNS = [
    "patient_id",
    *FIELDS,
    "description",
    "backend",
    "model",
    "prompt_version",
    "prompt_sha256",
    "answer_raw",
    "flag",
    "status",
    "reason",
]


def read_reports(
    path: str | os.PathLike,
    need_text: bool = True,
    *,
    id_column: str | None = None,
    text_column: str | None = None,
) -> pd.DataFrame:
    """Reports -> DataFrame(patient_id, text, source, status, reason), one row per patient.

    Any input :func:`fiveflow.reports.inputs.read_report_inputs` accepts (a CSV/TSV/Parquet table,
    a folder of .txt/.pdf reports). A patient with several reports gets their texts joined by a
    blank line, in file order; reports that could not be used have ``status`` != ``ok``.
    """
    return read_report_inputs(path, id_column, text_column, need_text=need_text)


def read_precomputed(path: str | os.PathLike | list | tuple, answer_column: str = "answer") -> pd.DataFrame:
    """Answers table(s) (CSV/TSV/Parquet/Excel) -> DataFrame(patient_id, answer); the first answer per patient wins.

    ``path`` may be a list of files (e.g. the FiVE authors' LUAD and LUSC workbooks), read in order.
    Read strictly like the reports (:func:`fiveflow.reports.inputs.read_table`) and with their id
    policy (:func:`fiveflow.reports.inputs.patient_ids`), so an answer for ``José 01`` matches the
    report of ``José 01`` (both ``Jose_01``).
    """
    if not isinstance(path, (str, os.PathLike)):
        parts = [read_precomputed(p, answer_column) for p in answer_files(path)]
        if not parts:
            raise ValueError("reports.precomputed: an empty list. Fix: give the answers file(s)")
        out = pd.concat(parts, ignore_index=True)
        dup = out["patient_id"].duplicated()
        if dup.any():
            LOG.warning(
                "%s: %d patient(s) answered in more than one file; keeping the first file's answer",
                ", ".join(str(p) for p in path),
                int(dup.sum()),
            )
        return out[~dup].reset_index(drop=True)
    path = Path(path)
    df = read_table(path)
    ids = patient_ids(df, path, kind="answers patient")
    if answer_column not in df.columns:
        raise ValueError(
            f"{path}: needs an `{answer_column}` column (six answers joined by ';'); found columns: "
            f"{list(df.columns)}. Fix: set reports.answer_column to the column holding the answers."
        )
    out = pd.DataFrame({"patient_id": ids, "answer": df[answer_column].astype(str)})
    dup = out["patient_id"].duplicated()
    if dup.any():
        LOG.warning("%s: %d duplicate patient(s); keeping each patient's first answer", path, int(dup.sum()))
        out = out[~dup]
    return out.reset_index(drop=True)


def _run_offline(texts: list[str], name_histotype: bool = False) -> list[tuple[dict[str, str], str, str, str]]:
    rows = []
    for t in tqdm(texts, desc="offline rules", unit="report", disable=None):
        res = offline.extract(t, name_histotype=name_histotype)
        rows.append((res.labels, res.answer, res.answer, ""))
    return rows


def _from_answers(answers: list[str | None]) -> list[tuple[dict[str, str], str, str, str]]:
    rows = []
    for a in answers:
        na = normalize_answer(a)
        rows.append((na.labels, na.description, na.raw, na.flag))
    return rows


def structure_reports(
    reports_csv: str | os.PathLike,
    out_parquet: str | os.PathLike,
    cfg: dict,
    log: logging.Logger | str | os.PathLike | None = None,
    *,
    questions: str | os.PathLike | None = None,
    client: Any = None,
    id_column: str | None = None,
    text_column: str | None = None,
    patients: Any = None,
) -> pd.DataFrame:
    """Structure every patient's report into the six FiVE answers; write the labels Parquet.

    ``cfg`` is the ``reports`` section of config.yaml (keys: ``backend``, ``precomputed``,
    ``openai``, ``name_histotype``: the rules backend names the histologic type only when true). ``questions`` overrides resources/questions/five-v1.yaml; ``client`` injects an
    OpenAI-compatible client (tests). ``reports_csv`` may be any input
    :func:`fiveflow.reports.inputs.read_report_inputs` accepts (``id_column``/``text_column`` name
    a table's columns). Reports that could not be used (``status`` empty/no_text/unreadable) are
    kept as rows with every field unknown, their status and the reason. Returns the table written.
    With the ``openai`` backend, raises :class:`fiveflow.reports.llm.LLMFailuresError` after writing
    the table when more reports failed than ``reports.openai.max_failed_share`` tolerates.
    ``patients`` (ids, cleaned like the samples sheet's): structure only these patients' reports (the
    workflow passes the cohort's, so a corpus of all TCGA projects costs nothing for the others); a
    table none of whose ids is among them is an error.
    """
    with logging_to(log, LOG.name) as logger:
        return _structure(
            Path(reports_csv),
            Path(out_parquet),
            cfg,
            logger,
            questions,
            client,
            id_column=id_column,
            text_column=text_column,
            patients=patients,
        )


def estimate_llm_cost(
    reports: str | os.PathLike,
    cfg: dict,
    questions: str | os.PathLike | None = None,
    *,
    id_column: str | None = None,
    text_column: str | None = None,
) -> llm.DryRunEstimate:
    """What the ``openai`` backend would send for these reports (cache hits excluded); sends nothing."""
    prompt = load_prompt(questions)
    rep = read_reports(reports, id_column=id_column, text_column=text_column)
    texts = [t for t, st in zip(rep["text"], rep["status"]) if st == "ok" and t.strip()]
    return llm.answer_reports(texts, llm.LLMConfig.from_cfg((cfg or {}).get("openai")), prompt, dry_run=True)


def _structure(
    reports_csv: Path,
    out_parquet: Path,
    cfg: dict,
    log: logging.Logger,
    questions: Any,
    client: Any,
    *,
    id_column: str | None = None,
    text_column: str | None = None,
    patients: Any = None,
) -> pd.DataFrame:
    cfg = with_defaults(cfg, "reports")
    backend = backend_name(cfg["backend"])
    if backend not in BACKENDS:
        raise ValueError(
            f"reports.backend: {backend!r} is not one of rules (= offline), openai, import (= precomputed)"
        )
    prompt: Prompt = load_prompt(questions)
    reports = read_reports(
        reports_csv, need_text=backend != "precomputed", id_column=id_column, text_column=text_column
    )
    if patients is not None:  # a corpus of many cohorts (TCGA-Reports: ~9,500): only this cohort's patients
        keep = reports["patient_id"].isin(set(patients))
        log.info(
            "%s: %d of %d patient(s) are in the cohort; the other reports are not structured",
            reports_csv,
            int(keep.sum()),
            len(reports),
        )
        if not keep.any():
            raise ValueError(
                f"{reports_csv}: none of its {len(reports)} patient id(s) is a patient of the cohort "
                f"(e.g. {reports['patient_id'].head(3).tolist()} vs {sorted(set(patients))[:3]}). Fix: "
                "check the report table belongs to this cohort, and its id column (reports.id_column)"
            )
        reports = reports[keep].reset_index(drop=True)
    texts = reports["text"].tolist()
    statuses, reasons = reports["status"].tolist(), reports["reason"].tolist()
    empty = [st != "ok" or not t.strip() for st, t in zip(statuses, texts)]
    meta: dict[str, Any] = {"backend": backend, "prompt_version": prompt.version, "prompt_sha256": prompt.sha256}
    failed: list[llm.LLMAnswer] = []  # openai: reports whose requests failed for good
    name_histotype = bool(cfg["name_histotype"])
    if name_histotype and backend != "offline":
        log.warning("reports.name_histotype applies to the rules backend only; the %s backend ignores it", backend)

    if backend == "offline":
        model, version, phash = offline.model_name(name_histotype), prompt.version, prompt.sha256
        meta["name_histotype"] = name_histotype
        if name_histotype:
            log.warning(
                "reports.name_histotype: the descriptions name the histologic type (the class label) after "
                "the grade: an extension, not the FiVE method (model %s)",
                model,
            )
        rows = _run_offline(texts, name_histotype)
    elif backend == "openai":
        lcfg = llm.LLMConfig.from_cfg(cfg.get("openai"))
        model, version, phash = lcfg.model, prompt.version, prompt.sha256
        idx = [i for i, e in enumerate(empty) if not e]
        # every report ends answered or recorded as failed; failures are not cached, so a rerun retries them
        got = llm.answer_reports([texts[i] for i in idx], lcfg, prompt, log=log, client=client, raise_on_failure=False)
        answers: list[str | None] = [None] * len(texts)
        for i, a in zip(idx, got):
            answers[i] = a.answer if a.status != "failed" else None
        rows = _from_answers(answers)
        for i, a in zip(idx, got):
            if a.status == "failed":  # all fields unknown; the raw reply (or the error) kept for the audit
                rows[i] = (rows[i][0], rows[i][1], (a.raw_replies[-1] if a.raw_replies else a.error), "llm_failed")
        failed = [a for a in got if a.status == "failed"]  # per patient; malformed replies are kept (flagged)
        n_malformed = sum(a.status == "malformed" for a in got)
        if n_malformed:
            log.warning(
                "%d report(s) got a malformed LLM answer even after the repair request: kept, repaired and "
                "flagged (see the `flag` column); a rerun asks again",
                n_malformed,
            )
        sm = got.summary
        meta.update(
            temperature=lcfg.temperature,
            n_cached=sum(a.cached for a in got),
            requests=sm.requests,
            prompt_tokens=sm.prompt_tokens,
            completion_tokens=sm.completion_tokens,
            n_failed=len(failed),
            n_malformed=n_malformed,
            max_failed_share=float(lcfg.max_failed_share),
        )
    else:
        srcs = answer_files(cfg.get("precomputed"))
        if not srcs:
            raise ValueError(
                "reports.precomputed: set it to a CSV with patient_id (or patient_filename) and answer "
                "columns (or a list of such files) when reports.backend is `import` (= precomputed)"
            )
        src = srcs[0] if len(srcs) == 1 else ", ".join(str(p) for p in srcs)
        pre = read_precomputed(srcs, cfg["answer_column"])
        lookup = dict(zip(pre["patient_id"], pre["answer"]))
        answers = [lookup.get(p) for p in reports["patient_id"]]
        missing = sum(a is None for a in answers)
        if missing:
            log.warning(
                "%s: no answer for %d of %d patient(s): their labels are all unknown", src, missing, len(answers)
            )
        extra = len(set(lookup) - set(reports["patient_id"]))
        if extra:
            log.info("%s: %d answer(s) for patients not in %s ignored", src, extra, reports_csv)
        # answers made elsewhere: the hash of the answers file(s) stands for the prompt
        phash = (
            file_sha256(srcs[0])
            if len(srcs) == 1
            else hashlib.sha256("\n".join(file_sha256(p) for p in srcs).encode()).hexdigest()
        )
        model, version = "precomputed", f"external:{phash[:12]}"
        rows = _from_answers(answers)
        empty = [False] * len(texts)
        for i, a in enumerate(answers):
            if a is None:
                rows[i] = (rows[i][0], rows[i][1], "", "missing_answer")
        meta["answers_file"] = ", ".join(p.name for p in srcs)

    records = []
    for pid, is_empty, status, reason, (labels, desc, raw, flag) in zip(
        reports["patient_id"], empty, statuses, reasons, rows
    ):
        if is_empty:
            labels = {f: "unknown" for f in FIELDS}
            desc, raw = SEP.join([UNKNOWN] * len(FIELDS)), ""
            flag = "empty_report" if status in ("ok", "empty") else status
        records.append(
            {
                "patient_id": pid,
                **labels,
                "description": desc,
                "backend": backend,
                "model": model,
                "prompt_version": version,
                "prompt_sha256": phash,
                "answer_raw": raw,
                "flag": flag,
                "status": status,
                "reason": reason,
            }
        )
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    meta.update(model=model, n_patients=len(df), fiveflow_version=__version__)
    _write_parquet(df, out_parquet, meta)
    if failed:
        _check_failures(failed, len(idx), lcfg, out_parquet, log)

    repaired = df["flag"].str.match(r"^(?:padded|merged|lines)").sum()
    if repaired:
        log.warning(
            "%d answer(s) did not have six ';'-separated phrases and were repaired (see the `flag` column): %s",
            repaired,
            json.dumps(df.loc[df["flag"].ne(""), "flag"].value_counts().to_dict()),
        )
    unusable = df["status"].ne("ok")
    if unusable.any() and backend != "precomputed":
        log.warning(
            "%d report(s) could not be used (labels all unknown; see the `status` and `reason` columns): %s",
            int(unusable.sum()),
            json.dumps(df.loc[unusable, "status"].value_counts().to_dict()),
        )
    flagged = df["flag"].ne("").sum()
    log.info(
        "reports: %d patient(s) via %s (%s, prompt %s); %d flagged; %d unique description(s)",
        len(df),
        backend,
        model,
        version,
        flagged,
        df["description"].nunique(),
    )
    for f in FIELDS:
        log.info("  %-18s %s", f, json.dumps(df[f].value_counts().to_dict()))
    return df


def _check_failures(
    failed: list[llm.LLMAnswer], n_total: int, lcfg: llm.LLMConfig, out: Path, log: logging.Logger
) -> None:
    """Raise :class:`fiveflow.reports.llm.LLMFailuresError` when more reports ended ``failed`` than
    ``reports.openai.max_failed_share`` tolerates (default 0: any); else warn. The labels are written already."""
    n, share = len(failed), float(lcfg.max_failed_share)
    first = " ".join(str(failed[0].error).split())[:400].rstrip(".")  # redacted by the requester; one line
    if n / n_total > share:
        raise llm.LLMFailuresError(
            f"{n} of {n_total} report(s) got no LLM answer (failed after the client's retries); first error: "
            f"{first}. The labels were written to {out} with those rows flagged llm_failed (all fields unknown) "
            f"for inspection. Answers that succeeded are cached in {lcfg.cache_dir}, so a rerun retries only the "
            f"failures: fix the server (reports.openai.base_url, model, key) and run again. To accept a share of "
            f"failed reports instead, set reports.openai.max_failed_share (now {share:g}; e.g. 0.05).",
            n,
            n_total,
            out,
        )
    log.warning(
        "%d of %d report(s) got no LLM answer (within reports.openai.max_failed_share=%g): their labels are "
        "all unknown (flag llm_failed); first error: %s. A rerun retries only them (in the workflow: "
        "--forcerun reports)",
        n,
        n_total,
        share,
        first,
    )


def _write_parquet(df: pd.DataFrame, out: Path, meta: dict) -> None:
    """Atomic Parquet write with the run's provenance in the schema metadata (``fiveflow.reports``)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[b"fiveflow.reports"] = json.dumps(meta, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
