"""The Snakemake HTML report: HTML tables for it, and headless-Chromium screenshots that must show them.

Fast tests cover the HTML table renderers and the blank/colour checks on synthetic images. The
Chromium tests build a real Snakemake report from a two-rule workflow (seconds) that writes the
few-shot HTML table and plot with fiveflow's own code and marks them with ``report(...)`` as
workflow/rules/evaluate.smk does; the full pipeline's report is screenshotted in
test_workflow_e2e.py::test_html_report with :func:`assert_report_renders`.
Without Chromium these tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fiveflow.evaluate.tables import ablation_html, ablation_table, evaluate_predictions, to_html

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "tools"))  # the screenshot check is a tool of the checkout, not the package

from screenshot_report import (  # noqa: E402
    ReportCheckError,
    check_shown,
    displayed_match,
    find_chromium,
    image_stats,
    is_blank,
    report_results,
    screenshot_and_check,
    show_result,
)

REPORT_DIR = PROJECT_ROOT / "workflow" / "report"


def require_chromium() -> str:
    """Chromium's path; skip without it, but fail under CI=true (CI installs it: tools/system-deps.sh)."""
    found = find_chromium()
    if found is None:
        msg = "headless Chromium not found (Debian: apt-get install chromium, or set $CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true requires it (run tools/system-deps.sh as root)")
        pytest.skip(msg)
    return found


def assert_report_renders(
    report_html: Path, out_dir: Path, table: str = "fewshot.html", plots=("fewshot.png",)
) -> list[dict]:
    """Screenshot the report showing ``table`` and each of ``plots``; each must pass the checks."""
    chromium = require_chromium()
    try:
        stats = screenshot_and_check(report_html, [table, *plots], out_dir, chromium=chromium)
    except ReportCheckError as e:
        pytest.fail(str(e))
    for s in stats:
        assert Path(s["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return stats


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._bold = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._bold = "", False
        elif tag == "b":
            self._bold = True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append((self._cell.strip(), self._bold))
            self._cell = None


def parse_tables(html: str):
    p = _Cells()
    p.feed(html)
    return p.tables


def fake_predictions(tmp_path: Path) -> list[str]:
    from test_evaluate import fake_predictions as make

    return make(tmp_path, (("FiVE", [0, 1, 4]), ("FiVE-classtexts", [0, 1, 4]), ("meanpool", [1, 4])), noise=0.3)


def test_fewshot_and_ablation_html(tmp_path):
    files = fake_predictions(tmp_path)
    t = tmp_path / "out"
    out = SimpleNamespace(
        csv=t / "f.csv",
        md=t / "f.md",
        tex=t / "f.tex",
        runs=t / "r.csv",
        plot=t / "f.png",
        html=t / "f.html",
        ablation_csv=t / "a.csv",
        ablation_html=t / "a.html",
    )
    table = evaluate_predictions(files, out, classes=["LUAD", "LUSC"], n_boot=0)
    html = out.html.read_text()
    tables = parse_tables(html)
    assert len(tables) == 5  # accuracy, ROC AUC, the authors' F1, ours, then FiVE's paired differences
    header, *rows = tables[4]
    assert [c for c, _ in header] == ["Pair", "zero-shot", "1-shot", "4-shot"]
    assert [r[0][0] for r in rows] == ["FiVE − FiVE-classtexts", "FiVE − meanpool"]
    assert rows[1][1] == ("-", False)  # meanpool has no zero-shot row to pair with
    tables = tables[:4]
    assert "F1, authors&#x27; definition (%): positive class at the ROC-optimal threshold" in html
    for tab, metric in zip(tables, ("acc", "auc", "f1auth", "f1")):
        header, *rows = tab
        assert [c for c, _ in header] == ["Method", "zero-shot", "1-shot", "4-shot"]
        assert [r[0][0] for r in rows] == ["FiVE", "FiVE-classtexts", "meanpool"]
        meanpool = dict(zip([c for c, _ in header], rows[2]))
        assert meanpool["zero-shot"] == ("-", False)
        # cells are the table's mean ± std in %, and the best mean of each column is bold
        for j, s in enumerate((0, 1, 4), start=1):
            col = {r[0][0]: r[j] for r in rows}
            means = table[table["shots"] == s].set_index("method")[f"{metric}_mean"]
            best = means.round(4).max()
            for m, mean in means.items():
                txt, bold = col[m]
                assert txt.startswith(f"{100 * mean:.2f} ±"), (m, s, txt, mean)
                assert bold == (round(mean, 4) == best), (m, s, col)
    abl = parse_tables(out.ablation_html.read_text())
    assert len(abl) == 1
    names = [r[0][0] for r in abl[0][1:]]
    assert names == ["FiVE", "FiVE-classtexts", "difference (FiVE - FiVE-classtexts)"]
    diff = abl[0][3][2][0]  # 1-shot difference, signed, in percentage points
    a = table[(table.method == "FiVE") & (table.shots == 1)]["acc_mean"].item()
    b = table[(table.method == "FiVE-classtexts") & (table.shots == 1)]["acc_mean"].item()
    assert diff.startswith(f"{100 * (a - b):+.2f}")


def test_html_escapes_method_names():
    import pandas as pd

    t = pd.DataFrame(
        [
            dict(
                method="<b>x</b>&y",
                shots=1,
                n_runs=1,
                acc_mean=0.5,
                acc_std=0.1,
                auc_mean=0.6,
                auc_std=0.0,
                f1_mean=0.5,
                f1_std=0.0,
            )
        ]
    )
    html = to_html(t)
    assert "&lt;b&gt;x&lt;/b&gt;&amp;y" in html and "<b>x</b>" not in html
    abl = ablation_table(t.assign(method="FiVE"))
    assert "50.00 ± 10.00" in ablation_html(abl)


def test_blank_and_colour_checks():
    white = np.full((200, 300, 3), 255, np.uint8)
    grey = np.full((200, 300, 3), 90, np.uint8)
    assert is_blank(white) and is_blank(grey)
    assert image_stats(white)["nonwhite"] == 0.0 and image_stats(white)["colours"] == 1
    drawn = white.copy()
    drawn[50:60, 20:280] = (31, 119, 180)  # a matplotlib-blue line
    drawn[100:104, 20:280] = (255, 127, 14)  # an orange one
    drawn[150:190:4, 20:200] = (0, 0, 0)  # "text"
    for k, v in enumerate(np.linspace(120, 230, 10).astype(np.uint8)):
        drawn[10 + k, 0:10] = v  # grey ramp: more colours
    assert not is_blank(drawn)
    # the image drawn at half size, 40 px right and partly below the bottom edge of a 400 x 150 "screen"
    screen = np.full((150, 400, 3), 255, np.uint8)
    from PIL import Image

    half = np.asarray(Image.fromarray(drawn).resize((150, 100), Image.BILINEAR))
    screen[80:150, 40:190] = half[:70]
    match, at = displayed_match(screen, drawn, (150, 100))
    assert match > 0.9 and at == (40, 80)
    assert displayed_match(screen, drawn, (150, 100), near_left=40)[0] > 0.9
    assert displayed_match(screen, drawn, (150, 100), region=(200, 0, 200, 150))[0] < 0.3  # blank part
    assert displayed_match(np.full_like(screen, 255), drawn, (150, 100))[0] == 0.0
    other = np.full_like(drawn, 255)
    other[20:180, 140:150] = 0  # a different picture
    assert displayed_match(screen, other, (150, 100))[0] < 0.5


# ---- a real Snakemake report, screenshotted in headless Chromium -----------------------------------

SNAKEFILE = textwrap.dedent("""
    from types import SimpleNamespace

    rule all:
        input: "results/tables/fewshot.html", "results/plots/fewshot.png", "results/tables/fewshot.csv"

    rule evaluate:
        input: preds=config["preds"]
        output:
            csv=report("results/tables/fewshot.csv", caption="report/table_csv.rst", category="3. Results", subcategory="Tables"),
            html=report("results/tables/fewshot.html", caption="report/table.rst", category="3. Results", subcategory="Tables"),
            plot=report("results/plots/fewshot.png", caption="report/plot.rst", category="3. Results", subcategory="Plots"),
        params: n_boot=10, boot_seed=0
        run:
            from fiveflow.evaluate.tables import evaluate_predictions
            d = "results/tables/"
            out = SimpleNamespace(csv=output.csv, html=output.html, plot=output.plot, md=d + "f.md", tex=d + "f.tex",
                                  runs=d + "runs.csv")
            evaluate_predictions(list(input.preds), out, classes=["LUAD", "LUSC"], n_boot=10)

""")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Checked before the report is built, so a machine without Chromium skips at once."""
    return require_chromium()


@pytest.fixture(scope="module")
def mini_report(tmp_path_factory):
    """A real report from a two-rule workflow: the evaluate stage's HTML table and plot with the project's
    captions (rendered by Snakemake's caption templating against a minimal config)."""
    import shutil

    import yaml

    work = tmp_path_factory.mktemp("report")
    files = fake_predictions(work)
    shutil.copytree(REPORT_DIR, work / "report")
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["preds"] = files
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "Snakefile").write_text(SNAKEFILE)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config.yaml"]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(
        cmd + ["--report", "report.html"], cwd=work, capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return work


def test_report_captions_and_categories(mini_report):
    results, categories = report_results(mini_report / "report.html")
    assert list(categories) == ["3. Results"]
    assert {k: sorted(v) for k, v in categories["3. Results"].items()} == {
        "Tables": ["results/tables/fewshot.csv", "results/tables/fewshot.html"],
        "Plots": ["results/plots/fewshot.png"],
    }
    html_entry = results["results/tables/fewshot.html"]
    assert html_entry["mime_type"] == "text/html"
    # caption templating filled in from the config: shots and runs of the few-shot protocol
    import yaml

    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg_shots = ", ".join(str(s) for s in cfg["fewshot"]["shots"])
    assert cfg_shots in html_entry["caption"] and "{{" not in html_entry["caption"]
    assert "10 times with seed" in results["results/tables/fewshot.csv"]["caption"]


def test_report_screenshots_show_table_and_plot(chromium, mini_report):
    stats = assert_report_renders(mini_report / "report.html", mini_report / "shots")
    table, plot = stats
    assert table["dark"] > 0.005 and table["colours"] >= 8  # table text and the header/stripe colours
    assert plot["img_natural"][0] > 500 and plot["img_match"] > 0.7


def test_screenshot_check_fails_on_a_blank_plot(chromium, mini_report, tmp_path):
    """The checks can fail: a report whose plot is a blank white PNG is rejected."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1200, 480), "white").save(buf, format="PNG")
    results, _ = report_results(mini_report / "report.html")
    old = results["results/plots/fewshot.png"]["data_uri"]
    new = old.split("base64,")[0] + "base64," + base64.b64encode(buf.getvalue()).decode()
    blank = tmp_path / "blank.html"
    blank.write_text((mini_report / "report.html").read_text().replace(old, new))
    shown = show_result(blank, "fewshot.png", tmp_path / "blank.png", chromium=chromium)
    with pytest.raises(ReportCheckError, match="blank"):
        check_shown(blank, shown)
    with pytest.raises(ReportCheckError, match="download-only"):
        show_result(blank, "fewshot.csv", tmp_path / "csv.png", chromium=chromium)


class _AnyParams:
    """Rule params as the caption sees them; any name resolves (params differ per rule)."""

    def __getattr__(self, name):
        return f"<{name}>"


def test_every_caption_renders_cleanly():
    """Each caption renders with the default config (a config key that does not exist is an error, not an empty
    string) to reStructuredText without docutils warnings, and says something."""
    import io

    import jinja2
    import yaml
    from docutils.core import publish_parts

    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    snakemake = SimpleNamespace(
        config=cfg,
        params=_AnyParams(),
        rule="rule",
        wildcards=SimpleNamespace(slide="DEMO-0001", method="FiVE", shots="1"),
    )
    captions = sorted(REPORT_DIR.glob("*.rst"))
    assert len(captions) >= 10
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for f in captions:
        text = env.from_string(f.read_text()).render(snakemake=snakemake)
        warnings = io.StringIO()
        body = publish_parts(text, writer="html", settings_overrides={"warning_stream": warnings})["body"]
        assert not warnings.getvalue(), (f.name, warnings.getvalue())
        assert len(body) > 150 and "{{" not in body, f.name
    # every caption referenced from the rules exists
    for smk in (PROJECT_ROOT / "workflow" / "rules").glob("*.smk"):
        for name in re.findall(r'caption="\.\./report/([^"]+)"', smk.read_text()):
            assert (REPORT_DIR / name).is_file(), (smk.name, name)


def test_multiscale_match_finds_a_plot_laid_out_elsewhere():
    """The fallback when the screenshot run lays the page out differently from the run that measured the
    <img> (the report's side panel open): the plot is found at another size and place, a blank or
    another picture is not."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    from screenshot_report import multiscale_match

    def plot_rgb(figsize):
        fig, ax = plt.subplots(figsize=figsize, dpi=100)
        ax.plot([1, 2, 4, 8], [0.5, 0.7, 0.9, 1.0], "o-")
        ax.set_title("accuracy vs shots")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return np.asarray(Image.open(buf).convert("RGB"))

    src = plot_rgb((8, 3.2))
    shot = np.full((900, 1400, 3), 255, np.uint8)
    shot[:, :500] = (90, 95, 105)  # a side panel
    drawn = np.asarray(Image.fromarray(src).resize((700, 280), Image.BICUBIC))
    shot[300:580, 560:1260] = drawn
    score, at, width = multiscale_match(shot, src)
    assert score > 0.9 and abs(at[0] - 560) <= 8 and abs(at[1] - 300) <= 8 and abs(width - 700) <= 12
    blank = np.full_like(shot, 255)
    blank[:, :500] = (90, 95, 105)
    assert multiscale_match(blank, src)[0] < 0.5
    # drawn wider than the window (as a 3-panel ROC plot beside the open side panel): half off screen
    from screenshot_report import find_displayed

    wide = blank.copy()
    src = plot_rgb((16, 6.4))  # a large PNG the page scales down, as reports do
    big = np.asarray(Image.fromarray(src).resize((1100, 440), Image.BICUBIC))
    wide[300:740, 560:1400] = big[:, :840]
    score, at, width = find_displayed(wide, src)
    assert score > 0.9 and abs(at[0] - 560) <= 8 and abs(width - 1100) <= 30
    assert find_displayed(blank, src)[0] < 0.5
    # taller than the window at its natural size (the CI e2e run's 792 x 1776 px confusion grid): cut at the
    # top and bottom, its left part under the side panel; found by a band of its right half (0.38 whole)
    tall_src = np.vstack(
        [plot_rgb((8, 3.2)), plot_rgb((8, 3.2))[:, ::-1], plot_rgb((8, 3.2))[::-1], plot_rgb((8, 3.2))]
    )  # 800 x 1280 px, four different panels
    tall = blank.copy()
    tall[:, 300:1100] = tall_src[200:1100]
    tall[:, :500] = (90, 95, 105)  # the panel covers the left 200 px of the plot
    score, at, width = find_displayed(tall, tall_src)
    assert score > 0.9 and abs(width - 800) <= 30, (score, at, width)
    assert find_displayed(blank, tall_src)[0] < 0.5
    # a blank (white) image is found nowhere, however busy the screen: its resized, blurred template is flat
    # up to float round-off, which normalised correlation would otherwise stretch into a perfect match (a
    # CI run accepted a blank plot this way, 1.0 by the band fallback)
    white = np.full_like(tall_src, 255)
    busy = tall.copy()
    busy[100:300, 600:1200] = np.random.default_rng(0).integers(0, 256, (200, 600, 3))
    assert find_displayed(busy, white) == (0.0, (0, 0), find_displayed(busy, white)[2])
    assert multiscale_match(busy, white[:480])[0] == 0.0
    assert displayed_match(busy, white[:480], (600, 360))[0] == 0.0
