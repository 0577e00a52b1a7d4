"""Is the class signal of the synthetic demo cohort visible to a frozen random CNN?

Builds the demo cohort (default n_slides=16, seed=0, 6144x4608 px at 0.5 mpp), takes up to 64
tissue patches per slide at 1.0 mpp (448 px read at level 0 with OpenSlide, resized to 224),
embeds them with ``timm.create_model("resnet18", pretrained=False, num_classes=0)`` after
``torch.manual_seed(0)`` (ImageNet normalisation), and measures

- ``loo_acc``: leave-one-slide-out logistic regression on mean-pooled slide vectors;
- ``patch_acc``: patch classifier trained on the other slides' patches (leave one slide out),
  accuracy over the held-out slide's patches; ``patch_vote_acc``: its slide-level majority vote;
- ``write_s``: mean seconds to write one slide (this script's process, sequential).

Usage: ``.venv/bin/python benchmarks/demo_separability.py [--n-slides 16] [--seed 0]
[--workdir DIR] [--reuse]``. Prints ``RESULT ...`` as its last line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def tissue_positions(slide, size0: int, limit: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners (level 0) of up to ``limit`` grid patches that are at least half tissue."""
    level = slide.level_count - 1
    ds = slide.level_downsamples[level]
    thumb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"), np.float32)
    sat = thumb.max(-1) - thumb.min(-1)
    mask = (sat > 18) | (thumb.mean(-1) < 200)
    w, h = slide.dimensions
    out = []
    for y in range(0, h - size0 + 1, size0):
        for x in range(0, w - size0 + 1, size0):
            m = mask[int(y / ds) : int((y + size0) / ds), int(x / ds) : int((x + size0) / ds)]
            if m.size and m.mean() >= 0.5:
                out.append((x, y))
    if len(out) > limit:
        idx = rng.choice(len(out), limit, replace=False)
        out = [out[i] for i in sorted(idx)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-slides", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=6144)
    ap.add_argument("--height", type=int, default=4608)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--workdir", default=None, help="where to write the slides (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse slides already in --workdir")
    args = ap.parse_args()

    import openslide
    import timm
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fiveflow.cohort.demo import demo_cases, write_demo_slide

    torch.set_num_threads(2)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="demo_sep_")
        work = Path(tmp.name)
    else:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    cases = demo_cases(args.n_slides, args.seed)
    times = []
    for c in cases:
        p = work / f"{c.slide_id}.tif"
        if not (args.reuse and p.exists()):
            t0 = time.perf_counter()
            write_demo_slide(c, p, args.width, args.height, args.mpp)
            times.append(time.perf_counter() - t0)
    print(f"wrote {len(times)} slides, mean {np.mean(times) if times else float('nan'):.2f} s each", flush=True)

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    size0 = int(round(224 * 1.0 / args.mpp))
    rng = np.random.default_rng(0)
    feats, labels, groups = [], [], []
    for i, c in enumerate(cases):
        slide = openslide.OpenSlide(str(work / f"{c.slide_id}.tif"))
        pos = tissue_positions(slide, size0, args.patches, rng)
        imgs = [
            np.asarray(
                slide.read_region(xy, 0, (size0, size0)).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32
            )
            / 255.0
            for xy in pos
        ]
        x = torch.from_numpy(((np.stack(imgs) - MEAN) / STD).transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            f = torch.cat([model(x[j : j + 32]) for j in range(0, len(x), 32)]).numpy()
        feats.append(f)
        labels.append(c.label)
        groups.append(np.full(len(f), i))
        print(f"{c.slide_id} {c.label:4s} {c.differentiation:16s} {len(pos)} patches", flush=True)

    y = np.array([1 if lab == "LUSC" else 0 for lab in labels])
    slide_vec = np.stack([f.mean(0) for f in feats])
    correct = 0
    for i in range(len(cases)):
        tr = np.arange(len(cases)) != i
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
        clf.fit(slide_vec[tr], y[tr])
        correct += int(clf.predict(slide_vec[i : i + 1])[0] == y[i])
    loo_acc = correct / len(cases)

    allf = np.concatenate(feats)
    ally = np.concatenate([np.full(len(f), y[i]) for i, f in enumerate(feats)])
    allg = np.concatenate(groups)
    patch_hits, patch_n, votes = 0, 0, 0
    for i in range(len(cases)):
        tr = allg != i
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        clf.fit(allf[tr], ally[tr])
        pred = clf.predict(allf[~tr])
        patch_hits += int((pred == y[i]).sum())
        patch_n += len(pred)
        votes += int((pred.mean() >= 0.5) == bool(y[i]))
    patch_acc = patch_hits / max(patch_n, 1)
    vote_acc = votes / len(cases)
    if tmp is not None:
        tmp.cleanup()
    write_s = float(np.mean(times)) if times else float("nan")
    print(
        f"RESULT loo_acc={loo_acc:.3f} patch_acc={patch_acc:.3f} patch_vote_acc={vote_acc:.3f} "
        f"n_slides={len(cases)} n_patches={patch_n} write_s={write_s:.2f}"
    )


if __name__ == "__main__":
    main()
