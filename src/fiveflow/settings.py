"""Config defaults, in one place: the schema (``fiveflow/data/config.schema.yaml``).

Every optional key has its ``default:`` in the schema and nowhere else. :func:`fill_defaults` writes them
into a validated config (``fiveflow.config.validate_config`` calls it, so the Snakefile's ``config`` and
the CLI's config hold every key). Code that is handed one section of a config, possibly a partial one
built by a test or another tool, completes it with :func:`with_defaults`; typed settings objects (the
``reports.openai`` dataclass, the demo difficulty) take their field defaults from :func:`default`.

Sections are named by dotted paths through the schema's properties: ``"model"``, ``"tiling.mask"``,
``"train.pretrain"`` (a ``$ref`` to the shared optimiser definition is followed), ``"reports.openai"``.
An object with a ``default`` (``evaluate``, ``heatmaps``, ``mizero``, ``downloads``) is created when
absent and then filled, so ``config["heatmaps"]["alpha"]`` always exists after validation.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .package_data import package_file

SCHEMA_PATH = package_file("config.schema.yaml")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema (a fresh copy: callers may not change the cached one)."""
    return copy.deepcopy(_load(str(path)))


def resolve_ref(root: dict, node: dict) -> dict:
    """``node`` itself, or the definition its local ``$ref`` (``#/definitions/...``) points to in ``root``."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def section_schema(section: str, schema: dict | None = None) -> dict:
    """The schema node of a dotted ``section`` (``"train.pretrain"``); KeyError for an unknown one."""
    root = schema if schema is not None else _load(str(SCHEMA_PATH))
    node = root
    for part in section.split(".") if section else []:
        node = resolve_ref(root, node)
        props = node.get("properties", {})
        if part not in props:
            raise KeyError(f"no config section `{section}` in the schema (at `{part}`)")
        node = props[part]
    return resolve_ref(root, node)


def defaults(section: str) -> dict:
    """``{key: default}`` for the keys of ``section`` that have one (a fresh copy)."""
    props = section_schema(section).get("properties", {})
    root = _load(str(SCHEMA_PATH))
    out = {}
    for key, sub in props.items():
        sub = resolve_ref(root, sub)
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def default(key: str) -> Any:
    """The schema default of one dotted ``key`` (``"reports.openai.model"``); KeyError when it has none."""
    node = section_schema(key)
    if "default" not in node:
        raise KeyError(f"config key `{key}` has no default in the schema")
    return copy.deepcopy(node["default"])


def with_defaults(values: Mapping | None, section: str) -> dict:
    """``values`` (one config section, possibly partial or None) completed with the section's defaults."""
    return {**defaults(section), **dict(values or {})}


def _filling_validator(root: dict):
    """A Draft 7 validator that, before checking an object's properties, writes their missing defaults.

    jsonschema is imported here, not at module level: the modules that only read defaults (tiling, the
    demo renderer, the LLM config) are imported by every rule script, which should not pay for it."""
    sys.modules.setdefault("rfc3987_syntax", None)  # see fiveflow.config: a slow import for a format we never use
    import jsonschema

    base = jsonschema.Draft7Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if validator.is_type(instance, "object"):
            for key, sub in props.items():
                sub = resolve_ref(root, sub)
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})


def fill_defaults(config: dict, schema: dict | None = None) -> dict:
    """Write every missing default into ``config`` (in place; returned for convenience).

    Call it on a config that passed validation: it walks the schema the way validation does, creating
    absent sections that have a default and filling their keys. Errors are not reported here.
    """
    schema = schema if schema is not None else _load(str(SCHEMA_PATH))
    for _ in _filling_validator(schema)(schema).iter_errors(config):
        pass
    return config
