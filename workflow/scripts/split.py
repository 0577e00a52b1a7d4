"""Snakemake script: patient-level split and few-shot draws."""
from fiveflow.samples import read_samples
from fiveflow.smk import run_script
from fiveflow.train.splits import make_fewshot_draws, make_split


def main(smk, log):
    samples = read_samples(smk.input.samples, classes=smk.params.classes, check_files=False)
    split = make_split(samples, float(smk.params.split["test_fraction"]), int(smk.params.split["seed"]),
                       smk.output.split)
    fs = smk.params.fewshot
    make_fewshot_draws(split, [int(s) for s in fs["shots"]], int(fs["runs"]), int(fs["seed"]), smk.output.draws)
    log.info("split: %s", split.groupby(["split", "label"]).size().to_dict())


run_script(snakemake, main)  # noqa: F821
