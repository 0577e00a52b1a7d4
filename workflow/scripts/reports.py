"""Snakemake script: raw reports -> six FiVE answers -> fine-grained labels per patient."""
from fiveflow.reports.structure import structure_reports
from fiveflow.smk import run_script


def main(smk, log):
    df = structure_reports(smk.input.reports, smk.output.labels, smk.params.reports, log=log,
                           questions=smk.input.questions)
    log.info("%d patients structured; %d unique descriptions", len(df), df["description"].nunique())


run_script(snakemake, main)  # noqa: F821
