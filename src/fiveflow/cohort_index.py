"""What the Snakefile needs to know at parse time: the cohort's slides and where its sheets live.

Kept light (no torch, no tiatoolbox imports) because Snakemake evaluates it on every invocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import resolve_path
from .layout import Layout
from .settings import with_defaults


@dataclass
class Cohort:
    source: str
    samples_csv: str
    reports_csv: str
    paths: dict[str, str] = field(default_factory=dict)
    mpp: dict[str, float | None] = field(default_factory=dict)  # per-slide mpp overrides from the sheet
    gdc: object = None  # source gdc: the slide table from the manifests (fiveflow.cohort.gdc.gdc_table)

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
    def from_config(cls, cfg: dict, root: Path) -> Cohort:
        layout = Layout(cfg["results_dir"])
        cohort = cfg["cohort"]
        if cohort["source"] == "demo":
            from .cohort.demo import demo_cases

            demo = cohort["demo"]
            cases = demo_cases(int(demo["n_slides"]), int(demo["seed"]))
            paths = {c.slide_id: layout.demo_slide(c.slide_id) for c in cases}
            return cls("demo", layout.demo_samples, layout.demo_reports, paths)
        classes = [c["name"] for c in cfg["classes"]]
        if cohort["source"] == "gdc":
            from .cohort.gdc import gdc_table

            table = gdc_table(cohort["gdc"], classes, root)
            return cls(
                "gdc",
                layout.gdc_samples,
                str(resolve_path(cohort["reports"], root)),
                dict(zip(table["slide_id"], table["path"])),
                gdc=table,
            )
        from .samples import read_samples

        sheet = resolve_path(cohort["samples"], root)
        # with imported features (`embedding.precomputed`) the slide files themselves are not needed
        df = read_samples(
            sheet, classes=classes, check_files=not with_defaults(cfg["embedding"], "embedding")["precomputed"]
        )
        return cls(
            "samples",
            str(sheet),
            str(resolve_path(cohort["reports"], root)),
            dict(zip(df["slide_id"], df["path"])),
            dict(zip(df["slide_id"], df["mpp"])),
        )


def bag_map(paths) -> dict[str, str]:
    """slide id -> feature bag path, from the bag files' names (``{slide}.h5``)."""
    return {Path(p).stem: str(p) for p in paths}


def precomputed_sources(folder: str | Path, slide_ids: list[str]) -> dict[str, str]:
    """slide id -> its feature file under ``embedding.precomputed`` (DSMIL CSV or h5 bag).

    Every cohort slide needs one; files for slides outside the cohort are ignored. Raises
    ``ValueError`` naming the missing slides (or the two files claiming one slide) and the fix.
    """
    from .embed.importers import sources_by_slide

    found = sources_by_slide(folder)
    # TCGA files are often named by the whole GDC file name (`TCGA-..-DX1.<uuid>.csv`) while the cohort
    # uses the slide barcode: match those on the part before the first dot when that is unambiguous
    short: dict[str, list[str]] = {}
    for fid in found:
        short.setdefault(fid.split(".")[0], []).append(fid)
    for s in slide_ids:
        if s not in found and len(short.get(s, [])) == 1:
            found[s] = found[short[s][0]]
    missing = [s for s in slide_ids if s not in found]
    if missing:
        raise ValueError(
            f"`embedding.precomputed` ({folder}) has no features for {len(missing)} of {len(slide_ids)} "
            f"slides, e.g. {missing[:3]}; files are matched by name ({{slide}}.csv or {{slide}}.h5). "
            "Fix: add them, or drop those slides from the samples sheet."
        )
    return {s: str(found[s][0]) for s in slide_ids}
