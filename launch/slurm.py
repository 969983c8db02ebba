"""SLURM launcher: one sbatch script per job, submitted with `sbatch --parsable`; a job that uses
another's workdir (fine-tuning from a pretraining run) waits for it with --dependency=afterok.

Each script starts one process per GPU with `srun` on every node. main sees SLURM_JOB_ID and calls
jax.distributed.initialize(): the coordinator is the allocation's first node (set explicitly by
the script), the process count and index come from SLURM_NTASKS/SLURM_PROCID and each process's
GPU from SLURM_LOCALID. `--signal=TERM@<s>` makes every process save a checkpoint before the time
limit (main exits 143); the script then requeues the job while its workdir does not hold the
finished run, and the requeued job resumes (up to --slurm_max_requeue times).

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
    g.add_argument("--slurm_max_requeue", type=int, default=3, help="requeues of a job stopped before its last step")


def script_path(job, sweep_dir: str) -> str:
    return os.path.join(sweep_dir, "slurm", f"{job.name}.sbatch")


def sbatch_script(job, args, sweep_dir: str) -> str:
    q = common.shell_join
    py = args.slurm_python
    log_dir = os.path.join(sweep_dir, "slurm")
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
        "# jax.distributed coordinator: process 0 runs on the first node of the allocation. main sees",
        "# SLURM_JOB_ID and calls jax.distributed.initialize(), which takes the process count, index and",
        "# local GPU from SLURM_NTASKS, SLURM_PROCID and SLURM_LOCALID (one process per GPU).",
        'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "COORDINATOR_PORT=$((20000 + SLURM_JOB_ID % 10000))",
        'echo "coordinator ${COORDINATOR_HOST}:${COORDINATOR_PORT}, ${SLURM_NTASKS} processes on '
        '${SLURM_JOB_NUM_NODES} node(s)"',
        "",
        "rc=0",
        f"srun --kill-on-bad-exit=1 {q(job.command(py))} "
        '--coordinator_address="${COORDINATOR_HOST}:${COORDINATOR_PORT}" || rc=$?',
        "",
        "# Stopped before its last step (the time limit's SIGTERM made it save and exit 143), or a crash:",
        "# requeue, it resumes from its latest checkpoint. A refused config or workdir (exit 2) is not retried.",
        f"if ! {status}; then",
        '  if [ "$rc" -eq 2 ]; then echo "main refused the config or workdir (exit 2): not requeued"; exit 2; fi',
        f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {args.slurm_max_requeue} ]; then',
        '    echo "not finished (exit ${rc}): requeueing"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "    exit 0",
        "  fi",
        "  exit $(( rc == 0 ? 1 : rc ))",
        "fi",
        "exit 0",
    ]
    return "\n".join(lines) + "\n"


def sbatch_command(job, path: str, dependencies: list[str]) -> list[str]:
    dep = ["--dependency=afterok:" + ":".join(dependencies)] if dependencies else []
    return ["sbatch", "--parsable", *dep, path]


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    submitted: dict[str, str] = {}  # run name -> SLURM job id (or its shell variable in a dry run)
    if dry_run:
        print("set -euo pipefail")
        print(f"mkdir -p {common.shell_join([os.path.join(sweep_dir, 'slurm')])}")
    for job in jobs:
        path = script_path(job, sweep_dir)
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
