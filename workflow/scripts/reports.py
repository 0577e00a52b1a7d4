"""Snakemake script: raw reports -> six FiVE answers -> fine-grained labels per patient."""
from fiveflow.reports.structure import structure_reports
from fiveflow.smk import run_script


def main(smk, log):
    cfg = {**smk.params.reports, "name_histotype": bool(smk.params.name_histotype)}
    df = structure_reports(smk.input.reports, smk.output.labels, cfg, log=log, questions=smk.input.questions,
                           id_column=cfg.get("id_column"), text_column=cfg.get("text_column"))
    log.info("%d patients structured; %d unique descriptions", len(df), df["description"].nunique())


run_script(snakemake, main)  # noqa: F821
