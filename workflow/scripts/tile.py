"""Snakemake script: tissue mask + tiling of one slide (a bad slide is recorded, not raised)."""

from fiveflow.rule_script import run_script
from fiveflow.slides.tiling import tile_slide


def main(smk, log):
    meta = tile_slide(
        smk.input.slide,
        smk.wildcards.slide,
        smk.params.tiling,
        smk.output.coords,
        smk.output.qc,
        smk.output.geojson,
        mpp_override=smk.params.mpp,
        on_error="record",
    )
    if meta.status == "ok":
        log.info(
            "%s: %d tiles of %d px at %.3g mpp (level-0 %d px, read level %d), tissue %.2f mm2 (%.1f%%), "
            "mask level %d at %.3g mpp",
            meta.slide_id,
            meta.n_tiles,
            meta.patch_size_px,
            meta.target_mpp,
            meta.patch_size_level0,
            meta.read_level,
            meta.tissue_area_mm2,
            100 * meta.tissue_fraction,
            meta.mask_level,
            meta.mask_mpp,
        )
    else:
        log.warning("%s: %s (excluded downstream): %s", meta.slide_id, meta.status, meta.message)


run_script(snakemake, main)  # noqa: F821
