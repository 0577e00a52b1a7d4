# Stage 4b: MI-Zero zero-shot baseline (Lu et al., CVPR 2023) for encoders with a text tower
# (plip, clip-vit-b16, quiltnet-b32). Nothing is trained: it scores the test bags once.


rule mizero:
    """MI-Zero: cosine of each instance with prompt-ensembled class texts, top-k pooled per class."""
    input:
        split=LAYOUT.split,
        bags=bag_paths(),
        prompts=MIZERO_PROMPTS,
    output:
        LAYOUT.predictions("MI-Zero", 0),
        attention=directory(LAYOUT.attention_dir("MI-Zero", 0)),
    params:
        cfg=MIZERO_CFG,
    log:
        f"{LOGS}/zeroshot/MI-Zero.log",
    benchmark:
        f"{BENCH}/zeroshot/MI-Zero.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=TRAIN_GPU,
    script:
        "../scripts/mizero.py"
