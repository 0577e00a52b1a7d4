# Stage 1: tissue mask + tiling by physical size, coordinates and QC thumbnails.


rule tile:
    """Tissue mask (tiatoolbox) and a grid of tiles at tiling.target_mpp for one slide.

    A slide that cannot be used (unreadable, no mpp) or has no tissue is recorded with its status
    and reason instead of stopping the run; downstream stages exclude it (see qc/tiling_summary.csv).
    """
    input:
        slide=slide_path,
    output:
        coords=LAYOUT.coords("{slide}"),
        geojson=LAYOUT.tissue_geojson("{slide}"),
        qc=report(
            LAYOUT.qc_thumbnail("{slide}"),
            caption="../report/qc.rst",
            category="1. Slides",
            subcategory="QC thumbnails",
            labels={"slide": "{slide}"},
        ),
    params:
        tiling=config["tiling"],
        mpp=lambda wc: COHORT.mpp_override(wc.slide),
    log:
        f"{LOGS}/tile/{{slide}}.log",
    benchmark:
        f"{BENCH}/tile/{{slide}}.tsv"
    conda:
        "../../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/tile.py"


rule qc_montage:
    """All QC thumbnails on one page (failures first), plus the cohort QC table: status and reason per slide."""
    input:
        qc=expand(LAYOUT.qc_thumbnail("{slide}"), slide=SLIDES),
        coords=expand(LAYOUT.coords("{slide}"), slide=SLIDES),
    output:
        montage=report(
            LAYOUT.qc_montage, caption="../report/montage.rst", category="1. Slides", subcategory="Cohort QC"
        ),
        summary=report(
            LAYOUT.tiling_summary, caption="../report/tiling_summary.rst", category="1. Slides", subcategory="Cohort QC"
        ),
    log:
        f"{LOGS}/qc_montage.log",
    benchmark:
        f"{BENCH}/qc_montage.tsv"
    conda:
        "../../envs/slides.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/qc_montage.py"
