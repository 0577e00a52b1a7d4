"""Snakemake script: attention heatmaps of one method (one PNG per test slide, one montage)."""

from fiveflow.evaluate.heatmaps import render_method
from fiveflow.rule_script import run_script


def main(smk, log):
    p = smk.params
    files = render_method(
        smk.input.attention,
        p.slide_paths,
        smk.output.pngs,
        smk.output.montage,
        thumbnail_size=int(p.thumbnail_size),
        max_slides=int(p.max_slides),
        normalise=p.normalise,
        alpha=float(p.alpha),
        positive=p.positive,
        logger=log,
    )
    log.info("%s: %d heatmaps", smk.wildcards.method, len(files))


run_script(snakemake, main)  # noqa: F821
