"""Snakemake script: FiVE pre-training on fine-grained descriptions (or, for the ablation, class texts)."""
from fiveflow.smk import run_script
from fiveflow.train.pretrain import pretrain
from fiveflow.workflow import bag_map


def main(smk, log):
    targets = smk.wildcards.get("ablation", "descriptions")  # pretrain_ablation: class_texts
    summary = pretrain(smk.input.split, smk.input.labels, bag_map(smk.input.bags), smk.params.cfg,
                       smk.output[0], threads=smk.threads, log=log, targets=targets)
    log.info("pretrain summary: %s", summary)


run_script(snakemake, main)  # noqa: F821
