# Stage 4: patient-level split, FiVE pre-training, zero-shot, few-shot fine-tuning, baselines.


rule split:
    """Patient-level train/test split and the recorded few-shot draws, over the slides that passed QC."""
    input:
        samples=COHORT.samples_csv,
        slides_qc=[] if PRECOMPUTED else LAYOUT.tiling_summary,
    output:
        split=LAYOUT.split,
        draws=LAYOUT.fewshot_draws,
    params:
        split=config["split"],
        fewshot=config["fewshot"],
        classes=[c["name"] for c in config["classes"]],
    log:
        f"{LOGS}/split.log",
    benchmark:
        f"{BENCH}/split.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/split.py"


rule pretrain:
    """FiVE pre-training on the fine-grained report descriptions of the training patients (with
    train.zeroshot_epoch: best_on_test also zero-shot on the test split after every epoch, kept in the checkpoint)."""
    input:
        split=LAYOUT.split,
        labels=LAYOUT.labels,
        bags=bag_paths(),
    output:
        LAYOUT.pretrained(),
    params:
        cfg=TRAIN_CFG,
        zeroshot_each_epoch=ZEROSHOT_EPOCH == "best_on_test",
    log:
        f"{LOGS}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=TRAIN_GPU,
    script:
        "../scripts/pretrain.py"


rule pretrain_ablation:
    """Ablation (fiveflow.train.ablations): the same pre-training with one thing changed (class-text targets,
    no TFS cross-attention, another instance sampling ratio)."""
    input:
        split=LAYOUT.split,
        labels=LAYOUT.labels,
        bags=bag_paths(),
    output:
        LAYOUT.pretrained("{ablation}"),
    params:
        cfg=TRAIN_CFG,
    log:
        f"{LOGS}/pretrain_{{ablation}}.log",
    benchmark:
        f"{BENCH}/pretrain_{{ablation}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=TRAIN_GPU,
    script:
        "../scripts/pretrain.py"


rule zeroshot:
    """Zero-shot predictions: cosine to the class texts straight after pre-training."""
    input:
        ckpt=lambda wc: FIVE_CKPTS[wc.five],
        split=LAYOUT.split,
        bags=bag_paths(),
    output:
        LAYOUT.predictions("{five}", 0),
        attention=directory(LAYOUT.attention_dir("{five}", 0)),
    params:
        cfg=TRAIN_CFG,
        ablation=lambda wc: ABLATION_OF.get(wc.five),
        five_score=HEATMAPS["five_score"],
    log:
        f"{LOGS}/zeroshot/{{five}}.log",
    benchmark:
        f"{BENCH}/zeroshot/{{five}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=TRAIN_GPU,
    script:
        "../scripts/zeroshot.py"


rule zeroshot_bestepoch:
    """train.zeroshot_epoch: best_on_test: FiVE's zero-shot predictions at the pre-training epoch with the best test
    accuracy (the authors' model selection; an optimistic row, labelled in every table). CPU only: pre-training kept
    every epoch's test probabilities in the checkpoint. Requested only with that setting (prediction_files)."""
    input:
        ckpt=FIVE_CKPTS[FIVE_METHOD],
        split=LAYOUT.split,
    output:
        LAYOUT.predictions(bestepoch_method(FIVE_METHOD), 0),
    params:
        cfg=TRAIN_CFG,
        method=bestepoch_method(FIVE_METHOD),
    log:
        f"{LOGS}/zeroshot/{bestepoch_method(FIVE_METHOD)}.log",
    benchmark:
        f"{BENCH}/zeroshot/{bestepoch_method(FIVE_METHOD)}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/zeroshot_bestepoch.py"


rule fewshot:
    """Few-shot fine-tuning of the pre-trained model on the class texts, all draws of one shot count."""
    input:
        ckpt=lambda wc: FIVE_CKPTS[wc.five],
        split=LAYOUT.split,
        draws=LAYOUT.fewshot_draws,
        bags=bag_paths(),
    output:
        LAYOUT.predictions("{five}", "{shots}"),
        attention=directory(LAYOUT.attention_dir("{five}", "{shots}")),
    params:
        cfg=TRAIN_CFG,
        five_score=HEATMAPS["five_score"],
    log:
        f"{LOGS}/fewshot/{{five}}_{{shots}}.log",
    benchmark:
        f"{BENCH}/fewshot/{{five}}_{{shots}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
        gpu=TRAIN_GPU,
    script:
        "../scripts/fewshot.py"


rule baseline:
    """MIL baseline trained on the same bags and the same few-shot draws."""
    input:
        split=LAYOUT.split,
        draws=LAYOUT.fewshot_draws,
        bags=bag_paths(),
    output:
        LAYOUT.predictions("{baseline}", "{shots}"),
        attention=directory(LAYOUT.attention_dir("{baseline}", "{shots}")),
    wildcard_constraints:
        baseline="meanpool|abmil|clam_sb|dsmil|transmil",
    params:
        cfg=TRAIN_CFG,
    log:
        f"{LOGS}/baseline/{{baseline}}_{{shots}}.log",
    benchmark:
        f"{BENCH}/baseline/{{baseline}}_{{shots}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/baseline.py"
