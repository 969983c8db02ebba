"""Local launcher: the jobs one after another on this machine, in one process each, or in N
processes on this host that form one multi-host JAX program over gloo (for testing multi-host
code on CPU: each process gets JAX_NUM_CPU_DEVICES devices and --coordinator_address/
--num_processes/--process_id).

Output goes to the console and to <workdir>/launch.log. Ctrl-C or SIGTERM is passed on: the run
saves a checkpoint at its current step and the sweep stops; rerunning it resumes there.

    python -m experiments.run experiments/<sweep>.py [--local_processes=2] [--dry_run]
    python -m launch.local [--local_processes=2] [--dry_run] -- --config=SPEC --workdir=DIR [--config.k=v]
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from typing import Mapping

from experiments import status as status_lib
from experiments.sweep import check_job
from launch import common

# main's exit status after saving on SIGINT / SIGTERM (128 + the signal): a cut run, resumable.
PREEMPTED_EXIT_CODES = (130, 143)


def add_arguments(parser) -> None:
    g = parser.add_argument_group("local launcher")
    g.add_argument("--local_processes", type=int, default=1,
                   help="processes per job on this host (>1: one multi-host JAX program over gloo, CPU)")
    g.add_argument("--local_devices_per_process", type=int, default=4,
                   help="JAX_NUM_CPU_DEVICES of each process when --local_processes > 1")
    g.add_argument("--local_port", type=int, default=12355, help="coordinator port when --local_processes > 1")
    g.add_argument("--local_python", default=sys.executable, help="python running the jobs")


def commands(job, args) -> list[tuple[dict[str, str], list[str]]]:
    """(extra environment, argv) of each process of `job`."""
    env = common.parse_env(args.env)
    n = int(args.local_processes)
    if n <= 1:
        return [(env, job.command(args.local_python))]
    out = []
    for i in range(n):
        penv = dict(env, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(args.local_devices_per_process),
                    JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
        out.append((penv, job.command(args.local_python) + [
            f"--coordinator_address=localhost:{args.local_port}", f"--num_processes={n}", f"--process_id={i}"]))
    return out


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    if dry_run:
        print(f"cd {common.shell_join([common.REPO_ROOT])}")
    failed: set[str] = set()
    for job in jobs:
        status = statuses[job.name]
        procs = commands(job, args)
        if dry_run:
            print(f"# {job.name}: {status.describe()}")
            lines = [" ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [common.shell_join(argv)])
                     for env, argv in procs]
            if len(lines) == 1:
                print(lines[0])
            else:
                print(" &\n".join(lines) + " &\nwait")
            continue
        blocked = [d for d in job.after if d in failed]
        if blocked:
            print(f"[{job.name}] not started: {', '.join(blocked)} did not finish", flush=True)
            log.event(job.name, "blocked", by=blocked)
            failed.add(job.name)
            continue
        problem = check_job(job) if job.after else None  # its config may read a run trained above
        if problem:
            print(f"[{job.name}] not started: main would reject it: {problem}", flush=True)
            log.event(job.name, "invalid", problem=problem)
            failed.add(job.name)
            continue
        event = "resume" if status.state == status_lib.PARTIAL else "start"
        print(f"[{job.name}] {status.describe()}", flush=True)
        log.event(job.name, event, step=status.checkpoint, total=status.total, launcher="local")
        rc, stopped = _run(procs, job.workdir, job.name if len(jobs) > 1 else "")
        after = status_lib.run_status(job.workdir, job.num_train_steps)
        log.event(job.name, "end", rc=rc, state=after.state, step=after.checkpoint, total=after.total)
        print(f"[{job.name}] exit {rc}: {after.describe()}", flush=True)
        if stopped or (rc in (0, *PREEMPTED_EXIT_CODES) and not after.finished):  # saved on a signal
            print("sweep stopped (signal); rerun the same command to resume", flush=True)
            return 130
        if rc != 0 or not after.finished:
            failed.add(job.name)
    if failed:
        print(f"not finished: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


def _run(procs, workdir: str, prefix: str) -> tuple[int, bool]:
    """Runs the processes, teeing their output; SIGINT/SIGTERM are passed on. (rc, stopped)."""
    os.makedirs(workdir, exist_ok=True)
    logfile = open(os.path.join(workdir, "launch.log"), "a")
    children = []
    stopped = threading.Event()

    def forward(signum, frame):
        stopped.set()
        for p in children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = []
    lock = threading.Lock()
    try:
        for i, (env, argv) in enumerate(procs):
            p = subprocess.Popen(argv, cwd=common.REPO_ROOT, env=_environ(env), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1)
            children.append(p)
            tag = "".join(f"[{t}]" for t in (prefix, f"p{i}" if len(procs) > 1 else "") if t)
            t = threading.Thread(target=_tee, args=(p.stdout, tag, logfile, lock), daemon=True)
            t.start()
            threads.append(t)
        codes = _wait(children)
        for t in threads:
            t.join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        logfile.close()
    return next((c for c in codes if c != 0), 0), stopped.is_set()


def _wait(children) -> list[int]:
    """Waits for all; when one process fails the others are stopped (they would wait on it forever)."""
    import time

    while any(p.poll() is None for p in children):
        if any(p.poll() not in (None, 0) for p in children):
            for p in children:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.time() + 60
            while time.time() < deadline and any(p.poll() is None for p in children):
                time.sleep(0.5)
            for p in children:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    return [p.wait() for p in children]


def _tee(stream, tag: str, logfile, lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"{tag} {line}" if tag else line)
            sys.stdout.flush()
            logfile.write(line)
            logfile.flush()


def _environ(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


if __name__ == "__main__":
    sys.exit(common.single_job_main("local"))
