"""Sweeps as code: named runs as config overrides, expanded into jobs with their own workdirs.

A sweep file (`experiments/<name>.py`) defines `get_sweep(arg=None) -> Sweep`. Each `Run` is one
invocation of `bert_vs_transformer.main`: a config spec plus `--config.<field>=<value>` overrides.
`Row`s and `Metric`s say how `experiments.report` tabulates the runs next to a paper's numbers.

    runs = [Run(f"h{h}", {"model.num_heads": h}) for h in (1, 2, 8)]
    runs = [Run(name_of(o), o) for o in product({"optimizer.learning_rate": [1e-4, 3e-4]}, seed=[0, 1])]

A run may use another run's workdir (`ref("pretrain")` in its config spec or an override value, e.g.
`configs/glue.py:task=sst2,init={ref}`): the reference becomes that run's workdir and the run waits
for it (launchers order or chain the jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROOT = "workdirs"  # relative to the repository root (git-ignored); or $BVT_SWEEP_ROOT / --root

_REF = re.compile(r"\{run:([A-Za-z0-9_.\-]+)\}")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def ref(run_name: str) -> str:
    """A placeholder for `run_name`'s workdir, resolved when the sweep is expanded."""
    return "{run:%s}" % run_name


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: config overrides (field path without `config.` -> value)."""

    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    config: str | None = None  # config spec; None = the sweep's
    row: str | None = None  # the report row it feeds; None = its own name
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # for Metric.where filters
    after: tuple[str, ...] = ()  # runs that must finish first (besides those ref()'d)


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of the report's table: the paper's setting and numbers beside ours."""

    name: str
    group: str = ""  # e.g. "(A)"
    setting: str = ""  # the paper's setting, in the paper's terms
    ours: str = ""  # our setting; "" = the overrides of the row's runs
    paper: Mapping[str, float] = dataclasses.field(default_factory=dict)  # Metric.paper key -> number


@dataclasses.dataclass(frozen=True)
class Metric:
    """A column pair (paper | ours) of the report's table and one bar plot."""

    title: str
    keys: tuple[str, ...] | Mapping[str, tuple[str, ...]]  # metrics.jsonl names (first present wins), or per row
    paper: str | None = None  # Row.paper key of the paper's number
    fmt: str = ".2f"
    scale: float = 1.0  # ours x scale (100: fractions as the paper's percentages)
    higher_is_better: bool = True  # also picks the best of several matching runs (e.g. an lr grid)
    where: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # only runs whose tags match

    def keys_for(self, row: str) -> tuple[str, ...]:
        if isinstance(self.keys, Mapping):
            keys = self.keys.get(row, ())
        else:
            keys = self.keys
        return (keys,) if isinstance(keys, str) else tuple(keys)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    config: str  # default config spec, e.g. "configs/transformer.py:multi30k"
    runs: Sequence[Run]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # every run, before its own
    rows: Sequence[Row] = ()  # () = one row per run
    metrics: Sequence[Metric] = ()
    curves: Sequence[tuple[str, str]] = (("loss", "training loss"),)  # (metrics.jsonl key, title) per plot
    curves_where: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # runs drawn in the curves
    baseline: str | None = None  # a row name: cells also show the difference to it
    title: str = ""
    notes: str = ""  # markdown under the report's title (what is compared with what)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"sweep name {self.name!r}: use letters, digits, '_', '-', '.'")
        seen: dict[str, int] = {}
        for i, run in enumerate(self.runs):
            if not _NAME.match(run.name):
                raise ValueError(f"run name {run.name!r}: use letters, digits, '_', '-', '.'")
            if run.name in seen:
                raise ValueError(f"sweep {self.name}: two runs named {run.name!r}")
            seen[run.name] = i
        for i, run in enumerate(self.runs):
            for dep in dependencies(run):
                if dep not in seen:
                    raise ValueError(f"run {run.name!r} refers to unknown run {dep!r}")
                if seen[dep] >= i:
                    raise ValueError(f"run {run.name!r} depends on {dep!r}, which must come earlier in the sweep")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep {self.name}: duplicate row names")
        if self.rows:
            unknown = {r.row for r in self.runs if r.row is not None} - set(names)
            if unknown:
                raise ValueError(f"runs name rows that the sweep does not define: {sorted(unknown)}")
        if self.baseline is not None and self.baseline not in [r.name for r in self.table_rows()]:
            raise ValueError(f"baseline row {self.baseline!r} is not a row of the sweep")

    def table_rows(self) -> list[Row]:
        if self.rows:
            return list(self.rows)
        rows, seen = [], set()
        for run in self.runs:
            name = run.row or run.name
            if name not in seen:
                seen.add(name)
                rows.append(Row(name))
        return rows

    def expand(self, root: str, extra: Mapping[str, Any] | None = None) -> list["Job"]:
        """Jobs in run order, each with workdir <root>/<sweep>/<run>; `extra` overrides every run."""
        sweep_dir = absolute(os.path.join(root, self.name))
        workdirs = {run.name: os.path.join(sweep_dir, run.name) for run in self.runs}

        def resolve(value):
            if isinstance(value, str):
                return _REF.sub(lambda m: workdirs[m.group(1)], value)
            return value

        jobs = []
        for run in self.runs:
            overrides = {**self.overrides, **run.overrides, **(extra or {})}
            jobs.append(Job(
                sweep=self.name,
                name=run.name,
                config=resolve(run.config or self.config),
                workdir=workdirs[run.name],
                overrides=tuple((k, resolve(v)) for k, v in overrides.items()),
                after=tuple(dependencies(run)),
                row=run.row or run.name,
                tags=dict(run.tags),
                own_overrides=tuple(run.overrides.items()),
            ))
        return jobs


def dependencies(run: Run) -> list[str]:
    """Runs that `run` waits for: its `after` and every ref() in its config spec or overrides."""
    found = list(run.after)
    for text in [run.config or ""] + [v for v in run.overrides.values() if isinstance(v, str)]:
        found += _REF.findall(text)
    return list(dict.fromkeys(found))


@dataclasses.dataclass(frozen=True)
class Job:
    """An expanded run: the exact command, its workdir and what it waits for."""

    sweep: str
    name: str
    config: str
    workdir: str
    overrides: tuple[tuple[str, Any], ...]
    after: tuple[str, ...] = ()
    row: str = ""
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    own_overrides: tuple[tuple[str, Any], ...] = ()  # the run's own (for the report's "ours" column)

    def main_args(self) -> list[str]:
        """Arguments of `python -m bert_vs_transformer.main` for this job."""
        return [f"--config={self.config}", f"--workdir={self.workdir}"] + [
            f"--config.{k}={format_value(v)}" for k, v in self.overrides
        ]

    def command(self, python: str = "python") -> list[str]:
        return [python, "-m", "bert_vs_transformer.main"] + self.main_args()

    @property
    def num_train_steps(self) -> int | None:
        """The step at which the run is finished: its override, else the config's default."""
        for k, v in reversed(self.overrides):
            if k == "num_train_steps":
                return int(v)
        value = _config_default(self.config, "num_train_steps")
        return int(value) if value is not None else None


def format_value(value: Any) -> str:
    """A value as `--config.x=` expects it (ml_collections' config_flags parsers)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return str(tuple(value))
    if value is None:
        raise ValueError("None cannot be passed as a --config override")
    return str(value)


def product(*mappings: Mapping[str, Sequence[Any]], **axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination: product({"model.num_heads": [1, 2]}, seed=[0, 1]) -> 4 override dicts."""
    merged = _axes(mappings, axes)
    keys = list(merged)
    return [dict(zip(keys, values)) for values in itertools.product(*(merged[k] for k in keys))]


def zip_(*mappings: Mapping[str, Sequence[Any]], **axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Values taken together: zip_({"model.d_model": [64, 256], "model.d_ff": [128, 512]}) -> 2 dicts."""
    merged = _axes(mappings, axes)
    lengths = {k: len(v) for k, v in merged.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zip_ needs equally long value lists, got {lengths}")
    keys = list(merged)
    return [dict(zip(keys, values)) for values in zip(*(merged[k] for k in keys))]


def _axes(mappings, axes) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for m in list(mappings) + [axes]:
        for k, v in m.items():
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise ValueError(f"axis {k!r} needs a list of values, got {v!r}")
            merged[k] = list(v)
    return merged


def name_of(overrides: Mapping[str, Any]) -> str:
    """A run name from overrides: {"model.num_heads": 1, "seed": 0} -> "num_heads1_seed0"."""
    parts = []
    for k, v in overrides.items():
        text = format_value(v).replace("/", "-")
        parts.append(re.sub(r"[^A-Za-z0-9_.\-]", "", k.rsplit(".", 1)[-1] + text))
    return "_".join(parts) or "default"


def load_sweep(spec: str) -> Sweep:
    """Loads `experiments/<name>.py[:arg]` (or a bare sweep name) and calls its get_sweep(arg)."""
    from bert_vs_transformer import config_args

    path, _, arg = spec.partition(":")
    candidates = [path, os.path.join(REPO_ROOT, path)]
    if not os.path.dirname(path):  # a bare name: experiments/<name>[.py]
        candidates.append(os.path.join(REPO_ROOT, "experiments", path if path.endswith(".py") else path + ".py"))
    module = config_args.load_module(path, "sweep", candidates)
    if not hasattr(module, "get_sweep"):
        raise AttributeError(f"{module.__file__} defines no get_sweep(arg)")
    return module.get_sweep(arg or None)


def parse_set(item: str) -> tuple[str, str]:
    """A `--set=FIELD=VALUE` item (FIELD may start with `config.`) as (field, value)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if key.startswith("config."):
        key = key[len("config."):]
    if not sep or not key:
        raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
    return key, value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a bad flag or value reported in one line on stderr (exit 2), without the usage."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def absolute(path: str) -> str:
    """A local path made absolute; a URI (gs://bucket/dir) as it is."""
    return path if "://" in path else os.path.abspath(path)


def default_root() -> str:
    return os.environ.get("BVT_SWEEP_ROOT") or os.path.join(REPO_ROOT, DEFAULT_ROOT)


def _config_path(spec: str) -> str | None:
    path = spec.partition(":")[0]
    for candidate in (path, os.path.join(REPO_ROOT, path)):
        if os.path.isfile(candidate):
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _load_config(spec: str):
    from bert_vs_transformer import config_args

    path = _config_path(spec)
    if path is None:
        return None
    try:
        return config_args.load(path + ":" + spec.partition(":")[2])
    except Exception:  # a config that needs what is not here yet (e.g. an init dir): no default
        return None


def _config_default(spec: str, field: str):
    config = _load_config(spec)
    return None if config is None else config.get(field)


def check_job(job: Job) -> str | None:
    """Whether main would accept the job's config and overrides (as its flag parser does); the
    problem in one line, or None."""
    from absl import flags
    from ml_collections import config_flags

    path = _config_path(job.config)
    if path is None:
        return f"config file {job.config.partition(':')[0]!r} does not exist"
    argv = ["main", f"--config={path}:{job.config.partition(':')[2]}".rstrip(":")] + job.main_args()[2:]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ml_collections' load_module
            values(argv)
            values["config"].value  # noqa: B018 (loads the file when it was not yet)
    except Exception as e:  # noqa: BLE001 (config files and ml_collections raise anything)
        detail = " ".join(str(e).split())
        if isinstance(e, (AttributeError, KeyError)):
            detail = f"no such config field {detail}"
        elif ". " in detail:
            detail = detail[: detail.index(". ") + 1]  # ml_collections appends paragraphs of advice
        return f"{type(e).__name__}: {detail[:240]}"
    return None
