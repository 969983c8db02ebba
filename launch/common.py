"""What the launchers share: the launcher registry, shell quoting, the guarded job command, the
sweep's event log, and running one training command without a sweep file.

A launcher module has `add_arguments(parser)` and
`launch(jobs, statuses, args, sweep_dir, log, dry_run) -> exit code`; `jobs` are the sweep's
unfinished jobs in run order (a job's `after` runs come earlier or have finished).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shlex
from typing import Any, Mapping, Sequence

from experiments import status as status_lib
from experiments.sweep import REPO_ROOT, ArgumentParser, Job

LAUNCHERS = ("local", "tpu", "slurm")
# main's exit status after saving on SIGINT / SIGTERM (128 + the signal): a cut run, resumable.
PREEMPTED_EXIT_CODES = (130, 143)


def get(name: str):
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; choose from {LAUNCHERS}")
    return importlib.import_module(f"launch.{name}")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for every job (repeatable), e.g. BVT_DATA_DIR=/data")


def parse_env(items: Sequence[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def exports(env: Mapping[str, str]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def status_command(job: Job, python: str) -> list[str]:
    """Exits 0 when the job's workdir holds its finished run (the guard of remote commands)."""
    steps = job.num_train_steps
    return [python, "-m", "experiments.status", job.workdir] + ([f"--steps={steps}"] if steps else []) + ["--quiet"]


def guarded_command(job: Job, python: str, extra_args: Sequence[str] = ()) -> str:
    """`<finished?> || <train>`: a rerun of a finished job does nothing, any other resumes."""
    return f"{shell_join(status_command(job, python))} || {shell_join(job.command(python) + list(extra_args))}"


def git_dirty() -> bool:
    """Whether the checkout has uncommitted changes to tracked files."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.strip())


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


class SweepLog:
    """Appends one JSON line per event to <sweep_dir>/sweep.jsonl (nothing in a dry run)."""

    def __init__(self, sweep_dir: str, enabled: bool = True):
        self.path = os.path.join(sweep_dir, "sweep.jsonl")
        self.enabled = enabled

    def event(self, run: str, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "run": run, "event": event}
        record.update(fields)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def single_job_main(launcher: str, argv: Sequence[str] | None = None) -> int:
    """`python -m launch.<launcher> [options] [--dry_run] -- --config=... --workdir=DIR [--config.k=v]`:
    one training command (no sweep file) through a launcher."""
    import sys

    module = get(launcher)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(f"usage: python -m launch.{launcher} [options] [--dry_run] -- --config=SPEC --workdir=DIR "
              "[--config.k=v ...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    ours, main_args = argv[:split], argv[split + 1:]
    parser = ArgumentParser(prog=f"python -m launch.{launcher}")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    add_common_arguments(parser)
    module.add_arguments(parser)
    args = parser.parse_args(ours)
    config = workdir = None
    overrides = []
    for arg in main_args:
        key, _, value = arg.partition("=")
        if key == "--config":
            config = value
        elif key == "--workdir":
            workdir = value
        elif key.startswith("--config."):
            overrides.append((key[len("--config."):], value))
        else:
            print(f"error: only --config, --workdir and --config.* are passed through, got {arg!r}", file=sys.stderr)
            return 2
    if not config or not workdir:
        print("error: --config and --workdir are required after --", file=sys.stderr)
        return 2
    workdir = os.path.abspath(workdir)
    job = Job(sweep=os.path.basename(os.path.dirname(workdir)), name=os.path.basename(workdir), config=config,
              workdir=workdir, overrides=tuple(overrides))
    status = status_lib.run_status(workdir, job.num_train_steps)
    if status.finished:
        print(f"# {job.name}: {status.describe()}; nothing to do")
        return 0
    sweep_dir = os.path.dirname(workdir)
    try:
        return module.launch([job], {job.name: status}, args, sweep_dir, SweepLog(sweep_dir, not args.dry_run),
                             args.dry_run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["REPO_ROOT", "LAUNCHERS", "PREEMPTED_EXIT_CODES", "get", "add_common_arguments", "parse_env", "shell_join", "exports",
           "status_command", "guarded_command", "git_dirty", "safe_name", "SweepLog", "single_job_main"]
