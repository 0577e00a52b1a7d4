"""Snakemake script: feature bag of one slide."""
from fiveflow.embed.encoders import build_encoder
from fiveflow.embed.extract import embed_slide
from fiveflow.smk import run_script


def main(smk, log):
    cfg = smk.params.embedding
    enc = build_encoder(cfg["encoder"], cfg["weights"], int(cfg["seed"]))
    res = embed_slide(smk.input.slide, smk.input.coords, enc, smk.output[0], batch_size=int(cfg["batch_size"]),
                      num_workers=int(cfg["num_workers"]), device=cfg["device"])
    log.info("%s: %d tiles in %.1f s (%.1f tiles/s), weights sha256 %s", res["slide_id"], res["tiles"],
             res["seconds"], res["tiles_per_s"], enc.weights_sha256[:16])


run_script(snakemake, main)  # noqa: F821
