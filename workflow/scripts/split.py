"""Snakemake script: patient-level split and few-shot draws over the slides that passed the slide QC."""

from fiveflow.rule_script import run_script
from fiveflow.samples import read_samples
from fiveflow.slides.montage import usable_slides
from fiveflow.train.splits import make_fewshot_draws, make_split


def main(smk, log):
    samples = read_samples(smk.input.samples, classes=smk.params.classes, check_files=False)
    excluded = []
    if smk.input.slides_qc:  # absent when features are imported (`embedding.precomputed`): no slides were tiled
        ok, excluded = usable_slides(smk.input.slides_qc)
        for r in excluded.itertuples():
            log.warning("excluded %s (%s): %s", r.slide_id, r.status, r.message)
        samples = samples[samples["slide_id"].isin(ok)].reset_index(drop=True)
    split = make_split(
        samples, float(smk.params.split["test_fraction"]), int(smk.params.split["seed"]), smk.output.split
    )
    fs = smk.params.fewshot
    make_fewshot_draws(split, [int(s) for s in fs["shots"]], int(fs["runs"]), int(fs["seed"]), smk.output.draws)
    log.info(
        "split: %s (%d slides excluded by the slide QC)",
        split.groupby(["split", "label"]).size().to_dict(),
        len(excluded),
    )


run_script(snakemake, main)  # noqa: F821
