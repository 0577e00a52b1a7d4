"""Snakemake script: one montage of all QC thumbnails and the cohort QC table."""

from fiveflow.rule_script import run_script
from fiveflow.slides.montage import failure_lines, write_montage


def main(smk, log):
    summary = write_montage(list(smk.input.qc), list(smk.input.coords), smk.output.montage, smk.output.summary)
    log.info("%d slides: %s", len(summary), summary["status"].value_counts().to_dict())
    for line in failure_lines(summary):
        log.warning(line)


run_script(snakemake, main)  # noqa: F821
