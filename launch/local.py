"""Local launcher: the sweep's jobs on this machine, at most --concurrency at once, each in one
process, or in N processes on this host that form one multi-host JAX program over gloo (for
testing multi-host code on CPU: each process gets JAX_NUM_CPU_DEVICES devices and
--coordinator_address/--num_processes/--process_id).

Jobs start in sweep order as slots free up; a job whose `after` runs (ref() included) are still
training waits for them, and is not started when one of them ends unfinished. With
--deadline=SECONDS nothing starts after the deadline and the running jobs get SIGTERM: they save a
checkpoint and exit (SIGKILL --stop_grace seconds later); rerunning the same command resumes them.
Ctrl-C or SIGTERM to the launcher does the same at once (a second one: SIGKILL).

Output goes to the console (lines prefixed [run] when there are several jobs) and to
<workdir>/launch.log. Exit status: 0 every job finished; 1 a job failed (or waits for one that
did); 3 jobs left unfinished by the deadline or a signal to the job (rerun to resume); 130 the
launcher was stopped by a signal.

    python -m experiments.run experiments/<sweep>.py [--concurrency=2] [--deadline=3600] [--dry_run]
    python -m launch.local [--local_processes=2] [--deadline=S] [--dry_run] -- --config=SPEC --workdir=DIR
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Mapping

from etils import epath

from experiments import status as status_lib
from experiments.sweep import check_job
from launch import common

PREEMPTED_EXIT_CODES = common.PREEMPTED_EXIT_CODES  # 130 SIGINT, 143 SIGTERM: saved, resumable
EXIT_FAILED, EXIT_UNFINISHED, EXIT_SIGNAL = 1, 3, 130
FINISHED, STOPPED, FAILED, NOT_STARTED = "finished", "stopped", "failed", "not started"
_POLL_S = 0.1


def add_arguments(parser) -> None:
    g = parser.add_argument_group("local launcher")
    g.add_argument("--concurrency", type=int, default=None, help="jobs running at once (default 1)")
    g.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="from now: SIGTERM the running jobs (they save; a rerun resumes), start no more")
    g.add_argument("--stop_grace", type=float, default=120.0, metavar="SECONDS",
                   help="SIGKILL a job this long after its SIGTERM (default 120)")
    g.add_argument("--local_processes", type=int, default=1,
                   help="processes per job on this host (>1: one multi-host JAX program over gloo, CPU)")
    g.add_argument("--local_devices_per_process", type=int, default=4,
                   help="JAX_NUM_CPU_DEVICES of each process when --local_processes > 1")
    g.add_argument("--local_port", type=int, default=12355,
                   help="coordinator port when --local_processes > 1 (the sweep's k-th job: port + k)")
    g.add_argument("--local_python", default=sys.executable, help="python running the jobs")


def check_arguments(args) -> None:
    """Raises ValueError (one line) for a bad value of the local launcher's options."""
    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.deadline is not None and not args.deadline > 0:
        raise ValueError(f"--deadline must be a positive number of seconds, got {args.deadline:g}")
    if not args.stop_grace >= 0:
        raise ValueError(f"--stop_grace must be 0 or more seconds, got {args.stop_grace:g}")
    if args.local_processes < 1:
        raise ValueError(f"--local_processes must be at least 1, got {args.local_processes}")


def commands(job, args, port: int | None = None) -> list[tuple[dict[str, str], list[str]]]:
    """(extra environment, argv) of each process of `job`."""
    env = common.parse_env(args.env)
    n = int(args.local_processes)
    if n <= 1:
        return [(env, job.command(args.local_python))]
    port = args.local_port if port is None else port
    out = []
    for i in range(n):
        penv = dict(env, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(args.local_devices_per_process),
                    JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
        out.append((penv, job.command(args.local_python) + [
            f"--coordinator_address=localhost:{port}", f"--num_processes={n}", f"--process_id={i}"]))
    return out


def launch(jobs, statuses, args, sweep_dir, log, dry_run) -> int:
    check_arguments(args)
    concurrency = args.concurrency or 1
    if dry_run:
        _print_plan(jobs, statuses, args, concurrency)
        return 0
    return _Scheduler(jobs, args, log, concurrency).run()


def _print_plan(jobs, statuses, args, concurrency: int) -> None:
    notes = [f"at most {concurrency} job(s) at once"] + (
        [f"SIGTERM at {args.deadline:g} s, SIGKILL {args.stop_grace:g} s later"] if args.deadline else [])
    print(f"# local launcher: {'; '.join(notes)}; a job starts once the runs it waits for have finished")
    print(f"cd {common.shell_join([common.REPO_ROOT])}")
    for k, job in enumerate(jobs):
        print(f"# {job.name}: {statuses[job.name].describe()}"
              + (f" (after {', '.join(job.after)})" if job.after else ""))
        lines = [" ".join([f"{key}={shlex.quote(v)}" for key, v in env.items()] + [common.shell_join(argv)])
                 for env, argv in commands(job, args, args.local_port + k)]
        print(lines[0] if len(lines) == 1 else " &\n".join(lines) + " &\nwait")


def log_path(workdir: str) -> str:
    """The job's launch.log: in its workdir, or for a gs:// (any URI) workdir a local file under the
    temp folder that is copied whole into the workdir when the job ends (no appends on object stores)."""
    if "://" not in workdir:
        os.makedirs(workdir, exist_ok=True)
        return os.path.join(workdir, "launch.log")
    local = os.path.join(tempfile.gettempdir(), "bvt-launch", re.sub(r"[^\w.-]+", "_", workdir))
    os.makedirs(local, exist_ok=True)
    return os.path.join(local, "launch.log")


@dataclasses.dataclass
class _Running:
    """A started job: its processes, their output threads and when it was asked to stop."""

    job: object
    children: list
    threads: list
    logfile: object
    started: float
    stop_sent: float | None = None
    killed: bool = False


class _Scheduler:
    """Starts, watches and stops the jobs; one loop in the main thread, a tee thread per process."""

    def __init__(self, jobs, args, log, concurrency: int):
        self.jobs, self.args, self.log = list(jobs), args, log
        self.concurrency = concurrency
        self.names = {j.name for j in self.jobs}
        self.ports = {j.name: args.local_port + k for k, j in enumerate(self.jobs)}
        self.prefix = len(self.jobs) > 1
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.deadline if args.deadline else None
        self.stop_reason: str | None = None  # "the deadline" | "a signal"
        self.kill_now = False  # a second signal: SIGKILL without waiting for the checkpoints
        self.running: dict[str, _Running] = {}
        self.outcome: dict[str, tuple[str, str]] = {}  # name -> (FINISHED|STOPPED|FAILED|NOT_STARTED, detail)
        self.waiting_said: set[str] = set()
        self.lock = threading.Lock()

    def say(self, name: str | None, message: str) -> None:
        with self.lock:
            print(f"[sweep +{time.monotonic() - self.t0:.0f}s] " + (f"{name}: " if name else "") + message,
                  flush=True)

    def run(self) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            pending, announced = list(self.jobs), False
            while self.running or (pending and self.stop_reason is None):
                if self.stop_reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
                    self.stop_reason = "the deadline"
                if self.stop_reason is not None and not announced:
                    announced = True
                    self._announce_stop(pending)
                self._stop_or_kill()
                for name in [n for n, r in self.running.items() if all(p.poll() is not None for p in r.children)]:
                    self._end(self.running.pop(name))
                self._check_partners()
                if self.stop_reason is None:
                    pending = self._start_ready(pending)
                time.sleep(_POLL_S)
            for job in pending:
                self.outcome[job.name] = (NOT_STARTED, f"not started ({self.stop_reason})")
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            for r in self.running.values():  # only after an error in this loop: leave nothing behind
                _signal_all(r.children, signal.SIGTERM)
        return self._summary()

    def _on_signal(self, signum, frame) -> None:
        if self.stop_reason == "a signal":
            self.kill_now = True
        self.stop_reason = self.stop_reason or "a signal"

    def _announce_stop(self, pending) -> None:
        names = sorted(self.running)
        what = "deadline reached" if self.stop_reason == "the deadline" else "signal received"
        self.say(None, f"{what}: " + (f"SIGTERM to {', '.join(names)}, to save a checkpoint and exit"
                                      if names else "no job running")
                 + (f"; {len(pending)} job(s) not started" if pending else ""))

    def _stop_or_kill(self) -> None:
        """SIGTERM every running job once a stop is due; SIGKILL what is left after the grace."""
        now = time.monotonic()
        if self.stop_reason is not None:
            for r in self.running.values():
                if r.stop_sent is None:
                    r.stop_sent = now
                    self.log.event(r.job.name, "stop", reason=self.stop_reason)
                    _signal_all(r.children, signal.SIGTERM)
        for r in self.running.values():
            overdue = r.stop_sent is not None and now - r.stop_sent > self.args.stop_grace
            if (overdue or (self.kill_now and r.stop_sent is not None)) and not r.killed:
                r.killed = True
                self.say(r.job.name, "second signal: SIGKILL" if self.kill_now
                         else f"still running {self.args.stop_grace:g}s after SIGTERM: SIGKILL")
                _signal_all(r.children, signal.SIGKILL, group=True)

    def _check_partners(self) -> None:
        """Multi-process jobs: when one process fails, its partners would wait on it forever."""
        for r in self.running.values():
            if r.stop_sent is None and len(r.children) > 1 and any(
                    p.poll() not in (None, 0) for p in r.children):
                r.stop_sent = time.monotonic()
                _signal_all(r.children, signal.SIGTERM)

    def _start_ready(self, pending) -> list:
        still = []
        for job in pending:
            deps = [d for d in job.after if d in self.names]
            unfinished = [d for d in deps if d in self.outcome and self.outcome[d][0] != FINISHED]
            if unfinished:
                kind = FAILED if any(self.outcome[d][0] == FAILED for d in unfinished) else NOT_STARTED
                detail = f"not started: {', '.join(unfinished)} did not finish"
                self.outcome[job.name] = (kind, detail)
                self.log.event(job.name, "blocked", by=unfinished)
                self.say(job.name, detail)
                continue
            waiting = [d for d in deps if d not in self.outcome]
            if waiting:
                if job.name not in self.waiting_said:
                    self.waiting_said.add(job.name)
                    self.say(job.name, f"waits for {', '.join(waiting)}")
                still.append(job)
                continue
            if len(self.running) >= self.concurrency:
                still.append(job)
                continue
            self._start(job)
        return still

    def _start(self, job) -> None:
        if job.after:  # its config may read a run trained above (init=<pretraining workdir>)
            problem = check_job(job)
            if problem:
                self.outcome[job.name] = (FAILED, f"not started: main would reject it: {problem}")
                self.log.event(job.name, "invalid", problem=problem)
                self.say(job.name, self.outcome[job.name][1])
                return
        status = status_lib.run_status(job.workdir, job.num_train_steps)
        resuming = status.state == status_lib.PARTIAL
        steps = "" if status.total is None else f", {status.total} steps"
        self.say(job.name, f"resumes from step {_steps(status.checkpoint, status.total)}" if resuming
                 else f"starts (new{steps})" if status.state == status_lib.NEW
                 else f"restarts (no checkpoint yet{steps})")
        self.log.event(job.name, "resume" if resuming else "start", step=status.checkpoint, total=status.total,
                       launcher="local")
        logfile = open(log_path(job.workdir), "a")
        procs = commands(job, self.args, self.ports[job.name])
        children, threads = [], []
        for i, (env, argv) in enumerate(procs):
            # Own session: a terminal's Ctrl-C reaches the launcher only, which stops the jobs itself.
            p = subprocess.Popen(argv, cwd=common.REPO_ROOT, env=_environ(env), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
            children.append(p)
            tag = "".join(f"[{t}]" for t in (job.name if self.prefix else "", f"p{i}" if len(procs) > 1 else "")
                          if t)
            t = threading.Thread(target=_tee, args=(p.stdout, tag, logfile, self.lock), daemon=True)
            t.start()
            threads.append(t)
        self.running[job.name] = _Running(job, children, threads, logfile, time.monotonic())

    def _end(self, r: _Running) -> None:
        for t in r.threads:
            t.join(timeout=5)  # a leftover grandchild may hold the pipe open
        r.logfile.close()
        codes = [p.wait() for p in r.children]
        rc = next((c for c in codes if c != 0), 0)
        job = r.job
        if "://" in job.workdir:  # the local log, whole, into the object store's workdir
            epath.Path(job.workdir, "launch.log").write_text(open(log_path(job.workdir)).read())
        after = status_lib.run_status(job.workdir, job.num_train_steps)
        self.log.event(job.name, "end", rc=rc, state=after.state, step=after.checkpoint, total=after.total)
        took = _duration(time.monotonic() - r.started)
        if after.finished:
            kind, detail = FINISHED, f"finished ({after.total} steps) in {took}"
        elif r.stop_sent is not None and self.stop_reason is not None:
            kind, detail = STOPPED, f"stopped by {self.stop_reason} (exit {rc}) at {_where(after)}"
        elif rc in PREEMPTED_EXIT_CODES:
            kind, detail = STOPPED, f"stopped by a signal to it (exit {rc}) at {_where(after)}"
        elif rc == 0:
            kind, detail = FAILED, f"exited 0 but its workdir does not hold the finished run ({after.describe()})"
        else:
            kind, detail = FAILED, f"failed (exit {rc}; see {job.workdir.rstrip('/')}/launch.log)"
        self.outcome[job.name] = (kind, detail)
        self.say(job.name, detail)

    def _summary(self) -> int:
        done = [n for n, (k, _) in self.outcome.items() if k == FINISHED]
        failed = {n: d for n, (k, d) in self.outcome.items() if k == FAILED}
        unfinished = {n: _short(d) for n, (k, d) in self.outcome.items() if k in (STOPPED, NOT_STARTED)}
        print(f"# {len(done)} of {len(self.jobs)} job(s) finished", flush=True)
        if failed:
            print("failed: " + "; ".join(f"{n}: {d}" for n, d in failed.items()), file=sys.stderr)
        if unfinished:
            print(f"unfinished: {', '.join(f'{n} ({d})' for n, d in unfinished.items())}; "
                  "rerun the same command to resume them "
                  "(finished runs are skipped)", file=sys.stderr)
        if self.stop_reason == "a signal":
            return EXIT_SIGNAL
        if failed:
            return EXIT_FAILED
        return EXIT_UNFINISHED if unfinished else 0


def _short(detail: str) -> str:
    """An outcome's detail in a few words: "checkpoint 19/40", "not started"."""
    m = re.search(r"checkpoint \d+/\S+|no checkpoint yet", detail)
    return m.group(0) if m else "not started"


def _steps(step, total) -> str:
    return f"{step}/{'?' if total is None else total}"


def _where(status) -> str:
    if status.checkpoint is None:
        return "no checkpoint yet (a rerun restarts it)"
    return f"checkpoint {_steps(status.checkpoint, status.total)} (a rerun resumes it)"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _signal_all(children, signum, group: bool = False) -> None:
    for p in children:
        if p.poll() is None:
            try:
                if group:  # the process and whatever it started (its own session)
                    os.killpg(p.pid, signum)
                else:
                    p.send_signal(signum)
            except ProcessLookupError:
                pass


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
