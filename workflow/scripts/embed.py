"""Snakemake script: feature bag of one slide."""

from fiveflow.embed import embed_settings
from fiveflow.embed.encoders import build_encoder
from fiveflow.embed.extract import embed_slide
from fiveflow.rule_script import run_script


def main(smk, log):
    cfg = embed_settings({**smk.config["embedding"], **smk.params.embedding}, smk.params.root)
    enc = build_encoder(cfg["encoder"], cfg["weights"], int(cfg["seed"]))
    log.info(
        "encoder %s (%s, %d-d), weights %s, sha256 %s",
        enc.name,
        enc.family,
        enc.dim,
        enc.weights,
        enc.weights_sha256[:16],
    )
    res = embed_slide(
        smk.input.slide,
        smk.input.coords,
        enc,
        smk.output[0],
        batch_size=int(cfg["batch_size"]),
        num_workers=cfg["num_workers"],
        device=cfg["device"],
        precision=cfg["precision"],
        deterministic=bool(cfg["deterministic"]),
    )
    log.info(
        "%s: %d tiles in %.1f s (%.1f tiles/s), %s",
        res["slide_id"],
        res["tiles"],
        res["seconds"],
        res["tiles_per_s"],
        res["inference"],
    )


run_script(snakemake, main)  # noqa: F821
