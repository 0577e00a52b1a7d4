"""Snakemake script: tissue mask + tiling of one slide."""
from fiveflow.slides.tiling import tile_slide
from fiveflow.smk import run_script


def main(smk, log):
    meta = tile_slide(smk.input.slide, smk.wildcards.slide, smk.params.tiling, smk.output.coords, smk.output.qc)
    log.info("%s: %d tiles of %d px at %.3g mpp (level-0 %d px, read level %d), tissue %.1f%%",
             meta.slide_id, meta.n_tiles, meta.patch_size_px, meta.target_mpp, meta.patch_size_level0,
             meta.read_level, 100 * meta.tissue_fraction)


run_script(snakemake, main)  # noqa: F821
