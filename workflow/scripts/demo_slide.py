"""Snakemake script: write one synthetic demo slide."""

from fiveflow.cohort.demo import demo_cases, write_demo_slide
from fiveflow.rule_script import run_script


def main(smk, log):
    demo = smk.params.demo
    cases = {c.slide_id: c for c in demo_cases(int(demo["n_slides"]), int(demo["seed"]))}
    case = cases[smk.wildcards.slide]
    write_demo_slide(
        case,
        smk.output[0],
        int(demo["width"]),
        int(demo["height"]),
        float(demo["mpp"]),
        difficulty=demo["difficulty"],
    )
    log.info("wrote %s (%s, %s)", smk.output[0], case.label, case.differentiation)


run_script(snakemake, main)  # noqa: F821
