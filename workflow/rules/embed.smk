# Stage 2: patch embedding into one feature bag per slide (GPU when present), or importing bags made elsewhere.

# What decides the features (a change re-embeds); batch size, workers, threads and device only decide speed.
EMBED_PARAMS = {k: config["embedding"][k] for k in ("encoder", "weights", "seed", "precision", "deterministic")}
if EMBED_ENVVARS:

    # A hub token for gated weights (UNI, CONCH), passed on to cluster jobs when the user has set one;
    # it never enters the config, logs or bags.
    envvars:
        *EMBED_ENVVARS,


if not PRECOMPUTED and EMBED_SHARD_SIZE == 1:

    rule embed:
        """Feature bag (features N x D, coords N x 2) of one slide with the configured encoder.

        Declares one GPU: the workstation profile's `resources: gpu=1` then runs one embedding job
        at a time on the GPU while tiling and other CPU jobs fill the remaining cores.
        """
        input:
            slide=slide_path,
            coords=LAYOUT.coords("{slide}"),
        output:
            LAYOUT.bag(ENCODER, "{slide}"),
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

elif not PRECOMPUTED:
    # embedding.shard_size > 1: one job per shard of slides (sorted ids, in runs of shard_size), one process and one
    # model load for all of them (fiveflow.embed.shards). Snakemake still sees one bag per slide. Each shard is a
    # rule of its own, embed_shard_0000, ...; resources set for `embed` (set-resources in a profile) apply to them.
    # Snakemake matches set-resources to rule names exactly: what a profile (or --set-resources) gives `embed` is
    # given to every shard rule below the same way Snakemake gives it to a rule of that name
    _embed_set = workflow.resource_settings.overwrite_resources.get("embed")
    for _shard, _members in EMBED_SHARDS.items():

        rule:
            name:
                f"embed_shard_{_shard}"
            input:
                slides=[COHORT.slide_path(s) for s in _members],
                coords=[LAYOUT.coords(s) for s in _members],
            output:
                [LAYOUT.bag(ENCODER, s) for s in _members],
            params:
                embedding=EMBED_PARAMS,
                root=ROOT,
                shard=_shard,
                slides=_members,
            log:
                f"{LOGS}/embed/{ENCODER}/shard-{_shard}.log",
            benchmark:
                f"{BENCH}/embed/{ENCODER}/shard-{_shard}.tsv"
            conda:
                "../../envs/embed.yaml"
            threads: config["embedding"]["threads"]
            resources:
                mem_mb=4000,
                runtime=30 + 15 * len(_members),
                gpu=EMBED_GPU,
            script:
                "../scripts/embed_shard.py"

        if _embed_set:
            getattr(rules, f"embed_shard_{_shard}").rule.resources.update(_embed_set)

    rule embed:
        """Every feature bag (made by the shard rules): `--until embed` and the target `embed` work as with a job
        per slide."""
        input:
            bag_paths(),
        localrule: True

else:

    rule import_bag:
        """Feature bag of one slide imported from `embedding.precomputed` (DSMIL CSV or CLAM/TRIDENT h5)."""
        input:
            lambda wc: PRECOMPUTED[wc.slide],
        output:
            LAYOUT.bag(ENCODER, "{slide}"),
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
