"""Snakemake script: the samples sheet of a GDC cohort (fiveflow.cohort.gdc)."""

from fiveflow.cohort.gdc import gdc_table, write_samples
from fiveflow.rule_script import run_script


def main(smk, log):
    table = gdc_table(smk.params.gdc, smk.params.classes, smk.params.root)
    write_samples(table, smk.output[0])
    log.info(
        "GDC cohort: %d slides, %d patients, %s",
        len(table),
        table["patient_id"].nunique(),
        table["label"].value_counts().to_dict(),
    )


run_script(snakemake, main)  # noqa: F821
