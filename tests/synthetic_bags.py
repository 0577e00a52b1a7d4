"""Synthetic cohorts of feature bags + fine-grained descriptions, for tests and benchmarks (test code, not
part of the package: tests import it as `synthetic_bags`, benchmarks put tests/ on sys.path first).

Two classes; each slide's bag is Gaussian noise in which a spatially contiguous subset of
instances (20-40 %) carries a class direction plus a differentiation-grade direction. Each
patient's description (six ';'-separated answers) names the grade (never the class: like the
authors' GPT-4 descriptions, it does not name the diagnosis), so fine-grained labels correlate with
the grade part of the image signal, and the class must be learnt from the pixels.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

GRADES = ("well", "moderate", "poor")
_GRADE_PHRASES = ("Well differentiated", "Moderately differentiated", "Poorly differentiated")
DIFF_PHRASES = {0: _GRADE_PHRASES, 1: _GRADE_PHRASES}  # per class, the same: the type is never named
OTHER_ANSWERS = (  # (phrase, categorical value) choices for questions 2-6, with probabilities
    ((("Unknown", "unknown"), 0.9), (("Spread through air spaces present", "present"), 0.1)),
    (
        (("Vascular invasion present", "present"), 0.35),
        (("No vascular invasion", "absent"), 0.35),
        (("Unknown", "unknown"), 0.3),
    ),
    (
        (("Visceral pleural invasion present", "present"), 0.4),
        (("No pleural invasion", "absent"), 0.45),
        (("Unknown", "unknown"), 0.15),
    ),
    (
        (("Unknown", "unknown"), 0.6),
        (("Invasion of the chest wall", "present"), 0.15),
        (("No invasion of adjacent organs", "absent"), 0.25),
    ),
    (
        (("Margins negative (R0)", "negative"), 0.8),
        (("Margins positive (R1)", "positive"), 0.12),
        (("Unknown", "unknown"), 0.08),
    ),
)
LABEL_COLUMNS = ["stas", "vascular_invasion", "pleural_invasion", "adjacent_invasion", "margins"]


def _choose(rng: np.random.Generator, options) -> tuple[str, str]:
    probs = np.array([p for _, p in options], dtype=float)
    return options[int(rng.choice(len(options), p=probs / probs.sum()))][0]


def make_synthetic_cohort(
    out_dir: str | Path,
    n_slides: int = 32,
    dim: int = 512,
    n_range: tuple[int, int] = (100, 300),
    class_names: tuple[str, str] = ("LUAD", "LUSC"),
    signal: float = 3.0,
    seed: int = 0,
    n_unlabeled: int = 0,
    tile: int = 224,
) -> dict:
    """Write bags (h5) and a labels parquet under ``out_dir``.

    ``signal`` scales the class + grade directions added to the signal instances (noise is
    N(0, 1) per feature): 3.0 is clearly separable (a mean-pooling baseline reaches 100% at 4
    shots); 1.5-2.0 are harder settings.

    Returns ``{"samples": DataFrame(slide_id, patient_id, label, path), "bag_paths": {slide: path},
    "labels_parquet": path}``. Every 8th patient has two slides; the last ``n_unlabeled``
    patients get no description row.
    """
    out = Path(out_dir)
    (out / "features").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    class_dir = rng.standard_normal((2, dim))
    grade_dir = rng.standard_normal((3, dim))
    class_dir /= np.linalg.norm(class_dir, axis=1, keepdims=True)
    grade_dir /= np.linalg.norm(grade_dir, axis=1, keepdims=True)
    slides, labels = [], []
    patient = 0
    while len(slides) < n_slides:
        pid = f"SYN-P{patient:03d}"
        y = patient % 2
        grade = int(rng.integers(3))
        n_pat_slides = 2 if patient % 8 == 7 and len(slides) + 2 <= n_slides else 1
        answers = [(DIFF_PHRASES[y][grade], GRADES[grade]) if rng.random() > 0.1 else ("Unknown", "unknown")]
        answers += [_choose(rng, opts) for opts in OTHER_ANSWERS]
        labels.append(
            {
                "patient_id": pid,
                "differentiation": answers[0][1],
                **{c: a[1] for c, a in zip(LABEL_COLUMNS, answers[1:])},
                "description": ";".join(a[0] for a in answers),
                "backend": "synthetic",
                "model": "none",
                "prompt_version": "synthetic",
            }
        )
        for s in range(n_pat_slides):
            sid = f"{pid}-S{s}"
            n = int(rng.integers(n_range[0], n_range[1] + 1))
            cols = int(np.ceil(np.sqrt(n * 1.5)))
            grid = np.stack(np.divmod(np.arange(n), cols), axis=1)[:, ::-1]  # (x, y) tile indices, row-major
            coords = (grid + rng.integers(0, 20, size=2)) * tile
            centre = grid[int(rng.integers(n))]
            k = max(1, int(n * rng.uniform(0.2, 0.4)))
            near = np.argsort(((grid - centre) ** 2).sum(1), kind="stable")[:k]
            feats = rng.standard_normal((n, dim)).astype(np.float32)
            feats[near] += (signal * (class_dir[y] + 0.7 * grade_dir[grade])).astype(np.float32)
            path = out / "features" / f"{sid}.h5"
            with h5py.File(path, "w") as fh:
                fh.create_dataset("features", data=feats)
                fh.create_dataset("coords", data=coords.astype(np.int64))
            slides.append({"slide_id": sid, "patient_id": pid, "label": class_names[y], "path": str(path)})
        patient += 1
    labels_df = pd.DataFrame(labels)
    if n_unlabeled:
        labels_df = labels_df.iloc[:-n_unlabeled]
    labels_path = out / "labels.parquet"
    labels_df.to_parquet(labels_path, index=False)
    samples = pd.DataFrame(slides)
    return {
        "samples": samples,
        "bag_paths": dict(zip(samples["slide_id"], samples["path"])),
        "labels_parquet": str(labels_path),
    }
