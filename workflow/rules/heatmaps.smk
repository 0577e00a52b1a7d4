# Stage 5b: attention heatmaps over slide thumbnails, from the per-tile scores training stored
# (attention/{method}_{shots}/); the slide is read only for its thumbnail.


rule heatmaps:
    """One heatmap PNG per test slide of run 0 of a method, and a montage of up to heatmaps.max_slides."""
    input:
        attention=lambda wc: LAYOUT.attention_dir(wc.method, HEATMAP_METHODS[wc.method]),
        slides=[COHORT.slide_path(s) for s in SLIDES],
    output:
        pngs=directory(LAYOUT.heatmaps_dir("{method}")),
        montage=report(LAYOUT.heatmap_montage("{method}"), caption="../report/heatmap.rst", category="4. Heatmaps"),
    wildcard_constraints:
        method="|".join(re.escape(m) for m in HEATMAP_METHODS) or "(?!)",
    params:
        slide_paths={s: str(COHORT.slide_path(s)) for s in SLIDES},
        thumbnail_size=config["tiling"]["thumbnail_size"],
        max_slides=HEATMAPS["max_slides"],
        normalise=HEATMAPS["normalise"],
        alpha=HEATMAPS["alpha"],
        five_score=HEATMAPS["five_score"],  # for the caption (the scores come from the training jobs)
        positive=config["classes"][1]["name"],
        shots=lambda wc: HEATMAP_METHODS[wc.method],
    log:
        f"{LOGS}/heatmaps/{{method}}.log",
    benchmark:
        f"{BENCH}/heatmaps/{{method}}.tsv"
    conda:
        "../../envs/slides.yaml"  # OpenSlide + cv2 for the thumbnail; matplotlib and scipy come with tiatoolbox
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    script:
        "../scripts/heatmaps.py"
