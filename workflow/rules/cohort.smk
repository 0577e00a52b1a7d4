# Stage 0: the embedded synthetic demo cohort (only when cohort.source is "demo").


rule demo_slide:
    """One synthetic H&E-like pyramidal TIFF, deterministic in (seed, index)."""
    output:
        LAYOUT.demo_slide("{slide}"),
    params:
        demo=config["cohort"].get("demo"),
    log:
        f"{LOGS}/demo_slide/{{slide}}.log",
    benchmark:
        f"{BENCH}/demo_slide/{{slide}}.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/demo_slide.py"


rule demo_tables:
    """Samples sheet, raw reports and ground-truth attributes of the demo cohort."""
    output:
        samples=LAYOUT.demo_samples,
        reports=LAYOUT.demo_reports,
        truth=LAYOUT.demo_truth,
    params:
        demo=config["cohort"].get("demo"),
        slides_dir=LAYOUT.demo_slides_dir,
    log:
        f"{LOGS}/demo_tables.log",
    benchmark:
        f"{BENCH}/demo_tables.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/demo_tables.py"


rule gdc_samples:
    """Samples sheet of a GDC cohort (cohort.source gdc): slides from the manifests, merged across releases on
    file name, labels from the manifest class or the clinical table, TCGA patient barcodes."""
    input:
        manifests=GDC_INPUTS,
    output:
        LAYOUT.gdc_samples,
    params:
        gdc=config["cohort"].get("gdc"),
        classes=[c["name"] for c in config["classes"]],
        root=ROOT,
    log:
        f"{LOGS}/gdc_samples.log",
    benchmark:
        f"{BENCH}/gdc_samples.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/gdc_samples.py"
