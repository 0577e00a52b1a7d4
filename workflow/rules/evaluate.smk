# Stage 5: metrics over all predictions, paper-style tables and plots.


rule evaluate:
    """Few-shot table (csv/md/tex/html, bootstrap CIs in the csv; FiVE's paired differences in paired.csv and under the
    md/tex/html tables), per-run metrics, the ablation table (csv/md/tex/html),
    the accuracy-vs-shots plot, ROC curves and confusion matrices."""
    input:
        preds=prediction_files(),
    output:
        csv=report(f"{R}/tables/fewshot.csv", caption="../report/table_csv.rst", category="3. Results", subcategory="Tables"),
        html=report(f"{R}/tables/fewshot.html", caption="../report/table.rst", category="3. Results", subcategory="Tables"),
        md=f"{R}/tables/fewshot.md",
        tex=f"{R}/tables/fewshot.tex",
        runs=f"{R}/tables/fewshot_runs.csv",
        paired=f"{R}/tables/paired.csv",  # FiVE minus each method per shots: mean difference, paired bootstrap CI
        plot=report(f"{R}/plots/fewshot.png", caption="../report/plot.rst", category="3. Results", subcategory="Plots"),
        ablation_csv=f"{R}/tables/ablation.csv",
        ablation_md=f"{R}/tables/ablation.md",
        ablation_tex=f"{R}/tables/ablation.tex",
        ablation_html=report(f"{R}/tables/ablation.html", caption="../report/ablation.rst", category="3. Results", subcategory="Tables"),
        roc=report(f"{R}/plots/roc.png", caption="../report/roc.rst", category="3. Results", subcategory="Plots"),
        confusion=report(f"{R}/plots/confusion.png", caption="../report/confusion.rst", category="3. Results", subcategory="Plots"),
    params:
        classes=[c["name"] for c in config["classes"]],
        n_boot=config["evaluate"]["n_boot"],
        boot_seed=config["evaluate"]["boot_seed"],
        # which settings FiVE's rows ran under: the authors' or fiveflow's (fiveflow.protocol), named in every table
        protocol=PROTOCOL,
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
