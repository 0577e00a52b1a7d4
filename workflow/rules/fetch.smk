# Third-party inputs (config `downloads`): each fetched from its pinned URL by its own rule fetch_<name>, resumable
# and checksum-verified (fiveflow.download.fetch_url). Any config path equal to a download's `path` (cohort.reports,
# reports.precomputed) is that rule's output, so a run fetches it before the stage that reads it. A file already at
# that path is used as it is (a copy supplied by hand); offline, the job fails naming the file, its URL and how to
# supply it by hand. They are local rules: on a cluster they run on the submitting host (small files; compute
# nodes often have no internet).
from fiveflow.config import download_targets  # noqa: E402

DOWNLOADS = {name: str(p) for p, name in download_targets(config, ROOT).items()}

for _name, _path in DOWNLOADS.items():

    rule:
        name:
            f"fetch_{_name}"
        localrule: True
        output:
            _path,
        params:
            entry={"name": _name, **config["downloads"][_name]},
        log:
            f"{LOGS}/fetch/{_name}.log",
        conda:
            "../../envs/download.yaml"
        retries: 2
        threads: 1
        resources:
            mem_mb=500,
            runtime=120,
        script:
            "../scripts/fetch_input.py"
