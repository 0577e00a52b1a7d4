"""Snakemake script: feature bags of a shard of slides (one process, one model load)."""

from fiveflow.embed import embed_settings
from fiveflow.embed.encoders import build_encoder
from fiveflow.embed.extract import describe_encoder, describe_result
from fiveflow.embed.shards import ShardItem, clear_store, embed_shard
from fiveflow.rule_script import run_script


def main(smk, log):
    cfg = embed_settings({**smk.config["embedding"], **smk.params.embedding}, smk.params.root)
    items = [
        ShardItem(s, slide, coords, out)
        for s, slide, coords, out in zip(smk.params.slides, smk.input.slides, smk.input.coords, smk.output, strict=True)
    ]
    enc = build_encoder(cfg["encoder"], cfg["weights"], int(cfg["seed"]))
    log.info("shard %s: %d slides; %s", smk.params.shard, len(items), describe_encoder(enc))

    def report(res):
        if res["restored"]:
            log.info(
                "%s: restored from the shard store (embedded by an interrupted run of this shard)", res["slide_id"]
            )
        else:
            log.info("%s", describe_result(res))

    done = embed_shard(
        items,
        enc,
        batch_size=int(cfg["batch_size"]),
        num_workers=cfg["num_workers"],
        device=cfg["device"],
        precision=cfg["precision"],
        deterministic=bool(cfg["deterministic"]),
        on_slide=report,
    )
    clear_store(items)
    log.info(
        "shard %s: %d embedded, %d restored",
        smk.params.shard,
        sum(not r["restored"] for r in done),
        sum(r["restored"] for r in done),
    )


run_script(snakemake, main)  # noqa: F821
