"""``fiveflow``: one subcommand per stage (the same functions the Snakemake rules call), plus ``doctor``.

Each stage subcommand reads the same config.yaml as the workflow (``--config``), so a stage can be rerun
or fed from outside without Snakemake.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .layout import Layout

log = logging.getLogger("fiveflow")


def _cfg(args) -> dict | None:
    """The config; ``None`` for a subcommand marked ``config_optional`` when the default config.yaml is absent."""
    from .config import load_config

    if getattr(args, "config_optional", False) and args.config == "config.yaml" and not Path(args.config).is_file():
        return None
    return load_config(args.config)


def cmd_demo(args) -> int:
    from .cohort.demo import demo_cases, write_demo_slide, write_demo_tables

    cfg = _cfg(args)
    demo = cfg["cohort"]["demo"]
    n = args.n_slides or int(demo["n_slides"])
    out = Path(args.out)
    cases = demo_cases(n, int(demo["seed"]))
    for c in cases:
        write_demo_slide(
            c,
            out / "slides" / f"{c.slide_id}.tif",
            int(demo["width"]),
            int(demo["height"]),
            float(demo["mpp"]),
            difficulty=demo["difficulty"],
        )
        print(out / "slides" / f"{c.slide_id}.tif")
    write_demo_tables(
        cases,
        {c.slide_id: f"slides/{c.slide_id}.tif" for c in cases},
        out / "samples.csv",
        out / "reports.csv",
        out / "truth.csv",
    )
    return 0


def cmd_tile(args) -> int:
    """Tile each ``--slide`` in this one process (imports paid once). Exit 0: all tiled; 1: some slide
    had no tissue (its outputs are written, status no_tissue); 2: some slide was unusable (nothing written
    for it; the reason is one line on stderr)."""
    from .fileio import slide_id_from_path
    from .slides.reader import SlideError
    from .slides.tiling import default_tiling, tile_slide

    full = _cfg(args)
    cfg = full["tiling"] if full else default_tiling()
    if args.target_mpp is not None:
        cfg["target_mpp"] = args.target_mpp
    if args.patch_px is not None:
        cfg["patch_size"] = args.patch_px
    layout = Layout(args.out)
    worst = 0
    for s in args.slide:
        sid = slide_id_from_path(s)
        try:
            meta = tile_slide(
                s,
                sid,
                cfg,
                layout.coords(sid),
                layout.qc_thumbnail(sid),
                layout.tissue_geojson(sid),
                mpp_override=args.mpp,
            )
        except SlideError as exc:
            print(f"fiveflow tile: {exc}", file=sys.stderr)
            worst = 2
            continue
        if meta.status != "ok":
            print(f"fiveflow tile: {meta.message}", file=sys.stderr)
            worst = max(worst, 1)
        print(
            f"{sid}\t{meta.status}\t{meta.n_tiles} tiles\t{meta.slide_mpp:.4g} mpp ({meta.mpp_source})\t"
            f"{meta.tissue_area_mm2:.2f} mm2 tissue"
        )
    return worst


def cmd_embed(args) -> int:
    from .embed import embed_settings
    from .embed.encoders import build_encoder
    from .embed.extract import embed_slide
    from .fileio import slide_id_from_path

    cfg = embed_settings(_cfg(args)["embedding"])
    for key in ("encoder", "weights", "batch_size", "num_workers", "device", "precision"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    from .embed.runtime import prepare
    from .train.common import resolve_device

    enc = build_encoder(cfg["encoder"], cfg["weights"], int(cfg["seed"]))
    # one model load and one prepare for all the slides (as a shard of the workflow)
    prepared = prepare(
        enc, resolve_device(cfg["device"], "embedding.device"), cfg["precision"], bool(cfg["deterministic"])
    )
    layout = Layout(args.out)
    for s in args.slides:
        sid = slide_id_from_path(s)
        res = embed_slide(
            s,
            layout.coords(sid),
            enc,
            layout.bag(cfg["encoder"], sid),
            batch_size=int(cfg["batch_size"]),
            num_workers=cfg["num_workers"],
            device=cfg["device"],
            precision=cfg["precision"],
            deterministic=bool(cfg["deterministic"]),
            skip_complete=not args.overwrite,
            prepared=prepared,
        )
        speed = "up to date" if res["skipped"] else f"{res['tiles_per_s']:.1f} tiles/s"
        print(f"{sid}\t{res['tiles']} tiles\t{speed}\t{res['inference']}")
    return 0


def cmd_encoders(args) -> int:
    from .embed.encoders import specs

    print("encoder\tdim\tinput\tweights: default\tnotes")
    for name, sp in specs().items():
        pp = sp.preprocess
        size = f"{pp.size or 'tile'}" + (f"/crop {pp.crop}" if pp.crop else "")
        notes = "; ".join(
            x
            for x in (
                sp.summary,
                "gated: needs HF_TOKEN" if sp.gated else "",
                f"needs {sp.requires}" if sp.requires else "",
            )
            if x
        )
        print(f"{name}\t{sp.dim}\t{size}\t{sp.default_weights or '(your file)'}\t{notes}")
    print("any timm model name\t-\tmodel's own\t(random | file | hf-hub:<id>)\ttimm.create_model(name, num_classes=0)")
    return 0


REPORT_BACKENDS = ("rules", "openai", "import", "offline", "precomputed")  # the last two: older names
REPORT_ACTIONS = ("extract", "agree")


def cmd_reports(args) -> int:
    """``fiveflow reports extract``: the same structure_reports call as the Snakemake rule."""
    from .reports import backend_name
    from .reports.structure import structure_reports

    src = args.input or args.reports
    if args.input and args.reports:
        raise ValueError(f"give the reports once: either REPORTS ({args.reports}) or --input ({args.input})")
    if not src:
        raise ValueError("no reports given: --input FILE_OR_DIR (a CSV/TSV/Parquet table, or a folder of .txt/.pdf)")
    from .settings import with_defaults

    full = _cfg(args)  # no project config here: the schema's defaults, then the options
    cfg = with_defaults(full["reports"] if full else None, "reports")
    if args.backend:
        cfg["backend"] = backend_name(args.backend)
    if args.answers:
        cfg["precomputed"] = args.answers
    if args.answer_column:
        cfg["answer_column"] = args.answer_column
    if args.name_histotype is not None:
        cfg["name_histotype"] = args.name_histotype
    if backend_name(cfg["backend"]) == "precomputed" and not cfg["precomputed"]:
        raise ValueError(
            "--backend import needs --answers CSV (patient_id or patient_filename, and answer: "
            "six phrases joined by ';')"
        )
    if args.dry_run:
        if backend_name(cfg["backend"]) != "openai":
            raise ValueError("--dry-run estimates LLM requests: use it with --backend openai")
        from .reports.structure import estimate_llm_cost

        print(estimate_llm_cost(src, cfg, id_column=args.id_column, text_column=args.text_column).line())
        return 0
    df = structure_reports(src, args.output, cfg, log=log, id_column=args.id_column, text_column=args.text_column)
    bad = df["status"].ne("ok")
    extra = (
        f" ({int(bad.sum())} without a usable report: {df.loc[bad, 'status'].value_counts().to_dict()})"
        if bad.any()
        else ""
    )
    print(f"{len(df)} patients -> {args.output}{extra}")
    return 0


def cmd_reports_agree(args) -> int:
    from .reports.agree import agreement, format_agreement

    res = agreement(args.pred, args.ref)
    print(f"pred: {args.pred}\nref:  {args.ref}")
    print(format_agreement(res, show=args.show))
    return 0


def _reports_usage(args) -> int:
    args.parser.print_help(sys.stderr)
    return 2


def cmd_split(args) -> int:
    from .samples import read_samples
    from .train.splits import make_fewshot_draws, make_split

    cfg = _cfg(args)
    if not Path(args.samples).exists():  # read_samples' own message names the config key, not this argument
        raise FileNotFoundError(
            f"samples sheet not found: {args.samples}. Fix: give the path of an existing "
            "samples sheet (fiveflow split SAMPLES)."
        )
    samples = read_samples(args.samples, classes=[c["name"] for c in cfg["classes"]], check_files=False)
    split = make_split(
        samples, float(cfg["split"]["test_fraction"]), int(cfg["split"]["seed"]), Path(args.out) / "split.csv"
    )
    fs = cfg["fewshot"]
    make_fewshot_draws(
        split, [int(s) for s in fs["shots"]], int(fs["runs"]), int(fs["seed"]), Path(args.out) / "fewshot_draws.csv"
    )
    print(split.groupby(["split", "label"]).size().to_string())
    return 0


def _bags(folder: str) -> dict[str, str]:
    from .cohort_index import bag_map

    return bag_map(sorted(Path(folder).glob("*.h5")))


def cmd_train(args) -> int:
    from .train.pretrain import pretrain

    summary = pretrain(args.split, args.labels, _bags(args.bags), _cfg(args), args.out, threads=args.threads, log=log)
    print(summary)
    return 0


def cmd_fewshot(args) -> int:
    from .train.fewshot import run_fewshot, run_zeroshot

    cfg = _cfg(args)
    if args.shots == 0:
        pred = run_zeroshot(args.ckpt, args.split, _bags(args.bags), cfg, args.out)
    else:
        pred = run_fewshot(
            args.ckpt, args.split, args.draws, _bags(args.bags), cfg, args.shots, args.out, threads=args.threads
        )
    print(f"{len(pred)} predictions -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    """The evaluate rule's work: the same files (fiveflow.layout), the same bootstrap settings (config evaluate)."""
    from .evaluate.tables import evaluate_predictions
    from .layout import Layout
    from .protocol import table_protocol

    cfg = _cfg(args)
    table = evaluate_predictions(
        [str(p) for p in args.predictions],
        Layout(args.out).evaluate,
        classes=[c["name"] for c in cfg["classes"]],
        n_boot=int(cfg["evaluate"]["n_boot"]),
        seed=int(cfg["evaluate"]["boot_seed"]),
        protocol=table_protocol(cfg),  # FiVE's rows say which settings they ran under
    )
    print(table.to_string(index=False))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import run_doctor

    return run_doctor(args.config)


def cmd_import_bags(args) -> int:
    """Import DSMIL CSVs / CLAM-style h5 files into OUT/{slide}.h5 (already imported bags are skipped)."""
    from .embed.importers import import_folder

    summary = import_folder(args.src, args.out, fmt=args.format, encoder=args.encoder)
    for r in summary.itertuples():
        print(f"{r.slide_id}\t{r.status}\t{r.n_tiles} tiles\t{r.feature_dim} dims\t{r.source}")
    n_new = int((summary["status"] == "imported").sum())
    print(f"{len(summary)} slides -> {args.out} ({n_new} imported, {len(summary) - n_new} already up to date)")
    return 0


def cmd_download(args) -> int:
    """Download a GDC manifest's files into OUT (resumable, md5-verified). Exit 0: all present; 1: some failed."""
    from .download import GDC_DATA_URL, download_manifest

    table = download_manifest(
        args.manifest,
        args.out,
        jobs=args.jobs,
        base_url=args.base_url or GDC_DATA_URL,
        token_env=args.token_env,
        retries=args.retries,
    )
    for r in table.itertuples():
        print(f"{r.file_id}\t{r.filename}\t{r.status}" + (f"\t{r.error}" if r.error else ""))
    counts = table["status"].value_counts().to_dict()
    print(f"{len(table)} files -> {args.out} ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    return 1 if counts.get("failed") else 0


def cmd_heatmap(args) -> int:
    """Render one stored attention file over its slide's thumbnail."""
    from .evaluate.heatmaps import render_slide

    cfg = _cfg(args)
    size = args.thumbnail_size or (int(cfg["tiling"]["thumbnail_size"]) if cfg else 1024)
    positive = cfg["classes"][1]["name"] if cfg else None
    meta = render_slide(
        args.attention,
        args.slide,
        args.out,
        thumbnail_size=size,
        normalise=args.normalise,
        alpha=args.alpha,
        positive=positive,
    )
    print(
        f"{meta['slide_id']}: {meta['n_tiles']} tiles ({meta.get('method')}, {meta.get('kind', 'attention')}) -> {args.out}"
    )
    return 0


#: (option, args attribute) of the outputs: an OS error under one of them is fixed by choosing another
OUTPUT_OPTIONS = (("--out", "out"), ("--output", "output"))


def _number(text: str, kind, low: float | None, high: float | None = None, low_open: bool = False) -> int | float:
    """Parse a number option; argparse turns the ArgumentTypeError into a one-line usage error (exit 2)."""
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: use {what} {bound}" + (f" and <= {high:g}" if high is not None else "")
        )
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: use {what} <= {high:g}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (an mpp)."""
    return _number(text, float, 0, low_open=True)


def unit_float(text: str) -> float:
    """A finite number in [0, 1] (an opacity)."""
    return _number(text, float, 0, 1)


def positive_int(text: str) -> int:
    """An integer >= 1 (a count or a size)."""
    return _number(text, int, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _number(text, int, 0)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, the function it runs, its help, and the options it adds besides --config."""

    name: str
    run: Callable[[argparse.Namespace], int]
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    config_optional: bool = False  # runs without a config file (built-in defaults) when config.yaml is absent


def _args_demo(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", default="results/demo", help="output folder (default: results/demo)")
    sp.add_argument("--n-slides", type=positive_int, default=None, help="override cohort.demo.n_slides")


def _args_tile(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--slide",
        action="append",
        required=True,
        metavar="PATH",
        help="slide file in any OpenSlide format (repeat to tile several in one process)",
    )
    sp.add_argument("--out", default="results", help="results folder (default: results)")
    sp.add_argument(
        "--mpp",
        type=positive_float,
        default=None,
        help="level-0 microns per pixel, overriding the slide's metadata (default: from the metadata)",
    )
    sp.add_argument(
        "--target-mpp", type=positive_float, default=None, help="tile resolution (default: tiling.target_mpp)"
    )
    sp.add_argument(
        "--patch-px",
        type=positive_int,
        default=None,
        help="tile edge in px at --target-mpp (default: tiling.patch_size)",
    )


def _args_embed(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("slides", nargs="+", help="slide files already tiled into OUT/coords")
    sp.add_argument("--out", default="results", help="results folder (default: results)")
    sp.add_argument("--encoder", help="override embedding.encoder (see `fiveflow encoders`)")
    sp.add_argument("--weights", help="override embedding.weights: random | default | FILE | hf-hub:ID")
    sp.add_argument("--batch-size", dest="batch_size", type=positive_int, help="override embedding.batch_size")
    sp.add_argument("--workers", dest="num_workers", type=nonnegative_int, help="override embedding.num_workers")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override embedding.device")
    sp.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="override embedding.precision")
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="re-embed slides whose bag is already complete (default: skip them, so a rerun resumes)",
    )


def _args_heatmap(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--attention", required=True, metavar="FILE", help="attention parquet written by training")
    sp.add_argument("--slide", required=True, metavar="SLIDE", help="the slide file the bag was made from")
    sp.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    sp.add_argument(
        "--thumbnail-size",
        type=positive_int,
        default=None,
        help="thumbnail longest edge (default: tiling.thumbnail_size)",
    )
    sp.add_argument(
        "--normalise", choices=["rank", "minmax"], default="rank", help="within-slide scaling (default: rank)"
    )
    sp.add_argument("--alpha", type=unit_float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")


def _add_reports(sub) -> None:
    """`fiveflow reports` has actions of its own (extract, agree), each with its own options."""
    help_ = (
        "pathology reports: `extract` answers the six FiVE questions per patient and writes the labels "
        "parquet; `agree` compares two labels tables. `fiveflow reports REPORTS --out X` = `extract`"
    )
    rp = sub.add_parser("reports", help=help_, description=help_)
    rsub = rp.add_subparsers(dest="action", metavar="ACTION")
    rp.set_defaults(func=_reports_usage, parser=rp)
    help_ = (
        "answer the six FiVE questions for each report (a CSV/TSV/Parquet table, or a folder of .txt/.pdf); "
        "write the labels parquet (the Snakemake `reports` rule's code path)"
    )
    sp = rsub.add_parser("extract", help=help_, description=help_)
    sp.set_defaults(func=cmd_reports, config_optional=True)
    sp.add_argument("reports", nargs="?", help="reports input (same as --input)")
    sp.add_argument(
        "--input",
        "-i",
        help="reports: CSV/TSV/Parquet with patient id and text columns, a .txt/.pdf "
        "report, or a folder of them (patient id from the file name)",
    )
    sp.add_argument(
        "--output",
        "--out",
        "-o",
        dest="output",
        default="results/reports/labels.parquet",
        help="labels parquet to write (default: results/reports/labels.parquet)",
    )
    sp.add_argument(
        "--backend",
        choices=REPORT_BACKENDS,
        help="override reports.backend: rules (= offline), openai, import (= precomputed)",
    )
    sp.add_argument(
        "--answers",
        help="answers table for --backend import (CSV/TSV/Parquet/XLSX with patient_id or "
        "patient_filename, and the answers)",
    )
    sp.add_argument(
        "--answer-column", help="column of --answers holding the six answers joined by ';' (default: answer)"
    )
    sp.add_argument(
        "--name-histotype",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rules backend: name the histologic type after the grade in the first answer (an extension "
        "that puts the class label into the descriptions; model rules-v8+histotype). Default: "
        "reports.name_histotype of --config, else off (the six answers only, as the FiVE authors')",
    )
    sp.add_argument(
        "--dry-run",
        action="store_true",
        help="with --backend openai: print how many requests and about how many tokens the run would "
        "spend (cached answers excluded); send nothing, write nothing",
    )
    sp.add_argument("--id-column", help="table column with patient ids (default: patient_id, else patient_filename)")
    sp.add_argument("--text-column", help="table column with the report text (default: text, else ocr_text)")
    sp.add_argument(
        "--config",
        default="config.yaml",
        help="config file for the reports section (default: config.yaml; built-in defaults when absent)",
    )
    help_ = (
        "agreement of two labels tables (labels parquet/CSV, or an answers CSV with an `answer` column) on the "
        "six categorical fields: per question, confusions, disagreeing patients"
    )
    sp = rsub.add_parser("agree", help=help_, description=help_)
    sp.set_defaults(func=cmd_reports_agree)
    sp.add_argument("--pred", required=True, help="labels table to judge (e.g. labels.parquet)")
    sp.add_argument("--ref", required=True, help="reference labels table or answers CSV")
    sp.add_argument(
        "--show", type=nonnegative_int, default=20, help="disagreeing (patient, field) pairs to list (default: 20)"
    )


def _args_split(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("samples", help="samples sheet (slide_id, patient_id, label, path)")
    sp.add_argument("--out", default="results/splits", help="output folder (default: results/splits)")


def _args_train(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--split", required=True, help="split.csv")
    sp.add_argument("--labels", required=True, help="labels parquet from `fiveflow reports`")
    sp.add_argument("--bags", required=True, help="folder of feature bags {slide}.h5")
    sp.add_argument("--out", default="results/models/pretrain.pt", help="checkpoint to write")
    sp.add_argument("--threads", type=positive_int, default=2)


def _args_fewshot(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--ckpt", required=True, help="pre-trained checkpoint")
    sp.add_argument("--split", required=True, help="split.csv")
    sp.add_argument("--draws", help="fewshot_draws.csv (not needed for --shots 0)")
    sp.add_argument("--bags", required=True, help="folder of feature bags {slide}.h5")
    sp.add_argument("--shots", type=nonnegative_int, required=True, help="slides per class (0 = zero-shot)")
    sp.add_argument("--out", required=True, help="predictions parquet to write")
    sp.add_argument("--threads", type=positive_int, default=2)


def _args_evaluate(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("predictions", nargs="+", help="prediction parquet files")
    sp.add_argument("--out", default="results", help="results folder (default: results)")


def _args_import_bags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("src", help="a feature file, or a folder searched recursively for *.csv / *.h5")
    sp.add_argument("--out", required=True, help="folder of feature bags to write")
    sp.add_argument(
        "--format",
        choices=["auto", "dsmil_csv", "h5"],
        default="auto",
        help="source format (default: auto, from the file extension)",
    )
    sp.add_argument(
        "--encoder",
        default=None,
        help="encoder name to record (default: dsmil-resnet18 for CSVs; the h5's own, else unknown)",
    )


def _args_download(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--manifest", required=True, help="GDC manifest TSV (id filename md5 size state) from the GDC portal"
    )
    sp.add_argument("--out", required=True, help="folder to save the files in, under their manifest file names")
    sp.add_argument("--jobs", type=positive_int, default=4, help="concurrent transfers (default: 4)")
    sp.add_argument(
        "--retries",
        type=nonnegative_int,
        default=5,
        help="consecutive failed attempts per file before giving up (default: 5; exponential backoff)",
    )
    sp.add_argument("--base-url", default=None, help="data endpoint (default: https://api.gdc.cancer.gov/data)")
    sp.add_argument(
        "--token-env",
        default="GDC_TOKEN",
        help="environment variable holding a GDC token for "
        "controlled-access files (default: GDC_TOKEN; the token is never read from the command line)",
    )


#: every subcommand, in the order `fiveflow --help` lists them (None: the place of `reports`, which has actions)
COMMANDS: tuple[Command | None, ...] = (
    Command("demo", cmd_demo, "write the synthetic demo cohort (slides, reports, samples sheet)", arguments=_args_demo),
    Command(
        "tile",
        cmd_tile,
        "tissue-mask and tile slides at a physical size; writes OUT/coords/ID.parquet, "
        "OUT/qc/ID.png and OUT/qc/tissue/ID.geojson (exit 1: a slide had no tissue; 2: a slide was unusable)",
        arguments=_args_tile,
        config_optional=True,
    ),
    Command(
        "embed", cmd_embed, "embed tiled slides into feature bags OUT/features/ENCODER/*.h5", arguments=_args_embed
    ),
    Command(
        "heatmap",
        cmd_heatmap,
        "render a stored attention file (results/attention/METHOD_SHOTS/SLIDE.parquet) "
        "over the slide's thumbnail as a PNG heatmap",
        arguments=_args_heatmap,
        config_optional=True,
    ),
    Command(
        "encoders",
        cmd_encoders,
        "list the registered patch encoders, their output size and preprocessing",
        config_optional=True,
    ),
    None,  # reports: see _add_reports (subcommand with actions)
    Command("split", cmd_split, "patient-level train/test split and few-shot draws", arguments=_args_split),
    Command("train", cmd_train, "FiVE pre-training on fine-grained report descriptions", arguments=_args_train),
    Command(
        "fewshot",
        cmd_fewshot,
        "few-shot fine-tuning (or zero-shot with --shots 0) and test predictions",
        arguments=_args_fewshot,
    ),
    Command(
        "evaluate",
        cmd_evaluate,
        "metrics, tables (csv/md/tex/html, ablation and paired tables) and plots from prediction files: the evaluate rule's files under OUT/tables and OUT/plots, bootstrap settings from config evaluate",
        arguments=_args_evaluate,
    ),
    Command("doctor", cmd_doctor, "check the installation, the config and the data before a long run"),
    Command(
        "import-bags",
        cmd_import_bags,
        "import existing features (DSMIL per-slide CSVs, CLAM/TRIDENT/STAMP h5) "
        "as feature bags OUT/ID.h5, without re-embedding (exit 2: a file was unusable)",
        arguments=_args_import_bags,
        config_optional=True,
    ),
    Command(
        "download",
        cmd_download,
        "download the files of a GDC manifest into OUT: resumable, md5-verified, "
        "at most --jobs at a time; writes OUT/gdc_download_summary.tsv (exit 1: some file failed)",
        arguments=_args_download,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fiveflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"fiveflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        if cmd is None:
            _add_reports(sub)
            continue
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        sp.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
        sp.set_defaults(func=cmd.run)
        if cmd.arguments is not None:
            cmd.arguments(sp)
        if cmd.config_optional:
            sp.set_defaults(config_optional=True)
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import setup_logging

    setup_logging()  # console: INFO and above to stderr, no timestamps
    argv = list(sys.argv[1:] if argv is None else argv)
    # Backward compatible: `fiveflow reports REPORTS --out X` is `fiveflow reports extract REPORTS --out X`.
    if len(argv) > 1 and argv[0] == "reports" and argv[1] not in (*REPORT_ACTIONS, "-h", "--help"):
        argv.insert(1, "extract")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"fiveflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fiveflow encoders | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 141
    except (ValueError, RuntimeError, OSError) as exc:  # the user's files and folders (OSError: not a bug)
        from .errors import user_error_line

        line = user_error_line(exc, [(opt, getattr(args, dest, None)) for opt, dest in OUTPUT_OPTIONS])
        if line is None:
            raise  # an unexpected error is a bug: its traceback is the report
        print(f"fiveflow {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
