# Stage 2: patch embedding into one feature bag per slide (GPU when present), or importing bags made elsewhere.

# What decides the features (a change re-embeds); batch size, workers, threads and device only decide speed.
EMBED_PARAMS = {k: config["embedding"].get(k) for k in ("encoder", "weights", "seed", "precision", "deterministic")}
if EMBED_ENVVARS:

    # A hub token for gated weights (UNI, CONCH), passed on to cluster jobs when the user has set one;
    # it never enters the config, logs or bags.
    envvars:
        *EMBED_ENVVARS,


if not PRECOMPUTED:

    rule embed:
        """Feature bag (features N x D, coords N x 2) of one slide with the configured encoder.

        Declares one GPU: the workstation profile's `resources: gpu=1` then runs one embedding job
        at a time on the GPU while tiling and other CPU jobs fill the remaining cores.
        """
        input:
            slide=slide_path,
            coords=f"{R}/coords/{{slide}}.parquet",
        output:
            f"{R}/features/{ENCODER}/{{slide}}.h5",
        params:
            embedding=EMBED_PARAMS,
            root=ROOT,
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

else:

    rule import_bag:
        """Feature bag of one slide imported from `embedding.precomputed` (DSMIL CSV or CLAM/TRIDENT h5)."""
        input:
            lambda wc: PRECOMPUTED[wc.slide],
        output:
            f"{R}/features/{ENCODER}/{{slide}}.h5",
        params:
            encoder=ENCODER,
        log:
            f"{LOGS}/import_bag/{ENCODER}/{{slide}}.log",
        benchmark:
            f"{BENCH}/import_bag/{ENCODER}/{{slide}}.tsv"
        conda:
            "../../envs/embed.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/import_bag.py"
