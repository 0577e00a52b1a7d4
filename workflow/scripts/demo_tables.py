"""Snakemake script: samples sheet, raw reports and ground truth of the demo cohort."""

from fiveflow.cohort.demo import demo_cases, write_demo_tables
from fiveflow.rule_script import run_script


def main(smk, log):
    demo = smk.params.demo
    cases = demo_cases(int(demo["n_slides"]), int(demo["seed"]))
    # paths relative to the samples sheet's folder, so the sheet stays valid if results/ moves
    paths = {c.slide_id: f"slides/{c.slide_id}.tif" for c in cases}
    write_demo_tables(cases, paths, smk.output.samples, smk.output.reports, smk.output.truth)
    log.info("demo cohort: %d slides", len(cases))


run_script(snakemake, main)  # noqa: F821
