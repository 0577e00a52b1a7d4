"""Snakemake script: zero-shot predictions of the pre-trained model."""

from fiveflow.cohort_index import bag_map
from fiveflow.rule_script import run_script
from fiveflow.train.ablations import apply_ablation
from fiveflow.train.fewshot import run_zeroshot


def main(smk, log):
    cfg, _ = apply_ablation(smk.params.cfg, smk.params.ablation)  # e.g. ratio_0.25 evaluates at its own ratio
    pred = run_zeroshot(
        smk.input.ckpt,
        smk.input.split,
        bag_map(smk.input.bags),
        cfg,
        smk.output[0],
        method=smk.wildcards.five,
        attention_dir=smk.output.attention,
        five_score=smk.params.five_score,
    )
    log.info("zero-shot: %d predictions", len(pred))


run_script(snakemake, main)  # noqa: F821
