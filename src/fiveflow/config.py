"""Load and validate fiveflow's config.yaml against the schema shipped with the package (fiveflow/data/config.schema.yaml).

Errors name the offending key (dotted path) and say how to fix it, e.g.::

    config.yaml: key `tiling.target_mpp`: 'abc' is not of type 'number'. Fix: use a number, > 0.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any

# jsonschema imports rfc3987_syntax, which builds a grammar at import time (~1.5 s), only for its "iri"
# format checker; our schema uses no formats. Marking it absent keeps every CLI call and Snakemake start fast.
sys.modules.setdefault("rfc3987_syntax", None)
import jsonschema  # noqa: E402
import yaml  # noqa: E402

from .embed import is_local_weights  # noqa: E402
from .reports import backend_name  # noqa: E402
from .settings import fill_defaults, load_schema, resolve_ref  # noqa: E402


def _project_root() -> Path:
    """Where relative config paths (``resources/...``, ``results``) are resolved from when no root is given.

    Running from a checkout (``src/fiveflow`` under a folder with the Snakefile, as with ``make setup``'s
    editable install): that folder, the workflow's own base directory. An installed package lives in
    site-packages, which holds no project: there it is the working directory, where the command is run.
    The workflow always passes its base directory explicitly.
    """
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "Snakefile").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()


class ConfigError(ValueError):
    """A config problem, with a message that names the key and the fix."""


def _subschema(schema: dict, root: dict, path: list) -> dict:
    """Walk ``schema`` along ``path`` (resolving local $refs) to find the key's own schema."""
    node = schema
    for part in path:
        node = resolve_ref(root, node)
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return resolve_ref(root, node)


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _explain(err: jsonschema.ValidationError, schema: dict, source: str) -> str:
    path = list(err.absolute_path)
    key = _dotted(path)
    if err.validator == "additionalProperties":
        node = _subschema(schema, schema, path)
        known = sorted(node.get("properties", {}))
        extra = [k for k in err.instance if k not in known] if isinstance(err.instance, dict) else []
        msgs = []
        for k in extra:
            full = f"{key}.{k}" if path else k
            close = difflib.get_close_matches(k, known, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            msgs.append(f"{source}: unknown key `{full}`.{hint} Fix: remove it or use one of: {', '.join(known)}.")
        return "\n".join(msgs)
    if err.validator == "required":
        return f"{source}: {err.message} under `{key}`. Fix: add it (see the commented default config.yaml)."
    node = _subschema(schema, schema, path)
    about = node.get("description")  # what the key is: context for the fix, not the fix itself
    hint = None
    if err.validator == "enum":
        hint = "use one of: " + ", ".join(map(str, err.validator_value))
    elif err.validator == "type":
        bounds = _bounds(node).strip()
        hint = f"use {_type_words(err.validator_value)}" + (f", {bounds}" if bounds else "")
    elif err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        hint = f"use a value{_bounds(node)}"
    if hint and about:
        hint = f"{hint} ({about})"
    hint = hint or about
    fix = f" Fix: {hint}." if hint else ""
    return f"{source}: key `{key}`: {err.message}.{fix}"


_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _type_words(types) -> str:
    return " or ".join(_TYPE_WORDS.get(t, t) for t in ([types] if isinstance(types, str) else types))


def _non_finite(node: Any, path: tuple = ()) -> list[tuple[tuple, float]]:
    """(key path, value) of every NaN or infinite number in ``node`` (JSON Schema's bounds let NaN through)."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(path, node)]
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in _non_finite(v, (*path, k))]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _non_finite(v, (*path, i))]
    return []


def _accepts_numbers(node: dict) -> bool:
    types = node.get("type")
    if types is None:
        return True
    return bool({"number", "integer"} & set([types] if isinstance(types, str) else types))


def _bounds(node: dict) -> str:
    """`` >= 0 and <= 1`` for a schema with those bounds ('' without bounds)."""
    ops = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
    parts = [f"{op} {node[k]}" for k, op in ops if k in node]
    return (" " + " and ".join(parts)) if parts else ""


def _yaml_number(v: float) -> str:
    return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf")


def validate_config(config: dict, source: str = "config.yaml", root: str | Path | None = None) -> dict:
    """Validate ``config``; raise :class:`ConfigError` listing every problem.

    A valid ``config`` gets every missing optional key filled in place with its schema default
    (:func:`fiveflow.settings.fill_defaults`) and is returned."""
    schema = load_schema()
    bad = _non_finite(config)
    msgs = []
    bad = [(p, v) for p, v in bad if _accepts_numbers(_subschema(schema, schema, list(p)))]
    for path, value in bad:  # (elsewhere the schema's type check reports the number)
        node = _subschema(schema, schema, list(path))
        hint = node.get("description")
        msgs.append(
            f"{source}: key `{_dotted(path)}`: {_yaml_number(value)} is not a finite number. "
            f"Fix: set a finite number{_bounds(node)}{f' ({hint})' if hint else ''}."
        )
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    errors = [e for e in errors if not any(tuple(e.absolute_path)[: len(p)] == p for p, _ in bad)]
    msgs += [_explain(e, schema, source) for e in errors]
    if msgs:
        raise ConfigError("\n".join(msgs))
    fill_defaults(config, schema)  # every optional key now holds its schema default (fiveflow.settings)
    _check_semantics(config, source, Path(root) if root else PROJECT_ROOT)
    return config


def _check_semantics(cfg: dict, source: str, root: Path) -> None:
    """Checks across keys and against the file system, on a config whose defaults are filled."""
    problems = []
    cohort = cfg["cohort"]
    fetched = download_targets(cfg, root)  # files the workflow fetches (rules fetch_<name>) count as present
    seen: dict[Path, str] = {}
    for name, d in cfg["downloads"].items():
        target = resolve_path(d["path"], root)
        if target in seen:
            problems.append(
                f"{source}: `downloads.{name}.path` and `downloads.{seen[target]}.path` are the same file "
                f"({target}). Fix: give each download its own path."
            )
        seen[target] = name
    if cohort["source"] == "demo" and "demo" not in cohort:
        problems.append(f"{source}: `cohort.source` is demo but `cohort.demo` is missing. Fix: add the demo section.")
    if cohort["source"] == "gdc":
        if "gdc" not in cohort:
            problems.append(
                f"{source}: `cohort.source` is gdc but `cohort.gdc` is missing. Fix: add the gdc section "
                "(see config/tcga_lung.yaml)."
            )
        else:
            for cls_name, files in cohort["gdc"]["manifests"].items():
                for f in [files] if isinstance(files, str) else files:
                    if not resolve_path(f, root).is_file():
                        problems.append(
                            f"{source}: `cohort.gdc.manifests.{cls_name}`: file not found: "
                            f"{resolve_path(f, root)}. Fix: download the manifest from the GDC portal "
                            "(cart > Download > Manifest) and point to it."
                        )
            lab = cohort["gdc"]["labels"]
            if lab and not resolve_path(lab, root).is_file():
                problems.append(
                    f"{source}: `cohort.gdc.labels`: file not found: {resolve_path(lab, root)}. "
                    "Fix: correct the path or set it to null (labels then come from the manifests)."
                )
        val = cohort["reports"]
        if not val or not (resolve_path(val, root).exists() or resolve_path(val, root) in fetched):
            problems.append(
                f"{source}: `cohort.reports`: reports table not found ({val!r}). Fix: point it at the "
                "TCGA-Reports CSV (patient_filename, text), or at the `path` of a `downloads` entry "
                "that fetches it."
            )
    if cohort["source"] == "samples":
        for key in ("samples", "reports"):
            val = cohort[key]
            if not val:
                problems.append(f"{source}: `cohort.{key}` must be a file path when `cohort.source` is samples.")
            elif not (
                resolve_path(val, root).is_file()
                or (key == "reports" and resolve_path(val, root).is_dir())
                or (key == "reports" and resolve_path(val, root) in fetched)
            ):
                problems.append(
                    f"{source}: `cohort.{key}`: file not found: {resolve_path(val, root)}. Fix: correct the path (relative paths are from {root})."
                )
    rep = cfg["reports"]
    backend = backend_name(rep["backend"])
    if backend == "precomputed":
        val = rep["precomputed"]
        for one in [val] if isinstance(val, str) or not val else val:
            if not one or not (resolve_path(one, root).is_file() or resolve_path(one, root) in fetched):
                problems.append(
                    f"{source}: `reports.precomputed`: answers file not found ({one!r}). Fix: point it to "
                    "a CSV with patient_id and answer, or at the `path` of a `downloads` entry that "
                    "fetches it."
                )
    if backend == "openai" and "openai" not in rep:
        problems.append(
            f"{source}: `reports.backend` is openai but `reports.openai` is missing. Fix: add the openai section."
        )
    names = [c["name"] for c in cfg["classes"]]
    if len(set(names)) != len(names):
        problems.append(f"{source}: `classes` names must differ, got {names}.")
    weights = cfg["embedding"]["weights"]
    if is_local_weights(weights) and not resolve_path(weights, root).exists():
        problems.append(
            f"{source}: `embedding.weights`: checkpoint not found: {resolve_path(weights, root)}. "
            "Fix: use random, default, hf-hub:<id> or an existing file or folder."
        )
    pre = cfg["embedding"]["precomputed"]
    if pre and not resolve_path(pre, root).is_dir():
        problems.append(
            f"{source}: `embedding.precomputed`: folder not found: {resolve_path(pre, root)}. "
            "Fix: point it at the folder holding the per-slide CSVs or h5 bags, or set it to null."
        )
    tiling = cfg["tiling"]
    if int(tiling["overlap"] or 0) >= int(tiling["patch_size"]):
        problems.append(
            f"{source}: `tiling.overlap` ({tiling['overlap']}) must be smaller than `tiling.patch_size` "
            f"({tiling['patch_size']}). Fix: lower the overlap (e.g. patch_size // 2 for 50%)."
        )
    problems += _mizero_problems(cfg, source, root)
    problems += _ablation_problems(cfg, source)
    problems += _model_problems(cfg, source)
    if problems:
        raise ConfigError("\n".join(problems))


def _model_problems(cfg: dict, source: str) -> list[str]:
    model = cfg["model"]
    if model["position_encoding"] == "sinusoid" and model["position"] != "index":
        return [
            f"{source}: `model.position_encoding` is sinusoid (the authors' 1-D encoding of row index / N) but "
            f"`model.position` is {model['position']!r}. Fix: set `model.position: index`, or use "
            "`model.position_encoding: fourier` with coordinates."
        ]
    return []


def _ablation_problems(cfg: dict, source: str) -> list[str]:
    from .train.ablations import parse_ablation

    out, methods = [], {}
    for name in cfg["ablations"]:
        try:
            a = parse_ablation(name)
        except ValueError as exc:
            out.append(f"{source}: `ablations`: {exc}")
            continue
        if a.method in methods:  # e.g. ratio_0.5 and ratio_0.50
            out.append(
                f"{source}: `ablations`: {methods[a.method]!r} and {name!r} are the same ablation. Fix: keep one."
            )
        methods[a.method] = name
    return out


def _mizero_problems(cfg: dict, source: str, root: Path) -> list[str]:
    """MI-Zero needs an encoder with a text tower when required, and its prompt file when it will run."""
    from .embed.text_towers import TEXT_TOWER_ENCODERS, has_text_tower

    mz = cfg["mizero"]
    encoder = cfg["embedding"]["encoder"]
    enabled = mz["enabled"]
    if enabled is True and not has_text_tower(encoder):
        return [
            f"{source}: `mizero.enabled` is true but `embedding.encoder` {encoder!r} has no supported text tower. "
            f"Fix: set `embedding.encoder` to one of {', '.join(TEXT_TOWER_ENCODERS)}, or `mizero.enabled` to "
            "auto or false."
        ]
    prompts = mz["prompts"]
    runs = enabled is True or (enabled == "auto" and has_text_tower(encoder))
    if runs and prompts and not resolve_path(prompts, root).is_file():
        return [
            f"{source}: `mizero.prompts`: file not found: {resolve_path(prompts, root)}. Fix: point it at a "
            "prompt YAML (e.g. resources/prompts/mizero-lung.yaml) or set `mizero.enabled: false`."
        ]
    return []


def resolve_path(value: str | Path, root: str | Path = PROJECT_ROOT) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(root) / p


def answer_files(src: str | os.PathLike | list | tuple | None) -> list[Path]:
    """``reports.precomputed`` as a list of paths (one file, or several read one after the other)."""
    if not src:
        return []
    return [Path(p) for p in ([src] if isinstance(src, (str, os.PathLike)) else src)]


def download_targets(cfg: dict, root: str | Path = PROJECT_ROOT) -> dict[Path, str]:
    """Resolved ``downloads.*.path`` -> download name: the inputs the workflow fetches (rules ``fetch_<name>``)."""
    return {resolve_path(d["path"], root): name for name, d in (cfg.get("downloads") or {}).items()}


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: problem (context from line K)`` on one line (PyYAML's own text spans four)."""
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if mark is None:
        return f": {problem}"
    out = f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        out += f" ({' '.join(str(context).split())}" + (f" from line {cmark.line + 1})" if cmark else ")")
    return out


def load_config(path: str | Path, option: str = "--config") -> dict:
    """Read a YAML config file and validate it. ``option``: how the user named the file (``--config`` for
    the fiveflow command, ``--configfile`` for Snakemake), for the fix in error messages."""
    path = Path(path)
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}. Fix: pass {option} with an existing file.") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path}: a folder, not a config file. Fix: pass {option} with the path of a YAML file (e.g. config.yaml)."
        ) from None
    except PermissionError:
        raise ConfigError(
            f"{path}: cannot read the config file: permission denied. Fix: check its permissions "
            f"(ls -l {path}), or pass {option} with a copy you can read."
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file ({exc.reason} at byte {exc.start}). Fix: pass {option} with a "
            "YAML config file saved as UTF-8."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML{_yaml_where(exc)}. Fix: correct the YAML there (indent with "
            "spaces, a ':' after each key, close every quote and bracket)."
        ) from None
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys at the top level. Fix: start from the commented default config.yaml."
        )
    return validate_config(cfg, source=str(path))
