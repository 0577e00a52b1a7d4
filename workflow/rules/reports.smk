# Stage 3: raw report text -> answers to the six FiVE questions -> fine-grained labels.
from fiveflow.config import answer_files  # noqa: E402
from fiveflow.settings import with_defaults  # noqa: E402

# reports.openai is optional (only the openai backend needs it): its keys' defaults come from the schema
_OPENAI = with_defaults(config["reports"].get("openai"), "reports.openai")

REPORT_ENVVARS = (
    [_OPENAI["api_key_env"]]
    if backend_name(config["reports"]["backend"]) == "openai"
    else []
)
# openai: a run in which reports failed for good fails the job (the labels are removed by Snakemake, the cached
# answers stay); restarting it retries only the failed reports. Other backends: the profile's retries (None).
REPORT_RETRIES = (
    int(_OPENAI["rule_retries"])
    if backend_name(config["reports"]["backend"]) == "openai"
    else None
)
if REPORT_ENVVARS:

    # Snakemake checks these are set before running and passes them to cluster jobs;
    # the key itself never enters the config, logs or caches.
    envvars:
        *REPORT_ENVVARS,


# backend import: the answers file(s), so that a `downloads` entry fetches them first
REPORT_ANSWERS = (
    [str(resolve_path(f, Path(ROOT))) for f in answer_files(config["reports"]["precomputed"])]
    if backend_name(config["reports"]["backend"]) == "precomputed"
    else []
)


rule reports:
    """Six FiVE answers per patient of the cohort (offline rules, precomputed answers or an OpenAI-compatible LLM)."""
    input:
        reports=COHORT.reports_csv,
        samples=COHORT.samples_csv,  # only the cohort's patients are structured
        answers=REPORT_ANSWERS,
        questions=str(resolve_path(config["reports"]["questions"], Path(ROOT))),
    output:
        labels=report(
            LAYOUT.labels, caption="../report/labels.rst", category="2. Reports"
        ),
    params:
        reports=config["reports"],
        classes=[c["name"] for c in config["classes"]],
        # explicit, so a change reruns the rule (and reads in the job's params): true = the rules backend names
        # the histologic type, the class label, in the descriptions (model rules-v8+histotype); false = FiVE's six answers
        name_histotype=bool(config["reports"]["name_histotype"]),
    log:
        f"{LOGS}/reports.log",
    benchmark:
        f"{BENCH}/reports.tsv"
    conda:
        "../../envs/reports.yaml"
    retries: REPORT_RETRIES
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    script:
        "../scripts/reports.py"
