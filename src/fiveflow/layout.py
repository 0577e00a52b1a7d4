"""Where every stage writes, under one results folder: the one list of output paths.

The workflow's rules (``workflow/rules/*.smk``) and the ``fiveflow`` command both take their paths from a
:class:`Layout`, so a stage run by hand writes exactly the files its rule writes. Arguments may be
Snakemake wildcards (``layout.coords("{slide}")`` is the rule's output pattern) or real ids.

::

    results/
      demo/                         synthetic demo cohort: slides/*.tif, samples.csv, reports.csv, truth.csv
      cohort/samples.csv            samples sheet of a GDC cohort
      coords/{slide}.parquet        tile coordinates (+ tiling metadata)
      qc/{slide}.png                QC thumbnail; qc/tissue/{slide}.geojson tissue contours
      qc/montage.png, qc/tiling_summary.csv
      features/{encoder}/{slide}.h5 feature bags
      reports/labels.parquet        the six answers per patient
      splits/split.csv, splits/fewshot_draws.csv
      models/pretrain.pt            FiVE pre-training (models/pretrain_{ablation}.pt for ablations)
      predictions/{method}_{shots}.parquet    (shots 0 = zero-shot)
      attention/{method}_{shots}/   per-tile scores of run 0
      heatmaps/{method}.png, heatmaps/{method}/{slide}.png
      tables/ plots/                evaluation (see EvaluateOutputs)
      logs/ benchmarks/             per-job logs and Snakemake benchmark files
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class EvaluateOutputs:
    """The files of the evaluation stage. ``None`` leaves one out (library use); the workflow writes all."""

    csv: str
    md: str
    tex: str
    runs: str
    plot: str
    html: str | None = None
    paired: str | None = None  # FiVE's paired differences (fiveflow.evaluate.paired)
    ablation_csv: str | None = None
    ablation_md: str | None = None
    ablation_tex: str | None = None
    ablation_html: str | None = None
    roc: str | None = None
    confusion: str | None = None

    @classmethod
    def of(cls, out: Any) -> EvaluateOutputs:
        """From any object with these attributes (Snakemake's ``output``, a namespace, an EvaluateOutputs);
        the five required ones must be there."""
        if isinstance(out, cls):
            return out
        values = {}
        for f in fields(cls):
            value = getattr(out, f.name, None)
            if value is None and f.default is MISSING:  # csv, md, tex, runs, plot
                raise ValueError(f"evaluation outputs: `{f.name}` is missing (needed: csv, md, tex, runs, plot)")
            values[f.name] = None if value is None else str(value)
        return cls(**values)

    def files(self) -> dict[str, str]:
        """``{name: path}`` of the files written."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Layout:
    """Output paths under ``root`` (``results_dir``), as strings (Snakemake patterns when given wildcards)."""

    root: str = "results"

    def __post_init__(self):
        object.__setattr__(self, "root", str(self.root).rstrip("/") or ".")

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # cohort
    def demo_slide(self, slide: str) -> str:
        return self.path("demo", "slides", f"{slide}.tif")

    @property
    def demo_slides_dir(self) -> str:
        return self.path("demo", "slides")

    @property
    def demo_samples(self) -> str:
        return self.path("demo", "samples.csv")

    @property
    def demo_reports(self) -> str:
        return self.path("demo", "reports.csv")

    @property
    def demo_truth(self) -> str:
        return self.path("demo", "truth.csv")

    @property
    def gdc_samples(self) -> str:
        return self.path("cohort", "samples.csv")

    # slides
    def coords(self, slide: str) -> str:
        return self.path("coords", f"{slide}.parquet")

    def qc_thumbnail(self, slide: str) -> str:
        return self.path("qc", f"{slide}.png")

    def tissue_geojson(self, slide: str) -> str:
        return self.path("qc", "tissue", f"{slide}.geojson")

    @property
    def qc_montage(self) -> str:
        return self.path("qc", "montage.png")

    @property
    def tiling_summary(self) -> str:
        return self.path("qc", "tiling_summary.csv")

    # embedding
    def features_dir(self, encoder: str) -> str:
        return self.path("features", encoder)

    def bag(self, encoder: str, slide: str) -> str:
        return self.path("features", encoder, f"{slide}.h5")

    # reports
    @property
    def labels(self) -> str:
        return self.path("reports", "labels.parquet")

    # splits and training
    @property
    def split(self) -> str:
        return self.path("splits", "split.csv")

    @property
    def fewshot_draws(self) -> str:
        return self.path("splits", "fewshot_draws.csv")

    def pretrained(self, ablation: str | None = None) -> str:
        """FiVE's pre-trained checkpoint (``ablation``: that ablation's)."""
        return self.path("models", f"pretrain_{ablation}.pt" if ablation else "pretrain.pt")

    def predictions(self, method: str, shots: int | str) -> str:
        return self.path("predictions", f"{method}_{shots}.parquet")

    def attention_dir(self, method: str, shots: int | str) -> str:
        return self.path("attention", f"{method}_{shots}")

    # evaluation
    def heatmap_montage(self, method: str) -> str:
        return self.path("heatmaps", f"{method}.png")

    def heatmaps_dir(self, method: str) -> str:
        return self.path("heatmaps", method)

    @property
    def evaluate(self) -> EvaluateOutputs:
        t, p = (lambda name: self.path("tables", name)), (lambda name: self.path("plots", name))
        return EvaluateOutputs(
            csv=t("fewshot.csv"),
            md=t("fewshot.md"),
            tex=t("fewshot.tex"),
            runs=t("fewshot_runs.csv"),
            plot=p("fewshot.png"),
            html=t("fewshot.html"),
            paired=t("paired.csv"),
            ablation_csv=t("ablation.csv"),
            ablation_md=t("ablation.md"),
            ablation_tex=t("ablation.tex"),
            ablation_html=t("ablation.html"),
            roc=p("roc.png"),
            confusion=p("confusion.png"),
        )

    # bookkeeping
    @property
    def logs(self) -> str:
        return self.path("logs")

    @property
    def benchmarks(self) -> str:
        return self.path("benchmarks")
