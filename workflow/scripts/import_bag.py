"""Snakemake script: import one slide's features made by another tool (DSMIL CSV or CLAM/TRIDENT h5)."""

from fiveflow.embed.importers import import_feature_file
from fiveflow.rule_script import run_script


def main(smk, log):
    out = import_feature_file(smk.input[0], smk.output[0], slide_id=smk.wildcards.slide, encoder=smk.params.encoder)
    log.info("imported %s -> %s", smk.input[0], out)


run_script(snakemake, main)  # noqa: F821
