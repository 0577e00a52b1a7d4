"""Snakemake script: MI-Zero zero-shot baseline (text tower of the patch encoder, top-k pooling)."""

from fiveflow.baselines.mizero import run_mizero
from fiveflow.cohort_index import bag_map
from fiveflow.rule_script import run_script


def main(smk, log):
    pred = run_mizero(
        smk.input.split,
        bag_map(smk.input.bags),
        smk.params.cfg,
        smk.output[0],
        log=log,
        attention_dir=smk.output.attention,
    )
    log.info("MI-Zero: %d predictions", len(pred))


run_script(snakemake, main)  # noqa: F821
