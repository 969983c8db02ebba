"""big_vision-style config arguments: `configs/x.py:variant=base,k=v` -> named options."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

from bert_vs_transformer.models.model_config import ModelConfig

# The checkout holding configs/ (the package sits one level below it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(arg: str | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Parses "tiny" or "variant=tiny,key=value" into `defaults` updated with typed values.

    A bare word is the variant. Values take the type of their default (bool accepts
    true/false/1/0); unknown keys are an error naming the known ones.
    """
    out = dict(defaults)
    if not arg:
        return out
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = "variant", part
        key = key.strip()
        if key not in out:
            raise ValueError(f"unknown config argument {key!r} in {arg!r}; known: {sorted(out)}")
        out[key] = _cast(value.strip(), out[key], key)
    return out


def _cast(value: str, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"config argument {key}={value!r} is not a boolean")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def load_module(path: str, kind: str, candidates: list[str] | None = None):
    """Imports a Python file by path (configs/, experiments/): the first existing candidate,
    by default `path` from the working directory, then from the repository root."""
    candidates = candidates or [path, os.path.join(REPO_ROOT, path)]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"{kind} file {path!r} not found (looked in {candidates})")
    module_name = f"bvt_{kind}_" + os.path.splitext(os.path.basename(found))[0]
    module_spec = importlib.util.spec_from_file_location(module_name, found)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load(spec: str):
    """Loads "path/to/config.py[:arg]" as ml_collections' config_flags does: get_config(arg).

    Relative paths are tried from the working directory, then from the repository root.
    """
    path, _, arg = spec.partition(":")
    return load_module(path, "config").get_config(arg or None)


def model_config(spec: str, **overrides):
    """The ModelConfig of a config file spec, with field overrides."""
    cfg = ModelConfig.from_config(load(spec))
    return cfg.replace(**overrides) if overrides else cfg


