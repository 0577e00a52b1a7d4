"""Running an encoder fast: normalisation on the device, channels_last, precision, CPU graph fusion.

``FeatureModel`` takes the uint8 ``[B, S, S, 3]`` batches the reader produces: permuting them to
``[B, 3, S, S]`` gives a channels_last tensor for free, and the scale/shift to the encoder's mean/std
is one fused multiply-add on the device. On CUDA the encoder runs under autocast (bf16 where the GPU
supports it, else fp16); on the CPU it runs in fp32 with batch norms folded into the convolutions
(``torch.fx`` fusion, skipped for models fx cannot trace), which is 10-20% faster for CNNs.
"""

from __future__ import annotations

import logging

import torch

from .encoders.base import Encoder, EncoderError

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class FeatureModel(torch.nn.Module):
    """uint8 NHWC tiles -> normalised float NCHW (channels_last) -> encoder features."""

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        x = tiles.permute(0, 3, 1, 2).float()  # NHWC storage = channels_last NCHW
        return self.model(torch.addcmul(self.shift, x, self.scale))


def resolve_workers(num_workers: int | str, device: torch.device, threads: int) -> int:
    """``auto``: read in the main process on a CPU, ``threads - 1`` workers (2..16) beside a GPU.

    On a CPU the model keeps every core busy and reading is ~5% of the work, so a worker process only
    adds its start-up and memory (bench_embed.py, CMU: I/O efficiency 0.95 with none, 0.92 with one).
    Beside a GPU, reading is the bottleneck: on one H200 (resnet50-trunc, bf16) the model alone ran
    12,500 tiles/s and the pipeline 1,350 tiles/s with 8 workers, 1,990 with 15 (bench_embed.py, a
    2,360-tile synthetic slide): about 130 tiles/s per worker, so give GPU jobs many threads.
    """
    if num_workers != "auto":
        return int(num_workers)
    return 0 if device.type != "cuda" else max(2, min(16, int(threads) - 1))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32)."""
    if precision not in PRECISIONS:
        raise EncoderError(f"`embedding.precision` must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise EncoderError(
                f"`embedding.precision: {precision}` needs a CUDA GPU; this job runs on the CPU. Fix: use auto or fp32."
            )
        return None
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def fuse_for_cpu(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """Fold batch norms into convolutions for CPU inference; return the model unchanged if fx can't trace it."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model, False
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=False), True
    except Exception as exc:  # data-dependent control flow etc.
        log.info("conv-bn fusion skipped (%s: %s)", type(exc).__name__, str(exc)[:120])
        return model, False


def prepare(
    encoder: Encoder, device: torch.device, precision: str = "auto", deterministic: bool = True, cpu_fusion: bool = True
) -> tuple[FeatureModel, torch.dtype | None, str]:
    """The encoder ready to run on ``device``, its autocast dtype and a one-line description."""
    amp = resolve_precision(precision, device)
    inner, fused = encoder.model, False
    if device.type == "cpu" and cpu_fusion:
        inner, fused = fuse_for_cpu(inner)
    fm = FeatureModel(inner, encoder.preprocess.mean, encoder.preprocess.std).eval()
    fm = fm.to(device).to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    desc = f"{device.type} {str(amp).replace('torch.', '') if amp else 'fp32'} channels_last" + (
        " bn-fused" if fused else ""
    )
    return fm, amp, desc
