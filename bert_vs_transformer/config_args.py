"""big_vision-style config arguments: `configs/x.py:variant=base,k=v` -> named options."""

from __future__ import annotations

from typing import Any, Mapping


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
