"""What the Snakefile needs to know at parse time: the cohort's slides and where its sheets live.

Kept light (no torch, no tiatoolbox imports) because Snakemake evaluates it on every invocation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import resolve_path


@dataclass
class Cohort:
    source: str
    samples_csv: str
    reports_csv: str
    paths: dict[str, str] = field(default_factory=dict)
    mpp: dict[str, float | None] = field(default_factory=dict)  # per-slide mpp overrides from the sheet

    @property
    def slide_ids(self) -> list[str]:
        return list(self.paths)

    def slide_path(self, slide_id: str) -> str:
        try:
            return self.paths[slide_id]
        except KeyError:
            raise KeyError(f"unknown slide id {slide_id!r}: it is not in the cohort's samples sheet") from None

    def mpp_override(self, slide_id: str) -> float | None:
        return self.mpp.get(slide_id)

    @classmethod
    def from_config(cls, cfg: dict, root: Path) -> "Cohort":
        results = cfg["results_dir"]
        cohort = cfg["cohort"]
        if cohort["source"] == "demo":
            from .cohort.demo import demo_cases

            demo = cohort["demo"]
            cases = demo_cases(int(demo["n_slides"]), int(demo["seed"]))
            paths = {c.slide_id: f"{results}/demo/slides/{c.slide_id}.tif" for c in cases}
            return cls("demo", f"{results}/demo/samples.csv", f"{results}/demo/reports.csv", paths)
        from .samples import read_samples

        classes = [c["name"] for c in cfg["classes"]]
        sheet = resolve_path(cohort["samples"], root)
        df = read_samples(sheet, classes=classes)
        return cls("samples", str(sheet), str(resolve_path(cohort["reports"], root)),
                   dict(zip(df["slide_id"], df["path"])), dict(zip(df["slide_id"], df["mpp"])))


def bag_map(paths) -> dict[str, str]:
    """slide id -> feature bag path, from the bag files' names (``{slide}.h5``)."""
    return {Path(p).stem: str(p) for p in paths}
