# Shared set-up: config validation, the slide list, and path helpers used by every stage.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from fiveflow.config import ConfigError, resolve_path, validate_config  # noqa: E402
from fiveflow.embed import embed_settings  # noqa: E402
from fiveflow.embed.shards import plan_shards  # noqa: E402
from fiveflow.embed.text_towers import has_text_tower  # noqa: E402
from fiveflow.evaluate.optimistic import bestepoch_method  # noqa: E402
from fiveflow.layout import Layout  # noqa: E402
from fiveflow.protocol import table_protocol  # noqa: E402
from fiveflow.reports import backend_name  # noqa: E402
from fiveflow.train.ablations import five_method, parse_ablation  # noqa: E402
from fiveflow.cohort_index import Cohort, precomputed_sources  # noqa: E402

try:
    validate_config(config, source="config", root=Path(workflow.basedir))
except ConfigError as _err:
    raise WorkflowError(f"invalid configuration:\n{_err}") from None

ROOT = str(Path(workflow.basedir))
# envs/*.post-deploy.sh install the package from here into each conda env (--use-conda / --sdm conda)
os.environ.setdefault("FIVEFLOW_ROOT", ROOT)
R = config["results_dir"]
LAYOUT = Layout(R)  # every stage's output paths (fiveflow.layout), shared with the fiveflow command
LOGS = LAYOUT.logs
BENCH = LAYOUT.benchmarks
ENCODER = config["embedding"]["encoder"]
try:
    COHORT = Cohort.from_config(config, Path(workflow.basedir))
except (ValueError, FileNotFoundError) as _err:
    raise WorkflowError(str(_err)) from None
SLIDES = COHORT.slide_ids
# cohort.source gdc: the manifests (inputs of the samples sheet) and the slide files the download rule fetches
GDC_INPUTS = []
if COHORT.source == "gdc":
    from fiveflow.download.manifest import ManifestRow  # noqa: E402

    _gdc = config["cohort"]["gdc"]
    GDC_INPUTS = sorted({str(resolve_path(f, Path(workflow.basedir)))
                         for fs in _gdc["manifests"].values() for f in ([fs] if isinstance(fs, str) else fs)})
    GDC_DIR = str(resolve_path(_gdc["slide_dir"], Path(workflow.basedir)))
    GDC_DOWNLOAD = bool(_gdc["download"])
    GDC_BASE_URL = _gdc["base_url"]
    GDC_ROWS = {r.filename: ManifestRow(r.file_id, r.filename, r.md5, int(r.size)) for r in COHORT.gdc.itertuples()}
SHOTS = [int(s) for s in config["fewshot"]["shots"]]
BASELINES = list(config["baselines"])
EMBED_GPU = 0 if config["embedding"]["device"] == "cpu" else 1
# embedding.shard_size > 1: slides embedded in shards (one job, one model load per shard; see embed.smk)
EMBED_SHARD_SIZE = int(config["embedding"]["shard_size"])
EMBED_SHARDS = plan_shards(SLIDES, EMBED_SHARD_SIZE) if EMBED_SHARD_SIZE > 1 else {}
# Hub token for gated encoder weights, passed to (cluster) jobs only when the user has one set.
EMBED_ENVVARS = [v for v in ("HF_TOKEN",) if os.environ.get(v)]
# Features imported from another tool (DSMIL CSVs, CLAM/TRIDENT h5) instead of tiling and embedding slides.
PRECOMPUTED = {}
if config["embedding"]["precomputed"]:
    try:
        PRECOMPUTED = precomputed_sources(resolve_path(config["embedding"]["precomputed"], Path(ROOT)), SLIDES)
    except (ValueError, FileNotFoundError) as _err:
        raise WorkflowError(str(_err)) from None
TRAIN_GPU = 0 if config["train"]["device"] == "cpu" else 1
# FiVE and its ablations: method name -> pre-trained checkpoint (predictions/{method}_{shots}.parquet)
# FiVE is named FiVE+histotype when its descriptions name the histologic type (reports.name_histotype: an
# extension that leaks the label), so no such row reads as FiVE; its description-trained ablations follow suit.
FIVE_BASE = five_method(config)
FIVE_CKPTS = {FIVE_BASE: LAYOUT.pretrained()}
ABLATIONS = {a: parse_ablation(a, FIVE_BASE) for a in config["ablations"]}
FIVE_CKPTS.update({ab.method: LAYOUT.pretrained(a) for a, ab in ABLATIONS.items()})
# ablation method (e.g. FiVE-noTFS) -> its config entry (e.g. no_tfs); FiVE itself has none
ABLATION_OF = {ab.method: a for a, ab in ABLATIONS.items()}
# FiVE itself (not an ablation): the one method with the best-epoch zero-shot row
FIVE_METHOD = FIVE_BASE
# the protocol label and deviating keys every table prints for FiVE's rows (fiveflow.protocol)
PROTOCOL = table_protocol(config)
# train.zeroshot_epoch: best_on_test adds FiVE's zero-shot row at the pre-training epoch best on the test split
# (the authors' selection; optimistic, labelled so in every table: fiveflow.evaluate.optimistic)
ZEROSHOT_EPOCH = config["train"]["zeroshot_epoch"]
BESTEPOCH_METHOD = bestepoch_method(FIVE_METHOD) if ZEROSHOT_EPOCH == "best_on_test" else None
# Only the sections training reads, so that e.g. a tiling change does not look like a training change.
# train.zeroshot_epoch reaches only FiVE's pretrain rule (its own param), so toggling it reruns nothing else.
TRAIN_CFG = {k: config[k] for k in ("classes", "split", "fewshot", "model", "train", "baselines")}
TRAIN_CFG["train"] = {k: v for k, v in config["train"].items() if k != "zeroshot_epoch"}
# MI-Zero zero-shot baseline: auto = when the encoder has a text tower (validate_config refuses true without one)
_MZ = config["mizero"]
MIZERO = has_text_tower(ENCODER) if _MZ["enabled"] == "auto" else bool(_MZ["enabled"])
MIZERO_PROMPTS = str(resolve_path(_MZ["prompts"], Path(ROOT)))
# paths made absolute here (prompt file, local encoder weights), so the job needs no project root
_EMBED = embed_settings(config["embedding"], ROOT)
MIZERO_CFG = {"classes": config["classes"], "mizero": {**_MZ, "prompts": MIZERO_PROMPTS},
              "train": {"device": config["train"]["device"]},
              "embedding": {k: _EMBED[k] for k in ("encoder", "weights", "seed")}}
# Attention heatmaps: method -> the shot count whose run 0 is drawn (MI-Zero is zero-shot only).
# No slides to take thumbnails from when the features were imported (embedding.precomputed): no heatmaps.
HEATMAPS = config["heatmaps"]
HEATMAP_SHOTS = int(HEATMAPS["shots"] or max(SHOTS))
if HEATMAP_SHOTS not in SHOTS:
    raise WorkflowError(f"invalid configuration: `heatmaps.shots` {HEATMAP_SHOTS} is not one of `fewshot.shots` "
                        f"{SHOTS}. Fix: pick one of them, or null for the largest.")
HEATMAP_METHODS = {} if PRECOMPUTED else {
    **{m: HEATMAP_SHOTS for m in FIVE_CKPTS}, **{b: HEATMAP_SHOTS for b in BASELINES}, **({"MI-Zero": 0} if MIZERO else {})}


wildcard_constraints:
    # sanitised ids (fiveflow.fileio.sanitize_id: no path separators, never hidden), never the cohort-level files
    # next to the per-slide ones (qc/montage.png); an id outside the cohort fails in slide_path. Not an
    # alternation of the ids: Snakemake substitutes the constraint text per file, quadratic for 1,000+ slides.
    slide=r"(?!(?:montage|tiling_summary)(?:[.]|$))[A-Za-z0-9_-][A-Za-z0-9._-]*",
    shots="[1-9][0-9]*",  # 0 shots = zero-shot, its own rule
    five="|".join(re.escape(m) for m in FIVE_CKPTS),
    ablation="|".join(re.escape(a) for a in config["ablations"]) or "(?!)",


def slide_qc_notice(summary_csv):
    from fiveflow.slides.montage import qc_notice

    return qc_notice(summary_csv)


def slide_path(wildcards):
    return COHORT.slide_path(wildcards.slide)


def bag_paths():
    return expand(LAYOUT.bag(ENCODER, "{slide}"), slide=SLIDES)


def prediction_files():
    files = expand(LAYOUT.predictions("{m}", 0), m=list(FIVE_CKPTS))
    files += expand(LAYOUT.predictions("{m}", "{shots}"), m=list(FIVE_CKPTS), shots=SHOTS)
    files += expand(LAYOUT.predictions("{b}", "{shots}"), b=BASELINES, shots=SHOTS)
    if MIZERO:
        files.append(LAYOUT.predictions("MI-Zero", 0))
    if BESTEPOCH_METHOD:
        files.append(LAYOUT.predictions(BESTEPOCH_METHOD, 0))
    return files


def final_targets():
    return [
        LAYOUT.evaluate.csv,
        LAYOUT.evaluate.md,
        LAYOUT.evaluate.tex,
        LAYOUT.evaluate.plot,
        LAYOUT.labels,
    ] + ([] if PRECOMPUTED else [LAYOUT.qc_montage]) + [LAYOUT.heatmap_montage(m) for m in HEATMAP_METHODS]
