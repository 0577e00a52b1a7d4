"""Snakemake script: download one GDC file, resumable and verified (fiveflow.download.download_file)."""

from fiveflow.download import download_file
from fiveflow.rule_script import run_script


def main(smk, log):
    row = smk.params.row
    res = download_file(
        row["file_id"],
        smk.output[0],
        row["md5"],
        row["size"],
        base_url=smk.params.base_url,
        token_env=smk.params.token_env,
        progress=False,
    )
    log.info(
        "%s (%s): %s, %d bytes fetched in %d request(s)%s",
        res.file_id,
        res.filename,
        res.status,
        res.bytes_fetched,
        res.attempts,
        f", resumed at byte {res.resumed_from}" if res.resumed_from else "",
    )


run_script(snakemake, main)  # noqa: F821
