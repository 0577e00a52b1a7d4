#!/usr/bin/env python3
"""Open a Snakemake HTML report in headless Chromium, show one result, screenshot it, check it is not blank.

    .venv/bin/python tools/screenshot_report.py results/report.html [--out results/report_screenshots]
        [--show fewshot.html --show fewshot.png ...]

Writes one PNG per shown result to --out and prints the measured numbers (fraction of non-white
pixels, distinct colours, for plots how many of the image's main colours are on screen) as JSON.
Exit status 0 when every check passes, 1 when one fails, 2 without Chromium (install it: Debian
``apt-get install chromium``; or point $CHROMIUM at a Chrome/Chromium binary). The tests import this
file as the module ``screenshot_report`` (tests/test_report_html.py, tests/test_workflow_e2e.py); it is
a tool of the checkout, not part of the fiveflow package.

How: the Snakemake (>= 8) report is a single-page React app with no URL routing: the result shown depends on
clicks. To show a given result without a DevTools client, a copy of the report gets a small script
appended that, once the page has loaded, calls the app's own navigation (``app.showCategory`` and
``app.setView``, as the result's "eye" button does) and records what it showed in ``data-fiveflow-*``
attributes of ``<body>``. Chromium then takes a ``--screenshot`` of that copy, and ``--dump-dom`` of it
gives the DOM after the script ran. The report itself is never modified.

Images (png/svg/jpeg) are shown as ``<img>`` in the content pane, HTML results in an ``<iframe>``;
Snakemake offers csv, tsv, md and parquet results only as downloads.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from fiveflow.fileio import atomic_path
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from fiveflow.fileio import atomic_path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1400, 900)

_DRIVER = """
<script>
window.addEventListener("load", function () { setTimeout(function () {
  var body = document.body;
  try {
    var target = %(target)s;
    var path = Object.keys(results).find(function (p) { return p === target || p.endsWith("/" + target); });
    if (path === undefined) { throw new Error("no result named " + target + " in this report"); }
    var cat = Object.keys(categories).find(function (c) {
      return Object.values(categories[c]).some(function (l) { return l.indexOf(path) >= 0; }); });
    var mime = results[path].mime_type;
    var content = mime.indexOf("image/") === 0 ? "img" : (mime === "text/html" ? "html" :
                  (mime === "application/pdf" ? "pdf" : null));
    if (content === null) { throw new Error(path + " (" + mime + ") is download-only in a Snakemake report"); }
    app.showCategory(cat);
    app.setView({navbarMode: "resultinfo", resultPath: path, content: content, contentPath: results[path].data_uri});
    body.setAttribute("data-fiveflow-shown", path);
    body.setAttribute("data-fiveflow-category", cat);
    setTimeout(function () {
      var row = document.querySelector("#app > div");  // [Navbar, ContentDisplay]
      var pane = row.lastElementChild;
      var r = pane.getBoundingClientRect();
      var left = Math.max(r.left, row.firstElementChild.getBoundingClientRect().right);  // never the side bar
      body.setAttribute("data-fiveflow-pane", [left, r.top, r.right - left, r.height].map(Math.round).join(","));
      var img = pane.querySelector("img");
      if (img) {
        var b = img.getBoundingClientRect();
        body.setAttribute("data-fiveflow-img", img.naturalWidth + "x" + img.naturalHeight);
        body.setAttribute("data-fiveflow-imgrect", [b.left, b.top, b.width, b.height].map(Math.round).join(","));
      }
      var frame = pane.querySelector("iframe");
      if (frame) { body.setAttribute("data-fiveflow-iframe", frame.getAttribute("src").slice(0, 120)); }
      body.setAttribute("data-fiveflow-done", "1");
    }, 1500);  // after the side bar's width transition
  } catch (err) { body.setAttribute("data-fiveflow-error", String(err)); body.setAttribute("data-fiveflow-done", "1"); }
}, 200); });
</script>
"""


class ReportCheckError(RuntimeError):
    """The report could not be opened, or what it shows fails a check."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$CHROMIUM`` if set, else the first of CHROMIUM_NAMES on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def report_results(report_html: str | Path) -> tuple[dict, dict]:
    """The report's ``results`` (path -> name, mime_type, caption, data_uri, ...) and ``categories``
    (category -> subcategory -> paths), read from the JSON the report embeds."""
    text = Path(report_html).read_text(errors="replace")
    found = {}
    for var in ("results", "categories"):
        m = re.search(rf"^\s*var {var} = (\{{.*\}});\s*$", text, flags=re.M)
        if m is None:
            raise ReportCheckError(
                f"{report_html}: no 'var {var} = {{...}}' found; is this a Snakemake (>= 8) "
                "HTML report (snakemake --report report.html)?"
            )
        found[var] = json.loads(m.group(1))
    return found["results"], found["categories"]


def find_result(results: dict, target: str) -> str:
    """The report path of the result whose path is ``target`` or ends with ``/target``."""
    hits = [p for p in results if p == target or p.endswith("/" + target)]
    if not hits:
        raise ReportCheckError(f"no result named {target!r} in the report; it has: {sorted(results)}")
    return hits[0]


def decode_data_uri(uri: str) -> bytes:
    return base64.b64decode(uri.split("base64,", 1)[1])


def _driver_copy(report_html: Path, target: str, workdir: Path) -> Path:
    text = report_html.read_text(errors="replace")
    i = text.rfind("</body>")
    if i < 0:
        raise ReportCheckError(f"{report_html}: no </body>; not a complete HTML report")
    out = workdir / "report_driven.html"
    out.write_text(text[:i] + _DRIVER % {"target": json.dumps(target)} + text[i:])
    return out


def _chromium(args: list[str], chromium: str, timeout: int) -> subprocess.CompletedProcess:
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--mute-audio",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
    ]
    with tempfile.TemporaryDirectory(prefix="fiveflow-chromium-") as profile:
        try:
            return subprocess.run(
                base + [f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise ReportCheckError(f"{chromium} did not finish within {timeout} s: {' '.join(args)}") from e


@dataclass
class Shown:
    """What the report showed for one result: the screenshot and the ``data-fiveflow-*`` DOM attributes."""

    target: str
    path: str
    png: Path
    attrs: dict = field(default_factory=dict)

    @property
    def pane(self) -> tuple[int, int, int, int]:
        """Content pane (left, top, width, height) in CSS px (= screenshot px at scale 1)."""
        return tuple(int(v) for v in self.attrs["pane"].split(","))  # type: ignore[return-value]


def show_result(
    report_html: str | Path,
    target: str,
    out_png: str | Path,
    chromium: str | None = None,
    window: tuple[int, int] = WINDOW,
    budget_ms: int = 8000,
    timeout: int = 120,
) -> Shown:
    """Open ``report_html`` in headless Chromium with result ``target`` (a report path or its file
    name) shown in the content pane and its caption in the side bar; write the screenshot to
    ``out_png`` (atomically) and return it with the DOM attributes recorded after rendering."""
    report_html = Path(report_html).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise ReportCheckError("no Chromium found: install it (Debian: apt-get install chromium) or set $CHROMIUM")
    results, _ = report_results(report_html)
    path = find_result(results, target)
    size = f"--window-size={window[0]},{window[1]}"
    budget = f"--virtual-time-budget={budget_ms}"
    with tempfile.TemporaryDirectory(prefix="fiveflow-report-") as tmp:
        driven = _driver_copy(report_html, target, Path(tmp))
        url = driven.as_uri()
        dom = _chromium([size, budget, "--dump-dom", url], chromium, timeout)
        m = re.search(r"<body([^>]*)>", dom.stdout)
        if dom.returncode != 0 or m is None:
            raise ReportCheckError(
                f"chromium --dump-dom failed on {report_html} (rc {dom.returncode}): {dom.stderr[-1500:]}"
            )
        attrs = {k: v for k, v in re.findall(r'data-fiveflow-([a-z]+)="([^"]*)"', m.group(1))}
        if "error" in attrs:
            raise ReportCheckError(f"{report_html}: showing {target!r} failed in the page: {attrs['error']}")
        if attrs.get("done") != "1":
            raise ReportCheckError(
                f"{report_html}: the page did not finish rendering {target!r} within the "
                f"virtual time budget ({budget_ms} ms); body attributes: {attrs}"
            )
        with atomic_path(out_png) as tmp_png:
            shot_file = Path(tmp) / "shot.png"
            shot = _chromium([size, budget, f"--screenshot={shot_file}", url], chromium, timeout)
            if shot.returncode != 0 or not shot_file.exists():
                raise ReportCheckError(
                    f"chromium --screenshot failed on {report_html} (rc {shot.returncode}): {shot.stderr[-1500:]}"
                )
            shutil.copyfile(shot_file, tmp_png)
    return Shown(target=target, path=path, png=Path(out_png), attrs=attrs)


# ---- pixel checks -------------------------------------------------------------------------------------


def load_rgb(png: str | Path | bytes) -> np.ndarray:
    import io

    from PIL import Image

    src = io.BytesIO(png) if isinstance(png, bytes) else png
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def image_stats(rgb: np.ndarray) -> dict:
    """``nonwhite``: fraction of pixels with any channel < 235; ``colours``: distinct colours after
    quantising each channel to 32 levels; ``dark``: fraction of pixels with all channels < 100 (text, lines)."""
    px = rgb.reshape(-1, 3).astype(np.int32)
    q = px // 8
    return {
        "nonwhite": float((px.min(axis=1) < 235).mean()),
        "colours": int(len(np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2]))),
        "dark": float((px.max(axis=1) < 100).mean()),
    }


def is_blank(rgb: np.ndarray, min_nonwhite: float = 0.001, min_colours: int = 8) -> bool:
    """True for an (almost) uniform image: too few non-white pixels or too few distinct colours."""
    s = image_stats(rgb)
    return s["nonwhite"] < min_nonwhite or s["colours"] < min_colours


def displayed_match(
    screenshot: np.ndarray,
    source: np.ndarray,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
    step: int = 4,
    min_visible: float = 0.5,
    near_left: int | None = None,
    slack: int = 24,
) -> tuple[float, tuple[int, int]]:
    """Whether ``source``, drawn at ``size`` (width, height: as the page scaled it), is on screen.

    The screenshot (within ``region`` = left, top, width, height, if given) and the scaled source are
    reduced ``step`` times by box averaging, which tolerates sub-pixel offsets and the browser's own
    resampling; the scaled source is slid over every position (it may run off the right or bottom edge,
    as a wide plot in a narrow pane does, as long as ``min_visible`` of it, or all of the view, is
    covered) and the best Pearson correlation of grey levels over the visible part is returned with its
    (left, top) in screenshot pixels. Near 1: the image is there; near 0: the area is blank or shows
    something else."""
    from PIL import Image

    def grey(a: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
        return np.asarray(Image.fromarray(a).convert("L").resize(wh, Image.BOX), np.float64)

    left, top = (region[0], region[1]) if region else (0, 0)
    shot = crop(screenshot, region) if region else screenshot
    w, h = max(int(size[0]) // step, 1), max(int(size[1]) // step, 1)
    if w < 4 or h < 4 or shot.shape[0] < step * 4 or shot.shape[1] < step * 4:
        return 0.0, (left, top)
    tmpl = grey(source, (w, h))
    if float(tmpl.std()) < 1.0:  # a flat image has no pattern to find: correlation would be round-off
        return 0.0, (left, top)
    view = grey(shot, (shot.shape[1] // step, shot.shape[0] // step))
    vh, vw = view.shape
    best, where = 0.0, (left, top)
    # placements: left within ``slack`` px of ``near_left`` (where the page put it) if given, else anywhere;
    # top anywhere, also above the view (a tall image in a vertically centred pane has its top cut off).
    # A placement counts when its visible part covers >= min_visible of the image, or >= 90% of the most
    # of it that fits in the view; it is scored on the visible part only.
    need = min(min_visible * w * h, 0.9 * min(w, vw) * min(h, vh))
    if near_left is None:
        xs = range(-w + 1, vw)
    else:
        x0 = (near_left - left) // step
        xs = range(x0 - slack // step, x0 + slack // step + 1)
    for y in range(-h + 1, vh):
        for x in xs:
            vx0, vy0, vx1, vy1 = max(x, 0), max(y, 0), min(x + w, vw), min(y + h, vh)
            if vx1 - vx0 < 4 or vy1 - vy0 < 4 or (vx1 - vx0) * (vy1 - vy0) < need:
                continue
            a = view[vy0:vy1, vx0:vx1]
            t = tmpl[vy0 - y : vy1 - y, vx0 - x : vx1 - x]
            a, t = a - a.mean(), t - t.mean()
            denom = np.sqrt((a * a).sum() * (t * t).sum())
            if denom > 0:
                c = float((a * t).sum() / denom)
                if c > best:
                    best, where = c, (left + x * step, top + y * step)
    return best, where


def multiscale_match(
    screenshot: np.ndarray, source: np.ndarray, min_width: int = 120
) -> tuple[float, tuple[int, int], int]:
    """Best normalised cross-correlation of ``source`` anywhere in ``screenshot`` at any drawn width from
    ``min_width`` px to the screenshot's width (aspect kept), as ``(score, (left, top), width)``: a coarse
    pass over widths 32 px apart on blurred grey levels (thin plot lines survive a slightly wrong scale),
    then a fine pass 2 px apart around the best. For when the page lays the image out differently in the
    screenshot run than in the run that measured it (the report's side panel open in one, not the other)."""
    import cv2

    def grey(a: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)

    shot, src = grey(screenshot), grey(source)
    sh, sw = shot.shape

    def score(width: int, sigma: float) -> tuple[float, tuple[int, int]]:
        height = int(round(src.shape[0] * width / src.shape[1]))
        if height < 8 or height > sh or width > sw or width < 8:
            return 0.0, (0, 0)
        tmpl = cv2.GaussianBlur(cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA), (0, 0), sigma)
        if float(tmpl.std()) < 1.0:  # a flat template (float round-off of a blank image) matches any noise
            return 0.0, (0, 0)
        view = cv2.GaussianBlur(shot, (0, 0), sigma)
        res = cv2.matchTemplate(view, tmpl, cv2.TM_CCOEFF_NORMED)
        # a flat window (blank page) has no variance: OpenCV's normalised score is meaningless there
        mean = cv2.boxFilter(view, cv2.CV_64F, (width, height), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
        sq = cv2.boxFilter(
            view.astype(np.float64) ** 2, cv2.CV_64F, (width, height), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT
        )
        std = np.sqrt(np.maximum(sq - mean**2, 0.0))[: res.shape[0], : res.shape[1]]
        res = np.where(np.isfinite(res) & (std > 2.0), res, 0.0).astype(np.float32)
        _, best, _, at = cv2.minMaxLoc(res)
        return float(best), (int(at[0]), int(at[1]))

    coarse = max(range(min_width, sw + 1, 32), key=lambda w: score(w, 4.0)[0], default=min_width)
    best = (0.0, (0, 0), coarse)
    for width in range(max(min_width, coarse - 32), min(sw, coarse + 32) + 1, 2):
        sc, at = score(width, 1.5)
        if sc > best[0]:
            best = (sc, at, width)
    return best


def find_displayed(
    screenshot: np.ndarray, source: np.ndarray, min_match: float = 0.7
) -> tuple[float, tuple[int, int], int]:
    """:func:`multiscale_match` of the whole image, else of its left half (a plot drawn wider than the
    window runs off the right edge, its left half stays on screen), else of a quarter-height band of
    either half (a plot taller than the window, drawn at its natural size, is cut at the top and bottom,
    and the report's side panel may cover its left part: seen in CI with the 792 x 1776 px confusion
    grid, 0.38 for the whole image, 0.999 for a band of its right half); ``width`` is the whole image's."""
    match, at, width = multiscale_match(screenshot, source)
    if match < min_match:
        match, at, width = multiscale_match(screenshot, source[:, : source.shape[1] // 2])
        width *= 2
    h, w = source.shape[:2]
    if match < min_match and h > screenshot.shape[0]:
        for x0, x1 in ((0, w // 2), (w // 2, w)):
            for k in range(4):
                m, a, bw = multiscale_match(screenshot, source[k * h // 4 : (k + 1) * h // 4, x0:x1])
                if m > match:
                    match, at, width = m, a, bw * w // max(x1 - x0, 1)
                if match >= min_match:
                    return match, at, width
    return match, at, width


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, width, height = box
    return rgb[max(top, 0) : top + height, max(left, 0) : left + width]


def check_shown(report_html: str | Path, shown: Shown, min_match: float = 0.7) -> dict:
    """Check a :func:`show_result` screenshot: the content pane is not blank; for an image result the
    ``<img>`` loaded and the screenshot where it is drawn correlates (>= ``min_match``) with the image
    itself (PNG/JPEG); for an HTML result the ``<iframe>`` shows it and text is visible. Returns the measured numbers; raises :class:`ReportCheckError` naming what failed."""
    results, _ = report_results(report_html)
    entry = results[shown.path]
    shot = load_rgb(shown.png)
    pane = crop(shot, shown.pane)
    stats = {
        "target": shown.target,
        "screenshot": list(shot.shape[1::-1]),
        "pane": list(shown.pane),
        **image_stats(pane),
    }
    if is_blank(pane):
        raise ReportCheckError(f"{shown.png}: the content pane showing {shown.path} is blank: {stats}")
    mime = entry["mime_type"]
    if mime.startswith("image/"):
        w, h = (int(v) for v in shown.attrs.get("img", "0x0").split("x"))
        stats["img_natural"] = [w, h]
        if w == 0 or h == 0:
            raise ReportCheckError(f"{shown.path}: the <img> in the report did not load ({shown.attrs})")
        if mime in ("image/png", "image/jpeg"):
            rect = [int(v) for v in shown.attrs.get("imgrect", "0,0,0,0").split(",")]
            source = load_rgb(decode_data_uri(entry["data_uri"]))
            if is_blank(source):
                raise ReportCheckError(f"{shown.path}: the image itself is blank (uniform; {image_stats(source)})")
            match, at = displayed_match(shot, source, (rect[2], rect[3]), region=shown.pane, near_left=rect[0])
            stats["img_size"], stats["img_found_at"], stats["img_match"] = rect[2:], list(at), round(match, 4)
            if match < min_match:  # laid out elsewhere in this run (e.g. the side panel open): look everywhere
                match, at, width = find_displayed(shot, source, min_match)
                stats.update(img_found_at=list(at), img_match=round(match, 4), img_drawn_width=width)
            if match < min_match:
                raise ReportCheckError(
                    f"{shown.png}: {shown.path} is not on screen at the size the page drew it "
                    f"(best correlation {match:.3f} < {min_match}; {stats})"
                )
    elif mime == "text/html":
        src = shown.attrs.get("iframe", "")
        if not src.startswith("data:text/html") or f"filename={entry['filename']}" not in src:
            raise ReportCheckError(f"{shown.path}: no <iframe> showing it in the content pane ({shown.attrs})")
        if stats["dark"] < 0.001:
            raise ReportCheckError(f"{shown.png}: no text visible where {shown.path} should be ({stats})")
    return stats


def screenshot_and_check(
    report_html: str | Path, targets: list[str], out_dir: str | Path, chromium: str | None = None, **kw
) -> list[dict]:
    """:func:`show_result` + :func:`check_shown` for each target; screenshots ``out_dir/<name>.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = []
    for target in targets:
        png = out_dir / (Path(target).name.replace(".", "_") + ".png")
        shown = show_result(report_html, target, png, chromium=chromium, **kw)
        stats.append({**check_shown(report_html, shown), "png": str(png)})
    return stats


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
