# Stage 2: patch embedding into one feature bag per slide (GPU when present).


rule embed:
    """Feature bag (features N x D, coords N x 2) of one slide with the configured timm encoder."""
    input:
        slide=slide_path,
        coords=f"{R}/coords/{{slide}}.parquet",
    output:
        f"{R}/features/{ENCODER}/{{slide}}.h5",
    params:
        embedding=config["embedding"],
    log:
        f"{LOGS}/embed/{ENCODER}/{{slide}}.log",
    benchmark:
        f"{BENCH}/embed/{ENCODER}/{{slide}}.tsv"
    conda:
        "../../envs/embed.yaml"
    threads: config["embedding"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=EMBED_GPU,
    script:
        "../scripts/embed.py"
