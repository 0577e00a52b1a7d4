"""Sharded embedding: many slides per job, one process and one model load, per-slide bags, resumable.

A cohort's slides are cut into shards of ``embedding.shard_size`` (sorted slide ids, in order:
:func:`plan_shards`). One job embeds a whole shard (:func:`embed_shard`): the encoder is built and
prepared for the device once, then each slide's bag is written, atomically, into the shard store
(``<features>/.shard-store/``) and put in place (a hard link, or a copy where the file system has
none) at its per-slide path. The workflow still sees one output per slide.

Resuming: Snakemake removes a job's outputs before it reruns it, so the store is what survives a
killed shard. A slide whose stored bag is complete and was made from the same coordinates with the
same weights and inference settings is not embedded again, only put in place; a killed shard
therefore resumes at the next slide. The store entries of a shard are removed once the whole shard
has succeeded (:func:`clear_store`): the bags at their per-slide paths are the results.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_path

if TYPE_CHECKING:  # the Snakefile imports this module to plan shards: no torch at parse time
    from .encoders.base import Encoder

#: folder, inside the features folder, holding the bags of shards that have not finished yet
STORE = ".shard-store"


def plan_shards(slide_ids: Sequence[str], size: int) -> dict[str, list[str]]:
    """Shard name (``"0000"``, ``"0001"``, ...) -> its slide ids: the sorted ids cut into runs of ``size``."""
    if int(size) != size or size < 1:
        raise ValueError(f"embedding.shard_size must be a whole number >= 1, got {size!r}")
    ordered = sorted(set(slide_ids))
    return {f"{k:04d}": ordered[i : i + size] for k, i in enumerate(range(0, len(ordered), size))}


@dataclass(frozen=True)
class ShardItem:
    """One slide of a shard: its id, slide file, tile coordinates and the per-slide bag to produce."""

    slide_id: str
    slide: Path
    coords: Path
    out: Path


def store_path(out: str | os.PathLike) -> Path:
    """Where the shard store keeps the bag that belongs at ``out``."""
    out = Path(out)
    return out.parent / STORE / out.name


def put_in_place(stored: Path, out: Path) -> None:
    """Make ``out`` the bag ``stored`` (hard link, else copy), atomically: never a half-made ``out``."""
    with atomic_path(out) as tmp:
        tmp.unlink()
        try:
            os.link(stored, tmp)
        except OSError:  # no hard links here (another file system, some network mounts)
            shutil.copyfile(stored, tmp)


def embed_shard(
    items: Sequence[ShardItem],
    encoder: Encoder,
    *,
    batch_size: int = 32,
    num_workers: int | str = 0,
    device: str = "auto",
    precision: str = "auto",
    deterministic: bool = True,
    progress: bool = True,
    on_slide: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Embed every slide of a shard with one prepared model; returns each slide's summary.

    A summary has ``restored`` True when the slide's complete bag was already in the store (a rerun
    of a killed shard) and was only put in place. ``on_slide`` is called with each summary as soon as
    that slide's bag is in place (for logging).
    """
    from ..train.common import resolve_device
    from .extract import embed_slide
    from .runtime import prepare

    dev = resolve_device(device, "embedding.device")
    prepared = prepare(encoder, dev, precision, deterministic)
    bar = None
    if progress and len(items) > 1:
        import sys

        from tqdm import tqdm

        bar = tqdm(
            total=len(items), desc="shard", unit="slide", leave=False, mininterval=0.1 if sys.stderr.isatty() else 10.0
        )
    done = []
    for it in items:
        stored = store_path(it.out)
        res = embed_slide(
            it.slide,
            it.coords,
            encoder,
            stored,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            precision=precision,
            deterministic=deterministic,
            progress=progress,
            skip_complete=True,
            prepared=prepared,
        )
        put_in_place(stored, Path(it.out))
        res = {**res, "restored": bool(res["skipped"])}
        done.append(res)
        if on_slide is not None:
            on_slide(res)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return done


def clear_store(items: Sequence[ShardItem]) -> None:
    """Remove the shard's store entries (after the whole shard succeeded), and the store when empty."""
    for it in items:
        store_path(it.out).unlink(missing_ok=True)
    for folder in {store_path(it.out).parent for it in items}:
        try:
            folder.rmdir()
        except OSError:  # other shards' bags are still there, or it is gone
            pass
