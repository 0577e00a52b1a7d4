"""Snakemake script: FiVE pre-training on fine-grained descriptions."""
from fiveflow.smk import run_script
from fiveflow.train.pretrain import pretrain
from fiveflow.workflow import bag_map


def main(smk, log):
    summary = pretrain(smk.input.split, smk.input.labels, bag_map(smk.input.bags), smk.params.cfg,
                       smk.output[0], threads=smk.threads, log=log)
    log.info("pretrain summary: %s", summary)


run_script(snakemake, main)  # noqa: F821
