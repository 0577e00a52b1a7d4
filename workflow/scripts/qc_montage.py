"""Snakemake script: one montage of all QC thumbnails and a tiling summary table."""
from fiveflow.slides.montage import write_montage
from fiveflow.smk import run_script


def main(smk, log):
    write_montage(list(smk.input.qc), list(smk.input.coords), smk.output.montage, smk.output.summary)


run_script(snakemake, main)  # noqa: F821
