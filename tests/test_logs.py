"""fiveflow.logs: the console and rule-log formats, and a log file for one call."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap

from fiveflow.logs import logging_to

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: root logging set-up must not touch pytest's."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_console_setup_has_no_timestamps_and_keeps_an_existing_setup(tmp_path):
    run = _python(
        """
        import logging
        from fiveflow.logs import setup_logging
        setup_logging()
        setup_logging(timestamps=True)  # a second call keeps the first set-up
        logging.getLogger("fiveflow.train").info("epoch %d/%d", 1, 2)
        logging.getLogger("fiveflow.train").debug("not shown")
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "INFO fiveflow.train: epoch 1/2\n"


def test_rule_script_writes_the_rule_log_and_fails_clearly(tmp_path):
    code = """
        import logging, sys
        from types import SimpleNamespace
        from fiveflow.rule_script import run_script

        def main(smk, log):
            log.info("hello %s", "rule")
            logging.getLogger("fiveflow.reports").warning("a library warning")
            print("printed")
            if sys.argv[-1] == "fail":
                raise ValueError("bad input")

        run_script(SimpleNamespace(log=["logs/demo.log"], rule="demo", threads=1), main)
        """
    (tmp_path / "logs").mkdir()  # Snakemake makes the log's folder before the job starts
    ok = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), "ok"], capture_output=True, text=True, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    text = (tmp_path / "logs" / "demo.log").read_text()
    assert re.search(rf"^{STAMP} INFO fiveflow\.demo: hello rule$", text, re.M), text
    assert re.search(rf"^{STAMP} WARNING fiveflow\.reports: a library warning$", text, re.M), text
    assert re.search(rf"^{STAMP} INFO fiveflow\.demo: demo done in [\d.]+ s$", text, re.M), text
    assert "printed\n" in text and ok.stderr == ""

    bad = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), "fail"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode == 1
    assert bad.stderr == "[fiveflow] rule demo: bad input\n(see logs/demo.log)\n"
    text = (tmp_path / "logs" / "demo.log").read_text()
    assert re.search(rf"^{STAMP} ERROR fiveflow\.demo: demo failed: bad input$", text, re.M), text
    assert "Traceback" in text and "ValueError: bad input" in text


def test_logging_to_a_path_adds_a_file_for_the_call_only(tmp_path):
    logger = logging.getLogger("fiveflow")
    level, handlers = logger.level, list(logger.handlers)
    path = tmp_path / "new" / "run.log"
    with logging_to(path) as log:
        assert log is logger
        log.info("pretrain epoch %d/%d", 2, 2)
        logging.getLogger("fiveflow.train").warning("a child's record")
    log.info("after the call")
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"{STAMP} INFO fiveflow: pretrain epoch 2/2", lines[0])
    assert re.fullmatch(rf"{STAMP} WARNING fiveflow\.train: a child's record", lines[1])
    assert logger.level == level and logger.handlers == handlers


def test_logging_to_a_logger_or_none_changes_nothing(tmp_path):
    mine = logging.getLogger("fiveflow.test_logs.mine")
    mine.setLevel(logging.WARNING)
    with logging_to(mine) as log:
        assert log is mine
    assert mine.level == logging.WARNING and not mine.handlers
    reports = logging.getLogger("fiveflow.reports")
    level, handlers = reports.level, list(reports.handlers)
    with logging_to(None, "fiveflow.reports") as log:
        assert log is reports
    assert reports.level == level and reports.handlers == handlers
