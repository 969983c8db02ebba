"""big_vision-style config arguments: `configs/x.py:variant=base,k=v` -> named options."""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Mapping, Sequence

from absl import flags
from ml_collections.config_flags import config_flags

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


class FlagError(ValueError):
    """A bad flag, config file, config variant or --config.* override, as a one-line message."""


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """absl's flag parsing (as app.run's flags_parser); a mistake raises FlagError naming the flag or file."""
    try:
        rest = flag_values(argv)
    except SyntaxError as e:  # a config file that is not valid Python
        raise FlagError(f"{e.filename}:{e.lineno}: {e.msg}: the config file is not valid Python") from e
    except flags.Error as e:
        raise FlagError(_flag_error_line(str(e))) from e
    except OSError as e:  # an override applied to a config file that did not load
        raise FlagError(_unloaded_line(argv, flag_values, e)) from e
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config_flags
        detail = _one_line(str(e.args[0] if isinstance(e, KeyError) and e.args else e))
        bad = [a for a in argv[1:] if re.match(r"--?\w+\.", a)]
        if not bad:
            raise FlagError(f"{_config_given(argv, flag_values)}: {type(e).__name__}: {detail}; a config file "
                            "defines get_config(arg) returning a ConfigDict") from e
        field = re.fullmatch(r"""['"]*([\w.]+)['"]*""", detail)
        problem = f"no such field {field.group(1)!r}" if field else f"wrong type or value: {detail}"
        raise FlagError(f"bad config override among {bad}: {problem}; check the field's name and type in the "
                        "config file") from e
    for name in list(flag_values):  # config_flags keeps a file it could not load as an _ErrorConfig value
        value = flag_values[name].value
        if config_flags.is_config_flag(flag_values[name]) and type(value).__name__ == "_ErrorConfig":
            raise FlagError(_unloaded_line(argv, flag_values, vars(value).get("_error", "unreadable")))
    return rest


def _one_line(text: str) -> str:
    return " ".join(text.replace("\\n", " ").replace("\\'", "'").split())


def _flag_error_line(text: str) -> str:
    """absl's message; a config file's get_config error keeps its last line (the exception), not the traceback."""
    m = re.match(r"flag (--[^=]+)=(.*?): Error whilst parsing config file:", text, re.S)
    if not m:
        if re.match(r"flag --\w+\.", text):
            return _one_line(text) + "; pass a value of the field's type (see the config file)"
        return _one_line(text) + ("; --helpfull lists the flags" if text.startswith("Unknown command line flag") else "")
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    return f"{m.group(1)}={m.group(2)}: {last}; check the config file and its variant (configs/<file>.py:<variant>)"


def _unloaded_line(argv: Sequence[str], flag_values: flags.FlagValues, error: BaseException | str) -> str:
    """A config file that could not be read (config_flags defers that error to the config's first use)."""
    reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
    return (f"{_config_given(argv, flag_values)}: config file not loaded ({reason}); pass an existing file, "
            "e.g. configs/transformer.py:tiny (a relative path is taken from the working directory)")


def _config_given(argv: Sequence[str], flag_values: flags.FlagValues) -> str:
    """The last --<config flag>=<file> argument of argv."""
    names = [n for n in flag_values if config_flags.is_config_flag(flag_values[n])]
    given = [a for a in argv[1:] if any(re.match(rf"--?{n}=", a) for n in names)]
    return given[-1] if given else "the config file"
