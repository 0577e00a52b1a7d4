"""Snakemake script: FiVE pre-training on fine-grained descriptions, or one of its ablations."""

from fiveflow.cohort_index import bag_map
from fiveflow.rule_script import run_script
from fiveflow.train.ablations import apply_ablation
from fiveflow.train.pretrain import pretrain


def main(smk, log):
    # rule pretrain_ablation: e.g. class_texts, no_tfs, ratio_0.25 (see fiveflow.train.ablations)
    cfg, targets = apply_ablation(smk.params.cfg, smk.wildcards.get("ablation"))
    # train.zeroshot_epoch: best_on_test (rule pretrain only, not the ablations): zero-shot on the test split
    # after every epoch, for the optimistic FiVE-bestepoch row
    each_epoch = bool(smk.params.get("zeroshot_each_epoch", False)) and not smk.wildcards.get("ablation")
    summary = pretrain(
        smk.input.split,
        smk.input.labels,
        bag_map(smk.input.bags),
        cfg,
        smk.output[0],
        threads=smk.threads,
        log=log,
        targets=targets,
        zeroshot_each_epoch=each_epoch,
    )
    log.info("pretrain summary: %s", summary)


run_script(snakemake, main)  # noqa: F821
