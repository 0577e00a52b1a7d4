# Shared set-up: config validation, the slide list, and path helpers used by every stage.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from fiveflow.config import ConfigError, resolve_path, validate_config  # noqa: E402
from fiveflow.embed.text_towers import has_text_tower  # noqa: E402
from fiveflow.reports import backend_name  # noqa: E402
from fiveflow.train.ablations import parse_ablation  # noqa: E402
from fiveflow.workflow import Cohort, precomputed_sources  # noqa: E402

try:
    validate_config(config, source="config", root=Path(workflow.basedir))
except ConfigError as _err:
    raise WorkflowError(f"invalid configuration:\n{_err}") from None

ROOT = str(Path(workflow.basedir))
R = config["results_dir"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
ENCODER = config["embedding"]["encoder"]
COHORT = Cohort.from_config(config, Path(workflow.basedir))
SLIDES = COHORT.slide_ids
SHOTS = [int(s) for s in config["fewshot"]["shots"]]
BASELINES = list(config["baselines"])
EMBED_GPU = 0 if config["embedding"]["device"] == "cpu" else 1
# Hub token for gated encoder weights, passed to (cluster) jobs only when the user has one set.
EMBED_ENVVARS = [v for v in ("HF_TOKEN",) if os.environ.get(v)]
# Features imported from another tool (DSMIL CSVs, CLAM/TRIDENT h5) instead of tiling and embedding slides.
PRECOMPUTED = {}
if config["embedding"].get("precomputed"):
    try:
        PRECOMPUTED = precomputed_sources(resolve_path(config["embedding"]["precomputed"], Path(ROOT)), SLIDES)
    except (ValueError, FileNotFoundError) as _err:
        raise WorkflowError(str(_err)) from None
TRAIN_GPU = 0 if config["train"]["device"] == "cpu" else 1
# FiVE and its ablations: method name -> pre-trained checkpoint (predictions/{method}_{shots}.parquet)
FIVE_CKPTS = {"FiVE": f"{R}/models/pretrain.pt"}
ABLATIONS = {a: parse_ablation(a) for a in config["ablations"]}
FIVE_CKPTS.update({ab.method: f"{R}/models/pretrain_{a}.pt" for a, ab in ABLATIONS.items()})
# ablation method (e.g. FiVE-noTFS) -> its config entry (e.g. no_tfs); FiVE itself has none
ABLATION_OF = {ab.method: a for a, ab in ABLATIONS.items()}
# Only the sections training reads, so that e.g. a tiling change does not look like a training change.
TRAIN_CFG = {k: config[k] for k in ("classes", "split", "fewshot", "model", "train", "baselines")}
# MI-Zero zero-shot baseline: auto = when the encoder has a text tower (validate_config refuses true without one)
_MZ = {"enabled": "auto", "topk": 50, "prompts": "resources/prompts/mizero-lung.yaml", **(config.get("mizero") or {})}
MIZERO = has_text_tower(ENCODER) if _MZ["enabled"] == "auto" else bool(_MZ["enabled"])
MIZERO_PROMPTS = str(resolve_path(_MZ["prompts"], Path(ROOT)))
MIZERO_CFG = {"classes": config["classes"], "mizero": _MZ, "train": {"device": config["train"]["device"]},
              "embedding": {k: config["embedding"][k] for k in ("encoder", "weights", "seed")}}


wildcard_constraints:
    # only the cohort's own slide ids (sanitised, so no path separators can sneak in)
    slide="|".join(re.escape(s) for s in SLIDES),
    shots="[1-9][0-9]*",  # 0 shots = zero-shot, its own rule
    five="|".join(re.escape(m) for m in FIVE_CKPTS),
    ablation="|".join(re.escape(a) for a in config["ablations"]) or "(?!)",


def slide_qc_notice(summary_csv):
    from fiveflow.slides.montage import qc_notice

    return qc_notice(summary_csv)


def slide_path(wildcards):
    return COHORT.slide_path(wildcards.slide)


def bag_paths():
    return expand(f"{R}/features/{ENCODER}/{{slide}}.h5", slide=SLIDES)


def prediction_files():
    files = expand(f"{R}/predictions/{{m}}_0.parquet", m=list(FIVE_CKPTS))
    files += expand(f"{R}/predictions/{{m}}_{{shots}}.parquet", m=list(FIVE_CKPTS), shots=SHOTS)
    files += expand(f"{R}/predictions/{{b}}_{{shots}}.parquet", b=BASELINES, shots=SHOTS)
    if MIZERO:
        files.append(f"{R}/predictions/MI-Zero_0.parquet")
    return files


def final_targets():
    return [
        f"{R}/tables/fewshot.csv",
        f"{R}/tables/fewshot.md",
        f"{R}/tables/fewshot.tex",
        f"{R}/plots/fewshot.png",
        f"{R}/reports/labels.parquet",
    ] + ([] if PRECOMPUTED else [f"{R}/qc/montage.png"])
