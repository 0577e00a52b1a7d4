"""One FiVE training step: step time and peak memory against the number of sampled instances.

A training step here is exactly what ``fiveflow.train.loop.fit`` does for one slide with
``accumulate: 1``: ``optimizer.zero_grad`` -> the package's own per-slide step
(``loop.train_group``: question dropping, prompt bank, instance sampling with the config's
``instance_ratio`` / ``max_instances``, TFS aggregation under the loop's autocast (bf16 on CUDA),
text projection, cosine logits, cross-entropy, backward) -> ``optimizer.step`` (the package's
AdamW with two learning rates, ``schedule.build_optimizer``). The model is the real one
(``fiveflow.model.build_model`` with the config's ``model`` section and the frozen offline text
encoder); only the bag is synthetic: N random 512-d features with random level-0 coordinates,
turned into positions by the package's ``relative_positions``. The candidate texts are six
synthetic 6-answer descriptions that differ in every answer, so no step is an empty (skipped) one.

Configurations (``N`` = bag size, ``ratio`` = ``instance_ratio``, ``M`` = sampled instances):

- bags of 1k, 4k and 16k instances at ratio 1.0 (the pre-training default; ``max_instances`` 16384);
- the sampling sweep: the 16k bag at ratios 0.25, 0.5 and 1.0 (M = 4k, 8k, 16k; 1.0 is the run
  above), to show that the cost follows the sampled instances, not the bag size.

Each configuration runs in a fresh subprocess (so one configuration's peak does not hide the
next one's: ``ru_maxrss`` is inherited and never decreases). In it: the model, optimizer and bag
are built, one untimed warm-up step runs (it allocates the optimizer state and fills the text
cache), then ``--steps`` timed steps (fewer if the warm-up says they would exceed
``--max-seconds``), and the median is reported. Every step re-seeds the text-perturbation stream,
so each step draws the same dropped questions and the frozen text encoder is served from its cache,
as in a long run once the variants are encoded (``loop.precompute_variants``); the instance draw
changes every step. The step time is therefore the image side plus the trainable text projection.

Peak memory = the growth above the memory held just before the first step:

- CPU: the process's peak RSS (``VmHWM`` of ``/proc/self/status``) after the steps minus the RSS
  before them; the peak is reset first (``echo 5 > /proc/self/clear_refs``) so a transient peak of
  the setup (loading the text encoder) cannot hide the step's own; where the reset is refused the
  baseline is the ``VmHWM`` before the steps instead.
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the steps (after
  ``reset_peak_memory_stats``); the caching allocator's reserve is not counted.

Both include the optimizer state (AdamW: 2 x the trainable parameters, a few MB), allocated in the
warm-up step. ``mem_growth_16k_vs_1k`` = peak_mb_16k / peak_mb_1k and ``instances_ratio_16k_vs_1k``
= M_16k / M_1k: a memory ratio at or below the instance ratio means memory grows at most linearly
with the sampled instances (the attention runs through ``scaled_dot_product_attention``, whose
fused kernels never hold the N x N score matrix).

On a machine with a CUDA GPU the same configurations also run on it (``--device auto``, the
default, runs CPU and, when ``torch.cuda.is_available()``, CUDA); the RESULT line reports CPU
(``device=cpu``) and adds ``cuda_step_s_*`` / ``cuda_peak_mb_*`` keys when CUDA ran.

LoRA text step (``--only lora`` runs just this part): the text encoder with LoRA adapters
(``model.text_lora_r`` 8, the config's ``text_encoder``, the offline MiniLM by default, at
``text_max_tokens`` 308) trains, so every candidate text runs through it at every step. One
training step (``loop.train_group`` + AdamW, as above, on a 1k-instance bag) over ``--lora-texts``
(786, the authors' pre-training descriptions) synthetic 6-answer descriptions, each long enough
that it is truncated to exactly 308 tokens (checked), with ``text_grad_candidates`` =
``--lora-grad`` (96: 96 random candidates are encoded with gradients, the other 690 under
``no_grad`` in batches); and the same step with only 96 candidates (all with gradients). The
text-perturbation seed is one that drops no question, so every candidate keeps its full length.
Each runs once in its own fresh subprocess, after a small warm-up step (3 candidates, 1 with
gradients: the process's first step allocates about 1 GB of one-time buffers, which would
otherwise dominate the smaller case's peak, and it creates the AdamW state); the peak memory is measured as above (CPU: ``VmHWM`` after the step minus
``VmRSS`` just before it, the peak reset first; CUDA: ``max_memory_allocated``). Acceptance:
``lora_peak_ratio`` = peak(786) / peak(96) <= 1.5, i.e. memory is set by the gradient subset,
not by the number of candidates.

Usage: ``.venv/bin/python benchmarks/bench_train.py [--sizes 1024,4096,16384]
[--ratios 0.25,0.5,1.0] [--dim 512] [--steps 3] [--max-seconds 60] [--threads 2] [--device auto]
[--only all|steps|lora] [--lora-texts 786] [--lora-grad 96]``

Last line: ``RESULT step_s_1k=... step_s_4k=... step_s_16k=... peak_mb_1k=... peak_mb_4k=...
peak_mb_16k=... mem_growth_16k_vs_1k=... instances_ratio_16k_vs_1k=... lora_step_s_786=...
lora_step_s_96=... lora_peak_mb_786=... lora_peak_mb_96=... lora_peak_ratio=... device=cpu``
(``--only steps``: without the ``lora_*`` keys; ``--only lora``: only those and ``device``)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fiveflow.model import build_model, load_questions  # noqa: E402
from fiveflow.train.data import Bag, relative_positions  # noqa: E402
from fiveflow.train.descriptions import draw_dropped_questions, perturb_descriptions  # noqa: E402
from fiveflow.train.loop import train_group  # noqa: E402
from fiveflow.train.sampling import n_sampled  # noqa: E402
from fiveflow.train.schedule import build_optimizer  # noqa: E402

SLIDE = "bench-slide"
TEXT_SEED = 1  # with the 6 questions this seed drops 2 of them (bank = 4 questions + 16 prompts)
LORA_TOKENS = 308  # the authors' fixed text context
LORA_WORDS = (
    "tumour cells show glandular papillary acinar solid pattern with mucin necrosis stroma "
    "invasion margin pleura vessel lymph node grade nuclear atypia mitoses high low moderate "
    "focal diffuse present absent clear cell lining spaces"
).split()


class OneBag:
    """The one thing ``train_group`` asks of a ``BagStore``: ``get(slide_id) -> Bag``."""

    def __init__(self, bag: Bag) -> None:
        self.bag = bag

    def get(self, slide_id: str) -> Bag:
        return self.bag


def descriptions(n_questions: int, n_texts: int = 6) -> list[str]:
    """Synthetic fine-grained descriptions, one answer per question, differing in every answer."""
    return ["; ".join(f"finding {q} grade {t}" for q in range(n_questions)) for t in range(n_texts)]


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def child(n: int, ratio: float, device: str, args) -> dict:
    """Build the model and bag, run warm-up + timed steps, return times and memory (one JSON line)."""
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    optim_cfg = dict(cfg["train"]["pretrain"], instance_ratio=ratio, accumulate=1)
    max_inst = int(optim_cfg["max_instances"])
    dev = torch.device(device)
    torch.manual_seed(0)
    questions = load_questions()
    texts = descriptions(len(questions))
    model = build_model(cfg["model"], args.dim, questions, dev)
    optimizer = build_optimizer(model, optim_cfg)
    model.train()
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 100_000, size=(n, 2))
    store = OneBag(
        Bag(
            torch.from_numpy(rng.standard_normal((n, args.dim), dtype=np.float32)),
            torch.from_numpy(relative_positions(coords, cfg["model"]["position"])),
        )
    )
    summary = {"n_empty": 0, "n_empty_skipped": 0, "n_forward": 0}
    losses: list[float] = []
    sample_rng = np.random.default_rng(1)

    done = [0]

    def step() -> float:
        target = done[0] % len(texts)  # a different target each step: the loss does not collapse to 0
        done[0] += 1
        sync(dev)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        used = train_group(
            model,
            store,
            [(SLIDE, target)],
            texts,
            len(questions),
            ratio,
            max_inst,
            np.random.default_rng(TEXT_SEED),
            sample_rng,
            True,
            summary,
            losses,
        )
        optimizer.step()
        sync(dev)
        if not used:
            raise RuntimeError("the training step did not run a forward/backward pass")
        return time.perf_counter() - t0

    # the frozen encoder's cache gets this step's strings beforehand, as loop.precompute_variants does
    text_rng = np.random.default_rng(TEXT_SEED)
    dropped = draw_dropped_questions(len(questions), text_rng)
    cand, _ = perturb_descriptions(texts, dropped, text_rng)
    model.text_encoder.encode([questions[i] for i in range(len(questions)) if i not in set(dropped)] + cand)
    # baseline: everything the step needs is in memory; the step's own allocations come on top
    mark = memory_mark(dev)
    warm = step()
    n_steps = max(1, min(args.steps, int(args.max_seconds // max(warm, 1e-6))))
    times = [step() for _ in range(n_steps)]
    peak, how = memory_peak(dev, mark)
    return {
        "n": n,
        "ratio": ratio,
        "m": n_sampled(n, ratio, max_inst),
        "device": device,
        "warmup_s": warm,
        "step_s": statistics.median(times),
        "steps": n_steps,
        "peak_mb": peak / 2**20,
        "mem": how,
        "empty": summary["n_empty"],
        "losses": [round(x, 3) for x in losses],
    }


def memory_mark(dev: torch.device) -> tuple[int, bool]:
    """``(baseline bytes, peak reset?)`` before a measured step: CUDA's allocated memory after resetting
    its peak; on a CPU the RSS after resetting the high-water mark (its old value where that fails)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated(), True
    reset = reset_peak_rss()
    return status_kb("VmRSS" if reset else "VmHWM") * 1024, reset


def memory_peak(dev: torch.device, mark: tuple[int, bool]) -> tuple[int, str]:
    """``(peak bytes above the baseline, how it was measured)`` after the step of :func:`memory_mark`."""
    base, reset = mark
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated() - base, "max_memory_allocated"
    return status_kb("VmHWM") * 1024 - base, "VmHWM-VmRSS" if reset else "VmHWM-VmHWM"


def long_descriptions(n_texts: int, n_questions: int, words_per_answer: int = 60) -> list[str]:
    """Distinct synthetic descriptions, one long answer per question (no Unknown), > 308 tokens each."""
    rng = np.random.default_rng(0)
    return [
        "; ".join(
            f"case {t} answer {q} " + " ".join(rng.choice(LORA_WORDS, words_per_answer)) for q in range(n_questions)
        )
        for t in range(n_texts)
    ]


def no_drop_seed(n_questions: int) -> int:
    """The first text-perturbation seed whose draw drops no question (candidates keep their length)."""
    return next(s for s in range(1000) if not draw_dropped_questions(n_questions, np.random.default_rng(s)))


def lora_child(n_texts: int, grad: int, device: str, args) -> dict:
    """One LoRA training step over ``n_texts`` 308-token candidates, ``grad`` of them with gradients."""
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    model_cfg = dict(cfg["model"], text_lora_r=8, text_max_tokens=LORA_TOKENS)
    optim_cfg = dict(cfg["train"]["pretrain"], instance_ratio=1.0, accumulate=1, text_grad_candidates=grad)
    dev = torch.device(device)
    torch.manual_seed(0)
    questions = load_questions()
    texts = long_descriptions(n_texts, len(questions))
    model = build_model(model_cfg, args.dim, questions, dev)
    enc = model.text_encoder
    lengths = [len(ids) for ids in enc.tokenizer(texts, truncation=False)["input_ids"]]
    if min(lengths) < LORA_TOKENS or enc.max_tokens != LORA_TOKENS:
        raise RuntimeError(
            f"candidates must be truncated to {LORA_TOKENS} tokens: shortest {min(lengths)}, context {enc.max_tokens}"
        )
    optimizer = build_optimizer(model, optim_cfg)
    model.train()
    rng = np.random.default_rng(0)
    n = 1024
    store = OneBag(
        Bag(
            torch.from_numpy(rng.standard_normal((n, args.dim), dtype=np.float32)),
            torch.from_numpy(relative_positions(rng.integers(0, 100_000, size=(n, 2)), cfg["model"]["position"])),
        )
    )
    summary = {"n_empty": 0, "n_empty_skipped": 0, "n_forward": 0}
    losses: list[float] = []
    seed = no_drop_seed(len(questions))
    max_inst = int(optim_cfg["max_instances"])
    # warm-up: a 3-candidate step, 1 with gradients and 2 without, so both paths have run once and the
    # AdamW state exists (the process's first step allocates ~1 GB of one-time buffers and takes ~15 s)
    # at learning rate 0, so the weights of the measured step are the initial ones
    t0 = time.perf_counter()
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
    optimizer.zero_grad(set_to_none=True)
    train_group(
        model,
        store,
        [(SLIDE, 1)],
        texts[:3],
        len(questions),
        1.0,
        max_inst,
        np.random.default_rng(seed),
        np.random.default_rng(1),
        False,
        summary,
        [],
        grad_candidates=1,
        cand_rng=np.random.default_rng(2),
    )
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr
    sync(dev)
    warm = time.perf_counter() - t0
    mark = memory_mark(dev)
    sync(dev)
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    used = train_group(
        model,
        store,
        [(SLIDE, 1)],
        texts,
        len(questions),
        1.0,
        max_inst,
        np.random.default_rng(seed),
        np.random.default_rng(1),
        False,
        summary,
        losses,
        grad_candidates=grad,
        cand_rng=np.random.default_rng(2),
    )
    optimizer.step()
    sync(dev)
    step_s = time.perf_counter() - t0
    if not used:
        raise RuntimeError("the LoRA training step did not run a forward/backward pass")
    peak, how = memory_peak(dev, mark)
    return {
        "n_texts": n_texts,
        "grad": min(grad, n_texts) if grad else n_texts,
        "device": device,
        "warmup_s": warm,
        "step_s": step_s,
        "peak_mb": peak / 2**20,
        "mem": how,
        "tokens": LORA_TOKENS,
        "loss": round(losses[0], 4),
    }


def run_child(n: int, ratio: float, device: str, args, lora: bool = False) -> dict:
    spec = ["--lora-child" if lora else "--child", f"{n},{ratio},{device}"]
    cmd = [
        sys.executable,
        __file__,
        *spec,
        "--dim",
        str(args.dim),
        "--steps",
        str(args.steps),
        "--max-seconds",
        str(args.max_seconds),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        what = f"LoRA step with {n} texts ({ratio} with gradients)" if lora else f"configuration N={n} ratio={ratio}"
        raise RuntimeError(f"{what} on {device} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def lora_part(devices: list[str], args) -> list[str]:
    """Run the two LoRA configurations per device; return their RESULT fields."""
    big, k = args.lora_texts, args.lora_grad
    print(
        f"LoRA text step (r 8, {LORA_TOKENS}-token candidates, text_grad_candidates {k}), one step each, "
        f"{args.threads} CPU threads"
    )
    print(f"{'device':>6} {'texts':>6} {'w/grad':>6} {'step_s':>8} {'peak_mb':>9}  memory")
    fields: list[str] = []
    for dev in devices:
        res = {}
        for n in (big, k):
            d = run_child(n, k, dev, args, lora=True)
            res[n] = d
            print(f"{dev:>6} {n:>6} {d['grad']:>6} {d['step_s']:>8.1f} {d['peak_mb']:>9.1f}  {d['mem']}", flush=True)
        ratio = res[big]["peak_mb"] / res[k]["peak_mb"]
        print(
            f"{dev} LoRA: {big} vs {k} candidates -> peak memory x{ratio:.2f} "
            f"({'ok, <= 1.5' if ratio <= 1.5 else 'ABOVE 1.5'}), step time x{res[big]['step_s'] / res[k]['step_s']:.2f}"
        )
        pre = "" if dev == "cpu" else f"{dev}_"
        for key, fmt in (("step_s", ".4g"), ("peak_mb", ".1f")):
            for n in (big, k):
                fields.append(f"{pre}lora_{key}_{n}={res[n][key]:{fmt}}")
        fields.append(f"{pre}lora_peak_ratio={ratio:.3f}")
    return fields


def kname(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1024,4096,16384", help="bag sizes N (ratio 1.0)")
    ap.add_argument("--ratios", default="0.25,0.5,1.0", help="instance_ratio sweep on the largest bag")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="cap on timed seconds per configuration")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument(
        "--only",
        default="all",
        choices=["all", "steps", "lora"],
        help="steps = the instance sweep only; lora = the LoRA text step only",
    )
    ap.add_argument("--lora-texts", type=int, default=786, help="candidate texts of the LoRA step")
    ap.add_argument("--lora-grad", type=int, default=96, help="text_grad_candidates of the LoRA step")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--lora-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, ratio, device = args.child.split(",")
        print(json.dumps(child(int(n), float(ratio), device, args)))
        return
    if args.lora_child:
        n, grad, device = args.lora_child.split(",")
        print(json.dumps(lora_child(int(n), int(float(grad)), device, args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"], "cuda": ["cuda"]}[
        args.device
    ]
    t_all = time.perf_counter()
    if args.only == "lora":
        fields = lora_part(devices, args)
        print(f"total {time.perf_counter() - t_all:.0f}s")
        print("RESULT " + " ".join(fields + [f"device={'cpu' if 'cpu' in devices else 'cuda'}"]))
        return
    big = max(sizes)
    configs = [(n, 1.0) for n in sizes] + [(big, r) for r in ratios if r != 1.0]
    print(
        f"FiVE training step (forward + backward + AdamW), feature dim {args.dim}, "
        f"{torch.get_num_threads() if args.threads <= 0 else args.threads} CPU threads, torch {torch.__version__}"
    )
    print(
        f"{'device':>6} {'N':>6} {'ratio':>5} {'M':>6} {'warmup_s':>9} {'step_s':>8} {'steps':>5} "
        f"{'peak_mb':>8} {'ms/1k M':>8} {'MB/1k M':>8}  memory"
    )
    res: dict[tuple, dict] = {}
    for dev in devices:
        for n, r in configs:
            d = run_child(n, r, dev, args)
            res[(dev, n, r)] = d
            print(
                f"{dev:>6} {n:>6} {r:>5.2f} {d['m']:>6} {d['warmup_s']:>9.3f} {d['step_s']:>8.3f} {d['steps']:>5} "
                f"{d['peak_mb']:>8.1f} {1e6 * d['step_s'] / d['m']:>8.2f} {1024 * d['peak_mb'] / d['m']:>8.2f}  {d['mem']}",
                flush=True,
            )
    for dev in devices:
        sweep = sorted((res[(dev, big, r)] for r in ratios if (dev, big, r) in res), key=lambda d: d["m"])
        if len(sweep) > 1:
            lo, hi = sweep[0], sweep[-1]
            print(
                f"{dev} sampling sweep on the {kname(big)} bag: M x{hi['m'] / lo['m']:.2f} -> step time "
                f"x{hi['step_s'] / lo['step_s']:.2f}, peak memory x{hi['peak_mb'] / lo['peak_mb']:.2f}"
            )
        s, b = res[(dev, min(sizes), 1.0)], res[(dev, big, 1.0)]
        mem, inst = b["peak_mb"] / s["peak_mb"], b["m"] / s["m"]
        print(
            f"{dev} {kname(big)} vs {kname(min(sizes))}: sampled instances x{inst:.2f}, peak memory x{mem:.2f} "
            f"({'at most linear' if mem <= inst else 'SUPERLINEAR'}), step time x{b['step_s'] / s['step_s']:.2f}; "
            f"marginal {1024 * (b['peak_mb'] - s['peak_mb']) / (b['m'] - s['m']):.1f} MB per 1k sampled instances"
        )

    fields = []
    for key in ("step_s", "peak_mb"):
        for n in sizes:
            d = res[("cpu", n, 1.0)] if "cpu" in devices else None
            if d:
                fields.append(f"{key}_{kname(n)}={d[key]:.4g}")
    if "cpu" in devices:
        s, b = res[("cpu", min(sizes), 1.0)], res[("cpu", big, 1.0)]
        fields.append(f"mem_growth_{kname(big)}_vs_{kname(min(sizes))}={b['peak_mb'] / s['peak_mb']:.3f}")
        fields.append(f"instances_ratio_{kname(big)}_vs_{kname(min(sizes))}={b['m'] / s['m']:.3f}")
    if "cuda" in devices:
        for key in ("step_s", "peak_mb"):
            for n in sizes:
                fields.append(f"cuda_{key}_{kname(n)}={res[('cuda', n, 1.0)][key]:.4g}")
        s, b = res[("cuda", min(sizes), 1.0)], res[("cuda", big, 1.0)]
        fields.append(f"cuda_mem_growth_{kname(big)}_vs_{kname(min(sizes))}={b['peak_mb'] / s['peak_mb']:.3f}")
    if args.only == "all":
        fields += lora_part(devices, args)
    print(f"total {time.perf_counter() - t_all:.0f}s")
    fields.append(f"device={'cpu' if 'cpu' in devices else 'cuda'}")
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
