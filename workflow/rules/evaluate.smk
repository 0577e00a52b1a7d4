# Stage 5: metrics over all predictions, paper-style tables and plots.


rule evaluate:
    """Few-shot table (csv/md/tex/html, bootstrap CIs in the csv; FiVE's paired differences in paired.csv and under the
    md/tex/html tables), per-run metrics, the ablation table (csv/md/tex/html),
    the accuracy-vs-shots plot, ROC curves and confusion matrices."""
    input:
        preds=prediction_files(),
    output:
        csv=report(LAYOUT.evaluate.csv, caption="../report/table_csv.rst", category="3. Results", subcategory="Tables"),
        html=report(LAYOUT.evaluate.html, caption="../report/table.rst", category="3. Results", subcategory="Tables"),
        md=LAYOUT.evaluate.md,
        tex=LAYOUT.evaluate.tex,
        runs=LAYOUT.evaluate.runs,
        paired=LAYOUT.evaluate.paired,  # FiVE minus each method per shots: mean difference, paired bootstrap CI
        plot=report(LAYOUT.evaluate.plot, caption="../report/plot.rst", category="3. Results", subcategory="Plots"),
        ablation_csv=LAYOUT.evaluate.ablation_csv,
        ablation_md=LAYOUT.evaluate.ablation_md,
        ablation_tex=LAYOUT.evaluate.ablation_tex,
        ablation_html=report(LAYOUT.evaluate.ablation_html, caption="../report/ablation.rst", category="3. Results", subcategory="Tables"),
        roc=report(LAYOUT.evaluate.roc, caption="../report/roc.rst", category="3. Results", subcategory="Plots"),
        confusion=report(LAYOUT.evaluate.confusion, caption="../report/confusion.rst", category="3. Results", subcategory="Plots"),
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
