"""Where a run's workdir stands: new, started, partial (a checkpoint to resume from) or finished.

Finished: metrics.jsonl records the last step (num_train_steps) and checkpoints/<that step> exists
(orbax renames a checkpoint into place only once it is complete). Anything else with a workdir is
resumed by rerunning the same command.

    python -m experiments.status WORKDIR [--steps=N] [--quiet]

prints one JSON line and exits 0 when finished, 1 otherwise (the remote launchers' guard).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from experiments.sweep import ArgumentParser

NEW, STARTED, PARTIAL, FINISHED = "new", "started", "partial", "finished"


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # new | started | partial | finished
    checkpoint: int | None  # latest complete checkpoint (where a rerun resumes)
    logged: int | None  # last step in metrics.jsonl
    total: int | None  # num_train_steps

    @property
    def finished(self) -> bool:
        return self.state == FINISHED

    def describe(self) -> str:
        steps = "" if self.total is None else f" ({self.total} steps)"
        if self.state == FINISHED:
            return f"finished{steps}"
        if self.state == PARTIAL:
            return f"partial: resumes from step {self.checkpoint}/{'?' if self.total is None else self.total}"
        if self.state == STARTED:
            return f"started, no checkpoint: restarts{steps}"
        return f"new{steps}"


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory)
                  if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def read_metrics(workdir: str) -> list[dict]:
    """metrics.jsonl's records (a torn last line from a killed writer is ignored)."""
    path = os.path.join(workdir, "metrics.jsonl")
    records = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def saved_total(workdir: str) -> int | None:
    """num_train_steps of the config the run was started with (DIR/config.json)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            return int(json.load(f)["num_train_steps"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def run_status(workdir: str, total: int | None = None) -> Status:
    """`total`: the step that finishes the run (None = the workdir's config.json)."""
    if not os.path.isdir(workdir):
        return Status(NEW, None, None, total)
    total = total if total is not None else saved_total(workdir)
    steps = checkpoint_steps(workdir)
    logged = [int(r["step"]) for r in read_metrics(workdir) if "step" in r]
    checkpoint = steps[-1] if steps else None
    last = max(logged) if logged else None
    if total is not None and total in steps and total in logged:
        return Status(FINISHED, checkpoint, last, total)
    return Status(PARTIAL if steps else STARTED, checkpoint, last, total)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m experiments.status", description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, default=None, help="num_train_steps (default: DIR/config.json)")
    parser.add_argument("--quiet", action="store_true", help="print nothing, only the exit code")
    args = parser.parse_args(argv)
    status = run_status(args.workdir, args.steps)
    if not args.quiet:
        print(json.dumps(dataclasses.asdict(status)))
    return 0 if status.finished else 1


if __name__ == "__main__":
    sys.exit(main())
