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

from etils import epath

from experiments import status as status_lib
from experiments.sweep import REPO_ROOT, ArgumentParser, Job, absolute

LAUNCHERS = ("local", "tpu", "slurm")
# main's exit status after saving on SIGHUP / SIGINT / SIGTERM (128 + the signal): a cut run, resumable.
PREEMPTED_EXIT_CODES = (129, 130, 143)
# The preemption status: SIGTERM, what a scheduler sends before a time limit or a preemption. The
# SLURM script requeues on it alone (SIGINT / SIGHUP are a person stopping the run).
REQUEUE_EXIT_CODE = 143


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


def is_uri(path: str) -> bool:
    return "://" in path


def read_status(job: Job, warn=None) -> status_lib.Status:
    """The job's workdir status. A gs:// workdir this machine cannot read (no gcsfs, no credentials)
    counts as new, with a warning: the remote launchers' guard still skips a finished run."""
    try:
        return status_lib.run_status(job.workdir, job.num_train_steps)
    except Exception as e:  # noqa: BLE001 (any storage client error)
        if not is_uri(job.workdir):
            raise
        if warn is not None:
            warn(f"# warning: cannot read {job.workdir} here ({type(e).__name__}: {e}); shown as new")
        return status_lib.Status(status_lib.NEW, None, None, job.num_train_steps)


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
    """Appends one JSON line per event to <sweep_dir>/sweep.jsonl (nothing in a dry run). On an object
    store (gs://), which has no append, the small file is rewritten whole."""

    def __init__(self, sweep_dir: str, enabled: bool = True):
        self.path = os.path.join(sweep_dir, "sweep.jsonl")
        self.enabled = enabled

    def event(self, run: str, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "run": run, "event": event}
        record.update(fields)
        line = json.dumps(record) + "\n"
        if not is_uri(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line)
            return
        path = epath.Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((path.read_text() if path.exists() else "") + line)
        except Exception as e:  # noqa: BLE001 (no gcsfs or credentials here: the runs do not need this log)
            import sys

            print(f"warning: cannot write {self.path} ({type(e).__name__}: {e}); sweep events not logged",
                  file=sys.stderr)
            self.enabled = False


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
    workdir = absolute(workdir).rstrip("/")
    job = Job(sweep=os.path.basename(os.path.dirname(workdir)), name=os.path.basename(workdir), config=config,
              workdir=workdir, overrides=tuple(overrides))
    sweep_dir = os.path.dirname(workdir)
    try:
        if hasattr(module, "check_root"):
            module.check_root(sweep_dir, args)
        status = read_status(job, print)
        if status.finished:
            print(f"# {job.name}: {status.describe()}; nothing to do")
            return 0
        return module.launch([job], {job.name: status}, args, sweep_dir, SweepLog(sweep_dir, not args.dry_run),
                             args.dry_run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["REPO_ROOT", "LAUNCHERS", "PREEMPTED_EXIT_CODES", "REQUEUE_EXIT_CODE", "get", "add_common_arguments",
           "parse_env", "shell_join", "exports", "status_command", "guarded_command", "is_uri", "read_status",
           "git_dirty", "safe_name", "SweepLog", "single_job_main"]
