"""SLURM launcher: one sbatch script per job, submitted with `sbatch --parsable`; a job that uses
another's workdir (fine-tuning from a pretraining run) waits for it with --dependency=afterok.

Each script starts one process per GPU with `srun` on every node. main sees a job step of several
tasks and calls jax.distributed.initialize(): the coordinator is the allocation's first node (set
explicitly by the script), the process count and index come from SLURM_NTASKS/SLURM_PROCID and each
process's GPU from SLURM_LOCALID. That GPU index is one of the node's GPUs, so srun runs with
--gpu-bind=none (every task sees all of its node's GPUs and takes its own); and srun is given the
CPUs per task through SRUN_CPUS_PER_TASK (since Slurm 22.05 it does not inherit sbatch's
--cpus-per-task). `--signal=TERM@<s>` makes every process save a checkpoint before the time limit
(main exits 143, the preemption status); the script requeues the job on that status alone, while
its workdir does not hold the finished run (up to --slurm_max_requeue times), and the requeued job
resumes. A refused config (exit 2), non-finite losses or any other failure is not requeued.

The dry run prints a runnable shell script: each sbatch script as a here-document, then the
sbatch commands.

    python -m experiments.run experiments/<sweep>.py --launcher=slurm --slurm_nodes=2 \
        --slurm_gpus_per_node=8 --slurm_partition=gpu --slurm_setup='source ~/venv/bin/activate' --dry_run
"""

from __future__ import annotations

import os
import subprocess
import sys

from launch import common

_EOF = "BVT_SBATCH_EOF"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("SLURM launcher")
    g.add_argument("--slurm_nodes", type=int, default=1, help="nodes per job")
    g.add_argument("--slurm_gpus_per_node", type=int, default=8, help="GPUs per node (= processes per node)")
    g.add_argument("--slurm_cpus_per_task", type=int, default=8, help="CPU cores per process (data loading)")
    g.add_argument("--slurm_time", default="24:00:00", help="time limit per job (requeued to resume)")
    g.add_argument("--slurm_partition", default="", help="partition ('' = the cluster's default)")
    g.add_argument("--slurm_account", default="", help="account ('' = the user's default)")
    g.add_argument("--slurm_option", action="append", default=[], metavar="OPTION",
                   help="extra #SBATCH option, e.g. --slurm_option=--qos=high (repeatable)")
    g.add_argument("--slurm_setup", action="append", default=[], metavar="LINE",
                   help="shell line run before training, e.g. 'source ~/venv/bin/activate' (repeatable)")
    g.add_argument("--slurm_repo_dir", default=common.REPO_ROOT, help="the checkout on the cluster's shared FS")
    g.add_argument("--slurm_python", default="python", help="python on the compute nodes")
    g.add_argument("--slurm_signal_seconds", type=int, default=300,
                   help="SIGTERM this long before the time limit (the run saves and exits)")
    g.add_argument("--slurm_max_requeue", type=int, default=3,
                   help="requeues of a job preempted (exit 143) before its last step")
    g.add_argument("--slurm_dir", default="",
                   help="where the sbatch scripts and logs go ('' = <root>/<sweep>/slurm; for a gs:// root, "
                        "<slurm_repo_dir>/workdirs/<sweep>/slurm)")


def slurm_dir(args, sweep_dir: str) -> str:
    """The sbatch scripts and logs: a path on the cluster's filesystem (sbatch reads no gs://)."""
    if getattr(args, "slurm_dir", ""):
        return args.slurm_dir
    if common.is_uri(sweep_dir):
        return os.path.join(args.slurm_repo_dir, "workdirs", os.path.basename(sweep_dir.rstrip("/")), "slurm")
    return os.path.join(sweep_dir, "slurm")


def script_path(job, sweep_dir: str, args) -> str:
    return os.path.join(slurm_dir(args, sweep_dir), f"{job.name}.sbatch")


def sbatch_script(job, args, sweep_dir: str) -> str:
    q = common.shell_join
    py = args.slurm_python
    log_dir = slurm_dir(args, sweep_dir)
    options = [
        f"--job-name={job.sweep}.{job.name}",
        f"--nodes={args.slurm_nodes}",
        f"--ntasks-per-node={max(args.slurm_gpus_per_node, 1)}",
        f"--cpus-per-task={args.slurm_cpus_per_task}",
        f"--time={args.slurm_time}",
        f"--output={os.path.join(log_dir, job.name)}-%j.out",
        "--open-mode=append",
        f"--signal=TERM@{args.slurm_signal_seconds}",
        "--requeue",
    ]
    if args.slurm_gpus_per_node > 0:
        options.insert(3, f"--gpus-per-node={args.slurm_gpus_per_node}")
    if args.slurm_partition:
        options.append(f"--partition={args.slurm_partition}")
    if args.slurm_account:
        options.append(f"--account={args.slurm_account}")
    options += list(args.slurm_option)
    status = q(common.status_command(job, py))
    pre = common.REQUEUE_EXIT_CODE
    lines = ["#!/bin/bash"] + [f"#SBATCH {o}" for o in options] + [
        f"# {job.sweep}/{job.name}, written by launch/slurm.py. Rerunning the sweep resubmits it while unfinished.",
        "set -euo pipefail",
        f"cd {q([args.slurm_repo_dir])}",
        *args.slurm_setup,
        *common.exports(common.parse_env(args.env)),
        "",
        "# Finished already (an earlier copy of this job completed it): nothing to do.",
        f"if {status}; then echo 'already finished: {job.workdir}'; exit 0; fi",
        "",
        "# jax.distributed coordinator: process 0 runs on the first node of the allocation. main sees a",
        "# job step of several tasks and calls jax.distributed.initialize(), which takes the process count,",
        "# index and local GPU from SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID (one process per GPU).",
        'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "COORDINATOR_PORT=$((20000 + SLURM_JOB_ID % 10000))",
        'echo "coordinator ${COORDINATOR_HOST}:${COORDINATOR_PORT}, ${SLURM_NTASKS} processes on '
        '${SLURM_JOB_NUM_NODES} node(s)"',
        "# srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05): the data threads need them.",
        f"export SRUN_CPUS_PER_TASK={args.slurm_cpus_per_task}",
        "",
        "rc=0",
        # --gpu-bind=none: every task sees its node's GPUs; JAX picks the task's own by SLURM_LOCALID.
        f"srun --kill-on-bad-exit=1{' --gpu-bind=none' if args.slurm_gpus_per_node > 0 else ''} "
        f"{q(job.command(py))} "
        '--coordinator_address="${COORDINATOR_HOST}:${COORDINATOR_PORT}" || rc=$?',
        "",
        f"if {status}; then exit 0; fi",
        "# Preempted before its last step: the time limit's (or the scheduler's) SIGTERM made it save and",
        f"# exit {pre}; requeued, it resumes from that checkpoint. Any other status (2: a refused config or",
        "# workdir; 1: a crash or non-finite losses) would fail again: not requeued.",
        f'if [ "$rc" -ne {pre} ]; then',
        f'  echo "exited ${{rc}} before the last step: not requeued (only a preemption, exit {pre}, is)"',
        "  exit $(( rc == 0 ? 1 : rc ))",
        "fi",
        f'if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {args.slurm_max_requeue} ]; then',
        f'  echo "preempted (exit {pre}): requeueing"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "fi",
        f'echo "preempted {args.slurm_max_requeue} times already: not requeued again; rerun the sweep to resume"',
        f"exit {pre}",
    ]
    return "\n".join(lines) + "\n"


def sbatch_command(job, path: str, dependencies: list[str]) -> list[str]:
    dep = ["--dependency=afterok:" + ":".join(dependencies)] if dependencies else []
    return ["sbatch", "--parsable", *dep, path]


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    submitted: dict[str, str] = {}  # run name -> SLURM job id (or its shell variable in a dry run)
    if dry_run:
        print("set -euo pipefail")
        print(f"mkdir -p {common.shell_join([slurm_dir(args, sweep_dir)])}")
    for job in jobs:
        path = script_path(job, sweep_dir, args)
        script = sbatch_script(job, args, sweep_dir)
        deps = [submitted[d] for d in job.after if d in submitted]
        if dry_run:
            var = "JOB_" + common.safe_name(job.name)
            print(f"\n# {job.name}: {statuses[job.name].describe()}")
            print(f"cat > {common.shell_join([path])} <<'{_EOF}'")
            print(script, end="")
            print(_EOF)
            dep = f" --dependency=afterok:{':'.join(deps)}" if deps else ""
            print(f"{var}=$(sbatch --parsable{dep} {common.shell_join([path])})")
            print(f'echo "{job.name}: SLURM job ${var}"')
            submitted[job.name] = "${" + var + "}"
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(script)
        argv = sbatch_command(job, path, deps)
        print("+ " + common.shell_join(argv), flush=True)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"sbatch failed for {job.name}: {result.stderr.strip()}", file=sys.stderr)
            return result.returncode
        job_id = result.stdout.strip().split(";")[0]
        submitted[job.name] = job_id
        log.event(job.name, "submit", launcher="slurm", job_id=job_id, after=deps)
        print(f"{job.name}: SLURM job {job_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(common.single_job_main("slurm"))
