"""Snakemake script: fetch one third-party input (config `downloads`), resumable and checksum-verified."""

from fiveflow.download import fetch_url
from fiveflow.rule_script import run_script


def main(smk, log):
    e = smk.params.entry
    res = fetch_url(
        e["url"],
        smk.output[0],
        e["checksum"],
        size=e.get("size"),
        name=e["name"],
        retries=int(e["retries"]),
        progress=False,
        hint=f"(config `downloads.{e['name']}`: {e.get('about') or 'see its url'})",
    )
    log.info(
        "%s: %s, %d bytes fetched in %d request(s)%s from %s",
        e["name"],
        res.status,
        res.bytes_fetched,
        res.attempts,
        f", resumed at byte {res.resumed_from}" if res.resumed_from else "",
        e["url"],
    )


run_script(snakemake, main)  # noqa: F821
