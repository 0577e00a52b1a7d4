"""Snakemake script: FiVE's zero-shot row at the pre-training epoch best on the test split (optimistic)."""

from fiveflow.rule_script import run_script
from fiveflow.train.fewshot import run_zeroshot_bestepoch


def main(smk, log):
    pred = run_zeroshot_bestepoch(
        smk.input.ckpt, smk.input.split, smk.params.cfg, smk.output[0], log=log, method=smk.params.method
    )
    log.info("%s: %d predictions", smk.params.method, len(pred))


run_script(snakemake, main)  # noqa: F821
