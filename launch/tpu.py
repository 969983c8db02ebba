"""TPU-pod launcher: `gcloud compute tpus tpu-vm` commands, every one on all workers.

1. (--tpu_create) create the TPU VM;
2. (unless --tpu_no_setup) copy the committed code (`git archive HEAD`) to every worker and
   install it with jax[tpu];
3. per job, one `ssh --worker=all` command that runs the same training command on every host
   (jax.distributed finds the pod from the TPU environment, so no coordinator flags), guarded by
   `experiments.status` so a finished run is skipped and an interrupted one resumes;
4. (--tpu_delete) delete the VM.

The workdir root (--root) must be a filesystem every worker shares (NFS/Filestore, or a gcsfuse
mount): orbax writes one checkpoint collectively, and metrics.jsonl is a plain file.

    python -m experiments.run experiments/<sweep>.py --launcher=tpu --tpu_name=NAME --tpu_zone=ZONE \
        --tpu_type=v4-32 --root=/mnt/shared/bvt --env=BVT_DATA_DIR=/mnt/shared/data --dry_run
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from launch import common


def add_arguments(parser) -> None:
    g = parser.add_argument_group("TPU launcher")
    g.add_argument("--tpu_name", default="bvt-tpu", help="TPU VM name")
    g.add_argument("--tpu_zone", default="us-central2-b", help="its zone")
    g.add_argument("--tpu_project", default="", help="GCP project ('' = gcloud's default)")
    g.add_argument("--tpu_type", default="v4-32", help="accelerator type for --tpu_create")
    g.add_argument("--tpu_version", default="tpu-ubuntu2204-base", help="TPU VM runtime for --tpu_create")
    g.add_argument("--tpu_create", action="store_true", help="create the TPU VM first")
    g.add_argument("--tpu_spot", action="store_true", help="create it as a spot VM")
    g.add_argument("--tpu_delete", action="store_true", help="delete the TPU VM after the jobs")
    g.add_argument("--tpu_no_setup", action="store_true", help="skip copying and installing the code")
    g.add_argument("--tpu_repo_dir", default="~/bert_vs_transformer", help="where the code goes on each worker")
    g.add_argument("--tpu_python", default="python3", help="python on the workers")


def _where(args) -> list[str]:
    return [f"--zone={args.tpu_zone}"] + ([f"--project={args.tpu_project}"] if args.tpu_project else [])


def _ssh(args, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, *_where(args), "--worker=all",
            f"--command={command}"]


def _path(d: str) -> str:
    """A path for the worker's shell: quoted, with a leading "~/" left to expand there."""
    return "~/" + common.shell_join([d[2:]]) if d.startswith("~/") else common.shell_join([d])


def _cd(args) -> str:
    return "cd " + _path(args.tpu_repo_dir)


def setup_commands(args) -> list[list[str]]:
    archive = f"/tmp/{args.tpu_name}-code.tar.gz"
    repo = _path(args.tpu_repo_dir)
    out = []
    if args.tpu_create:
        out.append(["gcloud", "compute", "tpus", "tpu-vm", "create", args.tpu_name, *_where(args),
                    f"--accelerator-type={args.tpu_type}", f"--version={args.tpu_version}"]
                   + (["--spot"] if args.tpu_spot else []))
    if not args.tpu_no_setup:
        out.append(["git", "-C", common.REPO_ROOT, "archive", "--format=tar.gz", f"--output={archive}", "HEAD"])
        out.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.tpu_name}:~/bvt-code.tar.gz",
                    *_where(args), "--worker=all"])
        py = args.tpu_python
        out.append(_ssh(args, " && ".join([
            f"mkdir -p {repo}", f"tar -xzf ~/bvt-code.tar.gz -C {repo}", _cd(args),
            f'{py} -m pip install -q -U "jax[tpu]"', f"{py} -m pip install -q -e .",
        ])))
    return out


def job_command(job, args) -> list[str]:
    env = common.parse_env(args.env)
    return _ssh(args, " && ".join([_cd(args)] + common.exports(env)) + " && { "
                + common.guarded_command(job, args.tpu_python) + "; }")


def shell_line(argv: list[str]) -> str:
    """The command as a shell line, with --command='...' quoted as a whole for readability."""
    return " ".join(f"--command={shlex.quote(a[len('--command='):])}" if a.startswith("--command=")
                    else shlex.quote(a) for a in argv)


def teardown_commands(args) -> list[list[str]]:
    if not args.tpu_delete:
        return []
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.tpu_name, *_where(args), "--quiet"]]


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    if not dry_run and common.git_dirty() and not args.tpu_no_setup:
        print("warning: uncommitted changes are not sent (the workers get `git archive HEAD`)", file=sys.stderr)
    plan = [(None, c) for c in setup_commands(args)] + [(j, job_command(j, args)) for j in jobs]
    plan += [(None, c) for c in teardown_commands(args)]
    for job, argv in plan:
        if dry_run:
            if job is not None:
                print(f"# {job.name}: {statuses[job.name].describe()}")
            print(shell_line(argv))
            continue
        print("+ " + shell_line(argv), flush=True)
        if job is not None:
            log.event(job.name, "start", launcher="tpu", tpu=args.tpu_name)
        rc = subprocess.call(argv)
        if job is not None:
            log.event(job.name, "end", rc=rc, launcher="tpu")
        if rc != 0:
            what = "stopped after saving a checkpoint" if rc in common.PREEMPTED_EXIT_CODES else "command failed"
            print(f"{what} (exit {rc}); rerun the sweep to resume", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(common.single_job_main("tpu"))
