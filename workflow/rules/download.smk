# GDC download: one rule job per file of a GDC manifest, resumable and md5-verified (fiveflow.download).
#
# Not included by the main Snakefile yet. An including Snakefile sets, before `include:`:
#   GDC_MANIFEST   path to a GDC manifest TSV (id filename md5 size state), e.g. from the GDC portal cart
#   GDC_DIR        folder the files are saved in, under their manifest file names
# and optionally GDC_BASE_URL (default: the GDC data endpoint), GDC_TOKEN_ENV (default GDC_TOKEN: the
# environment variable holding a token for controlled-access files; never put a token in the config),
# LOGS and BENCH (log and benchmark folders; default logs/ and benchmarks/).
# Bound the concurrent transfers with `--resources gdc_connections=4` (each job takes one).
# An interrupted or failed job leaves a hidden GDC_DIR/.NAME.partial that the retry resumes from.
import re

from fiveflow.download import GDC_DATA_URL, read_manifest  # noqa: E402

try:
    GDC_ROWS = {r.filename: r for r in read_manifest(GDC_MANIFEST)}
except (ValueError, FileNotFoundError) as _err:
    raise WorkflowError(str(_err)) from None
GDC_BASE_URL = globals().get("GDC_BASE_URL") or GDC_DATA_URL
GDC_TOKEN_ENV = globals().get("GDC_TOKEN_ENV") or "GDC_TOKEN"
_GDC_LOGS = globals().get("LOGS", "logs")
_GDC_BENCH = globals().get("BENCH", "benchmarks")


rule gdc_download:
    """Download one manifest file from the GDC into GDC_DIR/{gdc_file}: resumes a partial, verifies size and md5,
    retries with backoff, and renames onto the final name only when verified."""
    output:
        f"{GDC_DIR}/{{gdc_file}}",
    wildcard_constraints:
        gdc_file="|".join(re.escape(n) for n in sorted(GDC_ROWS)),
    params:
        row=lambda wc: {"file_id": GDC_ROWS[wc.gdc_file].id, "md5": GDC_ROWS[wc.gdc_file].md5,
                        "size": GDC_ROWS[wc.gdc_file].size},
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
