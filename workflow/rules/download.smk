# GDC download: one rule job per file of a GDC manifest, resumable and md5-verified (fiveflow.download).
#
# The main Snakefile includes it for `cohort.source: gdc` (common.smk sets GDC_ROWS from the merged manifests
# and GDC_DIR = cohort.gdc.slide_dir). Another including Snakefile sets, before `include:`:
#   GDC_MANIFEST   path to a GDC manifest TSV (id filename md5 size state), e.g. from the GDC portal cart
#                  (or GDC_ROWS: file name -> fiveflow.download.ManifestRow)
#   GDC_DIR        folder the files are saved in, under their manifest file names
# and optionally GDC_BASE_URL (default: the GDC data endpoint), GDC_TOKEN_ENV (default GDC_TOKEN: the
# environment variable holding a token for controlled-access files; never put a token in the config),
# LOGS and BENCH (log and benchmark folders; default logs/ and benchmarks/).
# Bound the concurrent transfers with `--resources gdc_connections=4` (each job takes one).
# An interrupted or failed job leaves a hidden GDC_DIR/.NAME.partial that the retry resumes from.


from fiveflow.download import GDC_DATA_URL, read_manifest  # noqa: E402

if "GDC_ROWS" not in globals():  # the main workflow (cohort.source gdc) sets the rows from its merged manifests
    try:
        GDC_ROWS = {r.filename: r for r in read_manifest(GDC_MANIFEST)}
    except (ValueError, FileNotFoundError) as _err:
        raise WorkflowError(str(_err)) from None
GDC_BASE_URL = globals().get("GDC_BASE_URL") or GDC_DATA_URL
GDC_TOKEN_ENV = globals().get("GDC_TOKEN_ENV") or "GDC_TOKEN"
_GDC_LOGS = globals().get("LOGS", "logs")
_GDC_BENCH = globals().get("BENCH", "benchmarks")


def gdc_row(name):
    try:
        r = GDC_ROWS[name]
    except KeyError:
        raise WorkflowError(f"{GDC_DIR}/{name} is not in the GDC manifest(s), so it cannot be downloaded. "
                            "Fix: add it to the manifest, or put the file there yourself.") from None
    return {"file_id": r.id, "md5": r.md5, "size": r.size}


rule gdc_download:
    """Download one manifest file from the GDC into GDC_DIR/{gdc_file}: resumes a partial, verifies size and md5,
    retries with backoff, and renames onto the final name only when verified."""
    output:
        f"{GDC_DIR}/{{gdc_file}}",
    wildcard_constraints:
        gdc_file=r"[^/]+",  # a name outside the manifest fails in gdc_row (an alternation is quadratic at 1,000+ files)
    params:
        row=lambda wc: gdc_row(wc.gdc_file),
        base_url=GDC_BASE_URL,
        token_env=GDC_TOKEN_ENV,
    log:
        f"{_GDC_LOGS}/gdc_download/{{gdc_file}}.log",
    benchmark:
        f"{_GDC_BENCH}/gdc_download/{{gdc_file}}.tsv"
    conda:
        "../../envs/download.yaml"
    retries: 2
    threads: 1
    resources:
        gdc_connections=1,
        mem_mb=500,
        runtime=360,
    script:
        "../scripts/gdc_download.py"


rule gdc_download_all:
    """Every file of GDC_MANIFEST."""
    input:
        expand(f"{GDC_DIR}/{{gdc_file}}", gdc_file=sorted(GDC_ROWS)),
