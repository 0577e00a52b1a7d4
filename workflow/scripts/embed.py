"""Snakemake script: feature bag of one slide."""

from fiveflow.embed import embed_settings
from fiveflow.embed.encoders import build_encoder
from fiveflow.embed.extract import describe_encoder, describe_result, embed_slide
from fiveflow.rule_script import run_script


def main(smk, log):
    cfg = embed_settings({**smk.config["embedding"], **smk.params.embedding}, smk.params.root)
    enc = build_encoder(cfg["encoder"], cfg["weights"], int(cfg["seed"]))
    log.info("%s", describe_encoder(enc))
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
    log.info("%s", describe_result(res))


run_script(snakemake, main)  # noqa: F821
