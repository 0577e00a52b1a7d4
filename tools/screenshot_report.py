#!/usr/bin/env python3
"""Open a Snakemake HTML report in headless Chromium, screenshot results in it and check they are not blank.

    .venv/bin/python tools/screenshot_report.py results/report.html [--out results/report_screenshots]
        [--show fewshot.html --show fewshot.png ...]

Writes one PNG per shown result to --out and prints the measured numbers (fraction of non-white
pixels, distinct colours, for plots how many of the image's main colours are on screen) as JSON.
Exit status 0 when every check passes, 1 when one fails, 2 without Chromium (install it: Debian
``apt-get install chromium``; or point $CHROMIUM at a Chrome/Chromium binary).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from fiveflow.evaluate.report_screenshot import ReportCheckError, find_chromium, screenshot_and_check
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from fiveflow.evaluate.report_screenshot import ReportCheckError, find_chromium, screenshot_and_check

DEFAULT_SHOW = ["fewshot.html", "fewshot.png", "roc.png", "confusion.png"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="the report, from snakemake --report report.html")
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: <report>_screenshots)")
    ap.add_argument(
        "--show",
        action="append",
        default=None,
        help=f"a result to show, by path or file name (repeatable; default: {' '.join(DEFAULT_SHOW)})",
    )
    ap.add_argument("--window", default="1400x900", help="browser window WIDTHxHEIGHT (default 1400x900)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(
            f"error: no report at {args.report}; make it with tools/snakemake.sh --cores 1 --report {args.report}",
            file=sys.stderr,
        )
        return 1
    chromium = find_chromium()
    if chromium is None:
        print(
            "error: headless Chromium not found; install it (Debian: apt-get install chromium) or set $CHROMIUM",
            file=sys.stderr,
        )
        return 2
    w, h = (int(v) for v in args.window.lower().split("x"))
    out = args.out or args.report.with_name(args.report.stem + "_screenshots")
    try:
        stats = screenshot_and_check(args.report, args.show or DEFAULT_SHOW, out, chromium=chromium, window=(w, h))
    except ReportCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
