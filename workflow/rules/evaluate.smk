# Stage 5: metrics over all predictions, paper-style tables and plots.


rule evaluate:
    """Few-shot table (csv/md/tex), per-run metrics and the accuracy-vs-shots plot."""
    input:
        preds=prediction_files(),
    output:
        csv=report(f"{R}/tables/fewshot.csv", caption="../report/table.rst", category="3. Results"),
        md=f"{R}/tables/fewshot.md",
        tex=f"{R}/tables/fewshot.tex",
        runs=f"{R}/tables/fewshot_runs.csv",
        plot=report(f"{R}/plots/fewshot.png", caption="../report/plot.rst", category="3. Results"),
    params:
        classes=[c["name"] for c in config["classes"]],
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{BENCH}/evaluate.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/evaluate.py"
