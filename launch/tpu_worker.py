"""The TPU launcher's side on each worker: a training run detached from the ssh session, with its
log and exit status kept on the worker and copied into the workdir.

    python -m launch.tpu_worker start --workdir=W [--steps=N] -- -m bert_vs_transformer.main ARGS
    python -m launch.tpu_worker poll --workdir=W     # one line: bvt-worker HOST running|exited RC|lost|none
    python -m launch.tpu_worker stop --workdir=W     # SIGTERM to the run: it saves and exits 143

`start` returns at once. It runs `python ARGS...` (this python) under a supervisor in a new session
(setsid), so a dropped ssh connection sends it no SIGHUP; stdout and stderr go to
~/.bvt_runs/<W>/train.log ($BVT_RUNS_DIR instead of ~/.bvt_runs). The supervisor copies that log to
W/logs/<host>.log every --copy_seconds and when the run ends (through etils.epath, so W may be
gs://), then records the exit status in ~/.bvt_runs/<W>/exit.json and W/logs/<host>.exit.json.
A run already going on this host for W is left alone (a rerun of the launcher re-attaches to it),
and a workdir holding the finished run is not started again.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys

from etils import epath

from experiments import status as status_lib
from experiments.sweep import ArgumentParser
from launch import common

RUNNING, EXITED, LOST, NONE = "running", "exited", "lost", "none"


def state_dir(workdir: str) -> str:
    root = os.environ.get("BVT_RUNS_DIR") or os.path.join(os.path.expanduser("~"), ".bvt_runs")
    return os.path.join(root, common.safe_name(workdir.rstrip("/")))


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, record: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def _alive(pid: int | None) -> bool:
    """Whether `pid` is a live supervisor of ours (not a process that reused the pid after a reboot)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"launch.tpu_worker" in f.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def worker_state(workdir: str) -> tuple[str, int | None]:
    """(running | exited | lost | none, the exit status once exited)."""
    state = state_dir(workdir)
    ended = _read_json(os.path.join(state, "exit.json"))
    if ended is not None:
        return EXITED, int(ended["rc"])
    supervisor = _read_json(os.path.join(state, "supervisor.json"))
    if supervisor is None:
        return NONE, None
    return (RUNNING, None) if _alive(supervisor.get("pid")) else (LOST, None)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def start(workdir: str, steps: int | None, command: list[str], copy_seconds: float) -> int:
    host = socket.gethostname()
    state = state_dir(workdir)
    kind, _ = worker_state(workdir)
    if kind == RUNNING:
        print(f"bvt-worker {host} already running: {workdir}", flush=True)
        return 0
    os.makedirs(state, exist_ok=True)
    for name in ("exit.json", "supervisor.json"):
        if os.path.exists(os.path.join(state, name)):
            os.remove(os.path.join(state, name))
    if status_lib.run_status(workdir, steps).finished:
        _write_json(os.path.join(state, "exit.json"), {"rc": 0, "host": host, "ended": _now(), "note": "finished already"})
        print(f"bvt-worker {host} finished already: {workdir}", flush=True)
        return 0
    log_path = os.path.join(state, "train.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launch.tpu_worker", "supervise", f"--workdir={workdir}",
             f"--copy_seconds={copy_seconds}", "--", *command],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _write_json(os.path.join(state, "supervisor.json"),
                {"pid": proc.pid, "host": host, "workdir": workdir, "started": _now(), "command": command})
    print(f"bvt-worker {host} started (pid {proc.pid}, log {log_path})", flush=True)
    return 0


def _copy_log(workdir: str, host: str) -> None:
    """The local log into W/logs/<host>.log, rewritten whole (object stores have no append)."""
    try:
        text = open(os.path.join(state_dir(workdir), "train.log"), "rb").read()
        logs = epath.Path(workdir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{host}.log").write_bytes(text)
    except Exception as e:  # noqa: BLE001 (a storage hiccup must not end the supervisor)
        print(f"bvt-worker: copying the log to {workdir}/logs failed: {type(e).__name__}: {e}", flush=True)


def supervise(workdir: str, command: list[str], copy_seconds: float) -> int:
    host = socket.gethostname()
    state = state_dir(workdir)
    child = subprocess.Popen([sys.executable, *command], stdin=subprocess.DEVNULL)
    _write_json(os.path.join(state, "child.json"), {"pid": child.pid})
    for sig in (signal.SIGTERM, signal.SIGINT):  # passed on: the run saves and exits 128 + the signal
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        try:
            rc = child.wait(timeout=copy_seconds)
            break
        except subprocess.TimeoutExpired:
            _copy_log(workdir, host)
    record = {"rc": rc, "host": host, "ended": _now()}
    print(f"bvt-worker {host}: the run exited {rc}", flush=True)
    _copy_log(workdir, host)
    try:
        (epath.Path(workdir) / "logs" / f"{host}.exit.json").write_text(json.dumps(record) + "\n")
    except Exception as e:  # noqa: BLE001
        print(f"bvt-worker: writing {workdir}/logs/{host}.exit.json failed: {type(e).__name__}: {e}", flush=True)
    _write_json(os.path.join(state, "exit.json"), record)
    return rc


def poll(workdir: str) -> int:
    kind, rc = worker_state(workdir)
    print(f"bvt-worker {socket.gethostname()} {kind}" + (f" {rc}" if rc is not None else ""), flush=True)
    return 0


def stop(workdir: str) -> int:
    child = _read_json(os.path.join(state_dir(workdir), "child.json"))
    if worker_state(workdir)[0] != RUNNING or not child:
        print(f"bvt-worker {socket.gethostname()}: no run going on for {workdir}")
        return 0
    os.kill(int(child["pid"]), signal.SIGTERM)
    print(f"bvt-worker {socket.gethostname()}: SIGTERM to pid {child['pid']} (it saves and exits 143)")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]
    parser = ArgumentParser(prog="python -m launch.tpu_worker", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "supervise", "poll", "stop"))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=None, help="num_train_steps (finished check)")
    parser.add_argument("--copy_seconds", type=float, default=60.0, help="how often the log is copied to W/logs")
    args = parser.parse_args(argv)
    if args.action in ("start", "supervise") and not command:
        parser.error(f"{args.action} needs the command after --")
    if args.action == "start":
        return start(args.workdir, args.steps, command, args.copy_seconds)
    if args.action == "supervise":
        return supervise(args.workdir, command, args.copy_seconds)
    return poll(args.workdir) if args.action == "poll" else stop(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
