"""Snakemake script: zero-shot predictions of the pre-trained model."""
from fiveflow.smk import run_script
from fiveflow.train.fewshot import run_zeroshot
from fiveflow.workflow import bag_map


def main(smk, log):
    pred = run_zeroshot(smk.input.ckpt, smk.input.split, bag_map(smk.input.bags), smk.params.cfg, smk.output[0],
                        method=smk.wildcards.five)
    log.info("zero-shot: %d predictions", len(pred))


run_script(snakemake, main)  # noqa: F821
