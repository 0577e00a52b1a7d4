"""Snakemake script: few-shot fine-tuning, all draws of one shot count."""

from fiveflow.cohort_index import bag_map
from fiveflow.rule_script import run_script
from fiveflow.train.fewshot import run_fewshot


def main(smk, log):
    pred = run_fewshot(
        smk.input.ckpt,
        smk.input.split,
        smk.input.draws,
        bag_map(smk.input.bags),
        smk.params.cfg,
        int(smk.wildcards.shots),
        smk.output[0],
        threads=smk.threads,
        method=smk.wildcards.five,
        attention_dir=smk.output.attention,
        five_score=smk.params.five_score,
    )
    log.info("%s few-shot %s: %d predictions", smk.wildcards.five, smk.wildcards.shots, len(pred))


run_script(snakemake, main)  # noqa: F821
