"""Snakemake script: raw reports -> six FiVE answers -> fine-grained labels per patient of the cohort."""

from fiveflow.reports.structure import structure_reports
from fiveflow.rule_script import run_script
from fiveflow.samples import read_samples


def main(smk, log):
    cfg = {**smk.params.reports, "name_histotype": bool(smk.params.name_histotype)}
    if smk.input.answers:  # backend import: the resolved (possibly fetched) answers file(s)
        cfg["precomputed"] = list(smk.input.answers)
    patients = set(read_samples(smk.input.samples, classes=smk.params.classes, check_files=False)["patient_id"])
    df = structure_reports(
        smk.input.reports,
        smk.output.labels,
        cfg,
        log=log,
        questions=smk.input.questions,
        id_column=cfg["id_column"],
        text_column=cfg["text_column"],
        patients=patients,
    )
    log.info("%d patients structured; %d unique descriptions", len(df), df["description"].nunique())


run_script(snakemake, main)  # noqa: F821
