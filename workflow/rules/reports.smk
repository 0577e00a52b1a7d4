# Stage 3: raw report text -> answers to the six FiVE questions -> fine-grained labels.
from fiveflow.config import answer_files  # noqa: E402

REPORT_ENVVARS = (
    [config["reports"].get("openai", {}).get("api_key_env", "OPENAI_API_KEY")]
    if backend_name(config["reports"]["backend"]) == "openai"
    else []
)
# openai: a run in which reports failed for good fails the job (the labels are removed by Snakemake, the cached
# answers stay); restarting it retries only the failed reports. Other backends: the profile's retries (None).
REPORT_RETRIES = (
    int(config["reports"].get("openai", {}).get("rule_retries", 2))
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
    [str(resolve_path(f, Path(ROOT))) for f in answer_files(config["reports"].get("precomputed"))]
    if backend_name(config["reports"]["backend"]) == "precomputed"
    else []
)


rule reports:
    """Six FiVE answers per patient of the cohort (offline rules, precomputed answers or an OpenAI-compatible LLM)."""
    input:
        reports=COHORT.reports_csv,
        samples=COHORT.samples_csv,  # only the cohort's patients are structured
        answers=REPORT_ANSWERS,
        questions=str(resolve_path(config["reports"].get("questions", "resources/questions/five-v1.yaml"), Path(ROOT))),
    output:
        labels=report(
            f"{R}/reports/labels.parquet", caption="../report/labels.rst", category="2. Reports"
        ),
    params:
        reports=config["reports"],
        classes=[c["name"] for c in config["classes"]],
        # explicit, so a change reruns the rule (and reads in the job's params): true = the rules backend names
        # the histologic type, the class label, in the descriptions (model rules-v6+histotype); false = FiVE's six answers
        name_histotype=bool(config["reports"].get("name_histotype", False)),
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
