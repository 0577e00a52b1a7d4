"""Snakemake script: metrics, paper-style tables and the accuracy-vs-shots plot."""

from fiveflow.evaluate.tables import evaluate_predictions
from fiveflow.rule_script import run_script


def main(smk, log):
    table = evaluate_predictions(
        list(smk.input.preds),
        smk.output,
        classes=smk.params.classes,
        n_boot=int(smk.params.n_boot),
        seed=int(smk.params.boot_seed),
        protocol=dict(smk.params.protocol),
    )
    log.info("\n%s", table.to_string(index=False))


run_script(snakemake, main)  # noqa: F821
