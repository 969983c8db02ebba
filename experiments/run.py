"""Runs a sweep: expands experiments/<name>.py into jobs, skips finished runs, resumes the others.

    python -m experiments.run experiments/<name>.py[:args] [--only=PATTERN[,PATTERN]] [--dry_run]
        [--launcher=local|tpu|slurm] [--root=DIR] [--set=field=value ...] [launcher options]
    python -m experiments.run experiments/<name>.py --concurrency=2 --deadline=3600   # local launcher

Each run trains in <root>/<sweep>/<run> (root: --root, else $BVT_SWEEP_ROOT, else workdirs/ in the
checkout; gs://BUCKET/DIR is kept as it is, and --launcher=tpu needs gs:// or --tpu_shared_root). A
run is finished when its metrics.jsonl has the last step and a checkpoint at that step
exists; any other existing workdir is resumed by the same command. Events (skip, start, resume,
end, submit) are appended to <root>/<sweep>/sweep.jsonl. Before launching, every job's config and
overrides are checked as main's flag parser would; the dry run prints problems as warnings.
docs/sweeps.md walks through defining, running, checking and reporting a sweep.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys

from experiments.sweep import ArgumentParser, absolute, check_job, default_root, load_sweep, parse_set
from launch import common


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="experiments/<name>.py[:args] (or a bare sweep name)")
    parser.add_argument("--only", default="", help="comma-separated run names or glob patterns (rows match too)")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and the exact commands; run nothing")
    parser.add_argument("--launcher", default="local", choices=common.LAUNCHERS)
    parser.add_argument("--root", default=None, help="workdir root (default $BVT_SWEEP_ROOT or workdirs/)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override for every selected run, after its own (repeatable)")
    common.add_common_arguments(parser)
    for name in common.LAUNCHERS:
        common.get(name).add_arguments(parser)
    return parser


def select(jobs, only: str):
    if not only:
        return list(jobs)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(j.name, p) or fnmatch.fnmatchcase(j.row, p)
                                                for j in jobs)]
    if unmatched:
        raise ValueError(f"--only: no run matches {unmatched}; runs: {[j.name for j in jobs]}")
    return [j for j in jobs if any(fnmatch.fnmatchcase(j.name, p) or fnmatch.fnmatchcase(j.row, p)
                                   for p in patterns)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_launcher_options(args)
        sweep = load_sweep(args.sweep)
        extra = dict(parse_set(s) for s in args.set)
        root = absolute(args.root or default_root())
        launcher = common.get(args.launcher)
        if hasattr(launcher, "check_root"):  # the remote launchers need a root every host reads
            launcher.check_root(root, args)
        jobs = sweep.expand(root, extra)
        selected = select(jobs, args.only)
    except (ValueError, FileNotFoundError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (SyntaxError, ImportError, TypeError, NameError) as e:  # a sweep file that does not load
        print(f"error: sweep {args.sweep!r} does not load: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    sweep_dir = os.path.join(root, sweep.name)
    log = common.SweepLog(sweep_dir, enabled=not args.dry_run)
    out = sys.stdout
    warnings = []
    statuses = {j.name: common.read_status(j, warnings.append) for j in jobs}
    print(f"# sweep {sweep.name}: {len(selected)} of {len(jobs)} runs in {sweep_dir}", file=out)
    for warning in warnings[:1] + ([f"# ... and {len(warnings) - 1} more like it"] if len(warnings) > 1 else []):
        print(warning, file=out)
    todo = []
    for job in selected:
        st = statuses[job.name]
        print(f"#   {job.name:<28} {st.describe()}", file=out)
        if st.finished:
            log.event(job.name, "skip", state=st.state, step=st.checkpoint, total=st.total)
        else:
            todo.append(job)
    # Runs this one waits for must have finished or be launched before it.
    queued = set()
    for job in todo:
        missing = [d for d in job.after if not statuses[d].finished and d not in queued]
        if missing:
            print(f"error: {job.name} needs {missing} to finish first: select them too (--only)", file=sys.stderr)
            return 2
        queued.add(job.name)
    # A job whose config reads a workdir still to be trained (init=<pretraining run>) is checked
    # when it starts (local launcher) or by main itself.
    waiting = {j.name for j in todo if any(not statuses[d].finished for d in j.after)}
    problems = {j.name: p for j in todo if j.name not in waiting and (p := check_job(j))}
    for problem, names in _group(problems).items():
        print(f"# warning: main would reject {', '.join(names)}: {problem}", file=out)
    if waiting:
        print(f"# {len(waiting)} run(s) wait for other runs of the sweep; checked when they start", file=out)
    if problems and not args.dry_run:
        print(f"error: {len(problems)} run(s) would fail at startup (see the warnings); "
              "fix them or leave them out with --only", file=sys.stderr)
        return 2
    if not todo:
        print("# nothing to run: every selected run has finished", file=out)
        return 0
    try:
        return launcher.launch(todo, statuses, args, sweep_dir, log, args.dry_run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _check_launcher_options(args) -> None:
    """The local launcher's scheduling options mean nothing to the others: refuse them there."""
    if args.launcher == "local":
        common.get("local").check_arguments(args)
    else:
        given = [f"--{name}" for name in ("concurrency", "deadline") if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: for --launcher=local only "
                             f"({args.launcher} schedules the jobs itself)")


def _group(problems: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, problem in problems.items():
        grouped.setdefault(problem, []).append(name)
    return grouped


if __name__ == "__main__":
    sys.exit(main())
