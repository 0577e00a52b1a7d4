"""Snakemake script: one MIL baseline on the few-shot draws of one shot count."""

from fiveflow.baselines import run_baseline
from fiveflow.cohort_index import bag_map
from fiveflow.rule_script import run_script


def main(smk, log):
    pred = run_baseline(
        smk.wildcards.baseline,
        smk.input.split,
        smk.input.draws,
        bag_map(smk.input.bags),
        smk.params.cfg,
        int(smk.wildcards.shots),
        smk.output[0],
        threads=smk.threads,
        attention_dir=smk.output.attention,
    )
    log.info("%s %s-shot: %d predictions", smk.wildcards.baseline, smk.wildcards.shots, len(pred))


run_script(snakemake, main)  # noqa: F821
