# fiveflow: whole-slide classification with fine-grained, LLM-structured reports (FiVE, CVPR 2024).
# Thin on purpose: configuration, validation and the target list. Every stage lives in
# workflow/rules/*.smk and calls the tested `fiveflow` package through workflow/scripts/*.py.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/fetch.smk"


if COHORT.source == "gdc" and GDC_DOWNLOAD:

    include: "workflow/rules/download.smk"


include: "workflow/rules/slides.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/reports.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/mizero.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/heatmaps.smk"


rule all:
    input:
        final_targets(),
    default_target: True


onsuccess:
    # Slides that were recorded as failed or without tissue are excluded, never silently: say so.
    if not PRECOMPUTED:
        print(slide_qc_notice(LAYOUT.tiling_summary), end="")
