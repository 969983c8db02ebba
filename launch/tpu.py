"""TPU-pod launcher: `gcloud compute tpus tpu-vm` commands, every one on all workers.

1. (--tpu_create) create the TPU VM;
2. (unless --tpu_no_setup) copy the committed code (`git archive HEAD`) to every worker and install
   it in a Python 3.11 venv (uv) with the pinned stack of launch/tpu_requirements.txt;
3. per job, one `ssh --worker=all` command that starts the same training command on every host,
   detached from the ssh session (launch/tpu_worker.py: a supervisor in its own session, its log
   copied to <workdir>/logs/<host>.log). jax.distributed finds the pod through the metadata server,
   so no coordinator flags;
4. the launcher then polls the workers until none runs the job, and reports the outcome read from
   the workdir (finished, or the checkpoint a rerun resumes from), not from ssh's exit status;
5. (--tpu_delete) delete the VM.

The workdir root (--root) must be one every worker reads and writes at the same address: gs://BUCKET/DIR
(orbax and etils.epath write there directly), or a shared filesystem (NFS, Filestore) mounted at
the same path on every worker, declared with --tpu_shared_root. Not gcsfuse: orbax commits a
checkpoint with a directory rename, which gcsfuse does not do.

    python -m experiments.run experiments/<sweep>.py --launcher=tpu --tpu_name=NAME --tpu_zone=ZONE \
        --tpu_type=v4-32 --root=gs://BUCKET/bvt --env=BVT_DATA_DIR=gs://BUCKET/data --dry_run

docs/pod_and_cluster.md walks through a whole run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time

from experiments import status as status_lib
from launch import common

UV_VERSION = "0.13.9"  # the uv that creates the workers' venv
PYTHON_VERSION = "3.11"  # the Python the test suite runs on
# a `poll` line, wherever gcloud puts it in its output (a prefix is allowed)
_WORKER_LINE = re.compile(r"\bbvt-worker (\S+) (running|exited|lost|none)(?: (-?\d+))?\s*$", re.M)


def add_arguments(parser) -> None:
    g = parser.add_argument_group("TPU launcher")
    g.add_argument("--tpu_name", default="bvt-tpu", help="TPU VM name")
    g.add_argument("--tpu_zone", default="us-central2-b", help="its zone")
    g.add_argument("--tpu_project", default="", help="GCP project ('' = gcloud's default)")
    g.add_argument("--tpu_type", default="v4-32", help="accelerator type for --tpu_create")
    g.add_argument("--tpu_version", default="tpu-ubuntu2204-base",
                   help="TPU VM runtime for --tpu_create (the venv brings its own Python 3.11)")
    g.add_argument("--tpu_create", action="store_true", help="create the TPU VM first")
    g.add_argument("--tpu_spot", action="store_true", help="create it as a spot VM")
    g.add_argument("--tpu_delete", action="store_true", help="delete the TPU VM after the jobs")
    g.add_argument("--tpu_no_setup", action="store_true", help="skip copying and installing the code")
    g.add_argument("--tpu_repo_dir", default="~/bert_vs_transformer", help="where the code goes on each worker")
    g.add_argument("--tpu_venv", default="~/bvt-venv", help="the venv setup creates on each worker")
    g.add_argument("--tpu_python", default="", help="python on the workers ('' = the venv's)")
    g.add_argument("--tpu_shared_root", action="store_true",
                   help="--root is a filesystem mounted at the same path on every worker (NFS, Filestore); "
                        "not needed for gs://")
    g.add_argument("--tpu_poll_seconds", type=float, default=60.0, help="how often the workers are polled")


def check_root(root: str, args) -> None:
    """The workdirs must be one place every worker writes: gs://, or a declared shared filesystem."""
    if root.startswith("gs://") or getattr(args, "tpu_shared_root", False):
        return
    if common.is_uri(root):
        raise ValueError(f"--root={root}: the TPU workers write gs:// roots; pass --root=gs://BUCKET/DIR")
    raise ValueError(f"--launcher=tpu needs a root every worker shares, not {root} on this machine: "
                     "--root=gs://BUCKET/DIR, or a path mounted on every worker with --tpu_shared_root")


def _where(args) -> list[str]:
    return [f"--zone={args.tpu_zone}"] + ([f"--project={args.tpu_project}"] if args.tpu_project else [])


def _ssh(args, command: str, worker: str = "all") -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, *_where(args), f"--worker={worker}",
            f"--command={command}"]


def _path(d: str) -> str:
    """A path for the worker's shell: quoted, with a leading "~/" left to expand there."""
    return "~/" + common.shell_join([d[2:]]) if d.startswith("~/") else common.shell_join([d])


def _python(args) -> str:
    return _path(args.tpu_python or args.tpu_venv.rstrip("/") + "/bin/python")


def _in_repo(args, *commands: str) -> str:
    return " && ".join(["cd " + _path(args.tpu_repo_dir), *commands])


def setup_commands(args) -> list[list[str]]:
    archive = f"/tmp/{args.tpu_name}-code.tar.gz"
    repo, venv = _path(args.tpu_repo_dir), _path(args.tpu_venv)
    out = []
    if args.tpu_create:
        out.append(["gcloud", "compute", "tpus", "tpu-vm", "create", args.tpu_name, *_where(args),
                    f"--accelerator-type={args.tpu_type}", f"--version={args.tpu_version}"]
                   + (["--spot"] if args.tpu_spot else []))
    if not args.tpu_no_setup:
        out.append(["git", "-C", common.REPO_ROOT, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"])
        out.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.tpu_name}:~/bvt-code.tar.gz",
                    *_where(args), "--worker=all"])
        out.append(_ssh(args, " && ".join([
            f"mkdir -p {repo}", f"tar -xzf ~/bvt-code.tar.gz -C {repo}", "cd " + repo,
            f"python3 -m pip install --user -q uv=={UV_VERSION}",
            f"~/.local/bin/uv venv -q --allow-existing --python={PYTHON_VERSION} {venv}",
            f"~/.local/bin/uv pip install -q --python {venv}/bin/python -r launch/tpu_requirements.txt -e .",
        ])))
    return out


def _worker(args, action: str, job, *extra: str) -> str:
    return f"{_python(args)} -m launch.tpu_worker {action} " + common.shell_join([f"--workdir={job.workdir}", *extra])


def start_command(job, args) -> list[str]:
    """Starts the job on every worker, detached; returns once each has started (or found it running or finished)."""
    steps = [f"--steps={job.num_train_steps}"] if job.num_train_steps else []
    env = common.exports(common.parse_env(args.env))
    train = ["--", "-m", "bert_vs_transformer.main", *job.main_args()]
    return _ssh(args, _in_repo(args, *env, _worker(args, "start", job, *steps, *train)))


def poll_command(job, args) -> list[str]:
    return _ssh(args, _in_repo(args, _worker(args, "poll", job)))


def stop_command(job, args) -> list[str]:
    return _ssh(args, _in_repo(args, _worker(args, "stop", job)))


def outcome_command(job, args) -> list[str]:
    """The workdir's status as experiments.status prints it, read on worker 0."""
    steps = [f"--steps={job.num_train_steps}"] if job.num_train_steps else []
    return _ssh(args, _in_repo(args, f"{_python(args)} -m experiments.status "
                               + common.shell_join([job.workdir, *steps])), worker="0")


def log_hint(job, args) -> str:
    state = "~/.bvt_runs/" + common.safe_name(job.workdir.rstrip("/"))
    return (f"logs: {job.workdir}/logs/<host>.log (copied every minute); live on worker 0: "
            + shell_line(_ssh(args, f"tail -f {state}/train.log", worker="0")))


def parse_workers(text: str) -> dict[str, tuple[str, int | None]]:
    """`poll` lines from every worker: host -> (running | exited | lost | none, exit status)."""
    return {m.group(1): (m.group(2), None if m.group(3) is None else int(m.group(3)))
            for m in _WORKER_LINE.finditer(text)}


def outcome(workers: dict[str, tuple[str, int | None]], status: status_lib.Status) -> tuple[int, str]:
    """(exit status for the sweep, one line) once no worker runs the job: the workdir decides."""
    if status.finished:
        return 0, f"finished ({status.total} steps)"
    codes = {host: rc for host, (kind, rc) in workers.items() if kind == "exited"}
    lost = sorted(host for host, (kind, _) in workers.items() if kind == "lost")
    resume = status.describe()
    if codes and not lost and all(rc in common.PREEMPTED_EXIT_CODES for rc in codes.values()):
        rc = max(codes.values())
        return rc, f"stopped after saving a checkpoint (exit {rc}); {resume}: rerun the same command to resume"
    if codes and not lost and all(rc == 0 for rc in codes.values()):
        return 1, f"every worker exited 0, but the workdir does not hold the finished run ({resume})"
    failed = {h: rc for h, rc in codes.items() if rc != 0}
    detail = ", ".join(f"{h} exit {rc}" for h, rc in sorted(failed.items()))
    if lost:
        detail = ", ".join(filter(None, [detail, f"{', '.join(lost)} lost its run (restarted or preempted?)"]))
    first = next((rc for rc in failed.values() if rc not in common.PREEMPTED_EXIT_CODES), None)
    return first or 1, f"failed: {detail or 'no worker ran it'}; {resume}"


def shell_line(argv: list[str]) -> str:
    """The command as a shell line, with --command='...' quoted as a whole for readability."""
    return " ".join(f"--command={shlex.quote(a[len('--command='):])}" if a.startswith("--command=")
                    else shlex.quote(a) for a in argv)


def teardown_commands(args) -> list[list[str]]:
    if not args.tpu_delete:
        return []
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.tpu_name, *_where(args), "--quiet"]]


def _print_plan(jobs, statuses, args) -> None:
    for argv in setup_commands(args):
        print(shell_line(argv))
    for job in jobs:
        print(f"# {job.name}: {statuses[job.name].describe()}")
        print(shell_line(start_command(job, args)))
        print(f"# then every {args.tpu_poll_seconds:g} s until no worker runs it (the run goes on if the launcher "
              "stops; the same command re-attaches):")
        print(shell_line(poll_command(job, args)))
        print("# and the outcome, read from the workdir:")
        print(shell_line(outcome_command(job, args)))
    for argv in teardown_commands(args):
        print(shell_line(argv))


def _wait(job, args) -> tuple[dict, str | None]:
    """Polls until no worker runs the job: (the workers' states, an error when they cannot be reached)."""
    unreachable, last = 0, None
    while True:
        result = subprocess.run(poll_command(job, args), capture_output=True, text=True)
        workers = parse_workers(result.stdout)
        if result.returncode != 0 or not workers:
            unreachable += 1
            if unreachable >= 3:
                return workers, (f"cannot poll the workers (ssh exit {result.returncode}): "
                                 f"{result.stderr.strip()[-300:] or 'no answer'}")
        else:
            unreachable = 0
            summary = ", ".join(f"{n} {k}" for k, n in sorted(_count(workers).items()))
            if summary != last:
                print(f"[{job.name}] {summary}", flush=True)
                last = summary
            if not any(kind == "running" for kind, _ in workers.values()):
                return workers, None
        time.sleep(args.tpu_poll_seconds)


def _count(workers) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, rc in workers.values():
        key = kind if rc is None else f"{kind} {rc}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _read_outcome(job, args) -> status_lib.Status | None:
    result = subprocess.run(outcome_command(job, args), capture_output=True, text=True)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return status_lib.Status(**json.loads(line))
            except (TypeError, ValueError):
                break
    return None


def run_job(job, args, log) -> int:
    argv = start_command(job, args)
    print("+ " + shell_line(argv), flush=True)
    rc = subprocess.call(argv)
    if rc != 0:
        print(f"[{job.name}] error: starting it on the workers failed (ssh exit {rc})", file=sys.stderr)
        return rc
    log.event(job.name, "start", launcher="tpu", tpu=args.tpu_name)
    print(f"[{job.name}] started on every worker; {log_hint(job, args)}", flush=True)
    try:
        workers, error = _wait(job, args)
    except KeyboardInterrupt:
        print(f"\n[{job.name}] still running on the pod: the same command re-attaches; to stop it (it saves "
              f"first): {shell_line(stop_command(job, args))}", file=sys.stderr)
        return 130
    if error:
        print(f"[{job.name}] error: {error}; rerun the same command to re-attach or resume", file=sys.stderr)
        return 1
    status = _read_outcome(job, args)
    if status is None:
        print(f"[{job.name}] error: could not read the workdir's status on worker 0", file=sys.stderr)
        return 1
    rc, line = outcome(workers, status)
    log.event(job.name, "end", rc=rc, state=status.state, step=status.checkpoint, total=status.total, launcher="tpu")
    print(f"[{job.name}] {line}", file=sys.stdout if rc == 0 else sys.stderr, flush=True)
    return rc


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    check_root(sweep_dir, args)
    if dry_run:
        _print_plan(jobs, statuses, args)
        return 0
    if common.git_dirty() and not args.tpu_no_setup:
        print("warning: uncommitted changes are not sent (the workers get `git archive HEAD`)", file=sys.stderr)
    for argv in setup_commands(args):
        print("+ " + shell_line(argv), flush=True)
        rc = subprocess.call(argv)
        if rc != 0:
            print(f"error: setup command failed (exit {rc})", file=sys.stderr)
            return rc
    for job in jobs:
        rc = run_job(job, args, log)
        if rc != 0:
            return rc
    for argv in teardown_commands(args):
        print("+ " + shell_line(argv), flush=True)
        rc = subprocess.call(argv)
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(common.single_job_main("tpu"))
