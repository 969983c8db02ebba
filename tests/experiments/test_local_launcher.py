"""The local launcher's scheduling (launch/local.py) with stand-in jobs, no JAX: concurrency, the
deadline's SIGTERM, resuming on the next call, jobs waiting for the runs they depend on, failures."""

import json
import os
import re
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # experiments/ and launch/ are run from the checkout, not installed
    sys.path.insert(0, REPO)

from experiments import run, status  # noqa: E402

# Stands in for `python -m bert_vs_transformer.main`: a step every FAKE_STEP_S seconds, each logged
# to metrics.jsonl and checkpointed as checkpoints/<step>/; resumes from the latest checkpoint; on
# SIGTERM it saves at the current step and exits 143, as main does. Appends its start and end
# (wall time, step) to <workdir>/fake.jsonl. FAKE_FAIL=<run> makes that run exit 1 at once;
# FAKE_IGNORE_TERM=1 makes it ignore SIGTERM.
FAKE_MAIN = r'''
import json, os, signal, sys, time

args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
workdir, total = args["workdir"], int(args["config.num_train_steps"])
ckpt = os.path.join(workdir, "checkpoints")
os.makedirs(ckpt, exist_ok=True)
stop = []
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("FAKE_IGNORE_TERM") else lambda s, f: stop.append(s))


def record(**fields):
    with open(os.path.join(workdir, "fake.jsonl"), "a") as f:
        f.write(json.dumps(dict(time=time.time(), **fields)) + "\n")


step = max([int(d) for d in os.listdir(ckpt)] + [0])
if step >= total:
    print("workdir already holds the finished run")
    sys.exit(0)
if os.path.basename(workdir) == os.environ.get("FAKE_FAIL"):
    print("refused", file=sys.stderr)
    sys.exit(1)
with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"num_train_steps": total}, f)
record(event="start", step=step)
print(f"resumed from step {step}" if step else "training from scratch", flush=True)
while step < total:
    if stop:
        record(event="stop", step=step)
        print(f"stopped at step {step} after saving a checkpoint", flush=True)
        sys.exit(143)
    time.sleep(float(os.environ.get("FAKE_STEP_S", "0.02")))
    step += 1
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
    os.makedirs(os.path.join(ckpt, str(step)))
record(event="end", step=step)
'''

# b is long; c waits for a, d for b; e only waits for a free slot.
SWEEP = '''
from experiments.sweep import Run, Sweep


def get_sweep(arg=None):
    return Sweep("fake", "configs/transformer.py:tiny", [
        Run("a", {"num_train_steps": 2}),
        Run("b", {"num_train_steps": 40}),
        Run("c", {"num_train_steps": 2}, after=("a",)),
        Run("d", {"num_train_steps": 2}, after=("b",)),
        Run("e", {"num_train_steps": 2}),
    ])
'''


def _setup(tmp_path):
    (tmp_path / "fake_main.py").write_text(FAKE_MAIN)
    python = tmp_path / "fake_python"  # called as `<python> -m bert_vs_transformer.main --config=...`
    python.write_text(f'#!/bin/sh\nshift 2\nexec {sys.executable} {tmp_path / "fake_main.py"} "$@"\n')
    python.chmod(0o755)
    (tmp_path / "fake_sweep.py").write_text(SWEEP)
    return [str(tmp_path / "fake_sweep.py"), f"--root={tmp_path / 'root'}", f"--local_python={python}"]


def _records(workdir):
    path = os.path.join(workdir, "fake.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def _intervals(root, names):
    """(start, end, run) of every process, from the stand-ins' own records."""
    out = []
    for name in names:
        starts = None
        for r in _records(os.path.join(root, "fake", name)):
            if r["event"] == "start":
                starts = r["time"]
            else:
                out.append((starts, r["time"], name))
    return out


def _most_at_once(intervals) -> int:
    edges = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


def test_concurrency_deadline_resume_and_dependencies(tmp_path, capsys):
    argv = _setup(tmp_path)
    root = str(tmp_path / "root")
    wd = {n: os.path.join(root, "fake", n) for n in "abcde"}

    # First call: two at a time; b (40 steps of 0.1 s) is still training at the 2 s deadline.
    rc = run.main(argv + ["--concurrency=2", "--deadline=2", "--stop_grace=20", "--env=FAKE_STEP_S=0.1"])
    out, err = capsys.readouterr()
    assert rc == 3, out + err
    for name in "ace":
        assert status.run_status(wd[name], 2).finished, out
    b = status.run_status(wd["b"], 40)
    assert b.state == status.PARTIAL and 0 < b.checkpoint < 40, out
    assert not os.path.exists(wd["d"])  # it waits for b, which did not finish
    assert "d: waits for b" in out and "deadline reached: SIGTERM to b, to save a checkpoint" in out
    assert "a: starts (new, 2 steps)" in out
    assert re.search(rf"b: stopped by the deadline \(exit 143\) at checkpoint {b.checkpoint}/40", out)
    assert re.search(r"a: finished \(2 steps\)", out)
    assert f"unfinished: b (checkpoint {b.checkpoint}/40), d (not started); rerun the same command" in err
    first = _intervals(root, "abce")
    assert _most_at_once(first) == 2  # a ran beside b, never three at once
    a_end = max(e for _, e, n in first if n == "a")
    assert all(s >= a_end for s, _, n in first if n == "c")  # c waited for a
    assert [r["event"] for r in _records(wd["b"])] == ["start", "stop"]

    # Second call: a, c and e are skipped; b resumes where it stopped, then d runs.
    rc = run.main(argv + ["--env=FAKE_STEP_S=0.005"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert re.search(rf"b: resumes from step {b.checkpoint}/40", out) and "[b] resumed from step" in out
    for name in "abcde":
        assert status.run_status(wd[name]).finished
    b_records = _records(wd["b"])
    assert [(r["event"], r["step"]) for r in b_records[2:]] == [("start", b.checkpoint), ("end", 40)]
    assert [r["step"] for r in status.read_metrics(wd["b"])] == list(range(1, 41))  # no step twice
    d_start = next(r["time"] for r in _records(wd["d"]) if r["event"] == "start")
    assert d_start >= b_records[-1]["time"]
    events = [(e["run"], e["event"]) for e in map(json.loads, open(os.path.join(root, "fake", "sweep.jsonl")))]
    assert ("b", "stop") in events and events[-4:] == [("b", "resume"), ("b", "end"), ("d", "start"), ("d", "end")]
    assert "resumed from step" in open(os.path.join(wd["b"], "launch.log")).read()

    assert run.main(argv) == 0 and "nothing to run" in capsys.readouterr().out


def test_failed_job_blocks_what_waits_for_it(tmp_path, capsys):
    argv = _setup(tmp_path)
    rc = run.main(argv + ["--concurrency=3", "--env=FAKE_FAIL=b", "--env=FAKE_STEP_S=0.001"])
    out, err = capsys.readouterr()
    assert rc == 1, out + err
    assert re.search(r"b: failed \(exit 1; see \S+/fake/b/launch.log\)", out)
    assert "d: not started: b did not finish" in out
    assert "failed: b: " in err and "d: not started" in err
    for name in "ace":
        assert status.run_status(str(tmp_path / "root" / "fake" / name), 2).finished


def test_a_job_ignoring_sigterm_is_killed_after_the_grace(tmp_path, capsys):
    argv = _setup(tmp_path)
    rc = run.main(argv + ["--only=b", "--deadline=1", "--stop_grace=0.5", "--env=FAKE_IGNORE_TERM=1",
                          "--env=FAKE_STEP_S=0.05"])
    out, err = capsys.readouterr()
    assert rc == 3, out + err
    assert "b: still running 0.5s after SIGTERM: SIGKILL" in out and "b: stopped by the deadline (exit -9)" in out


def test_launcher_stopped_by_a_signal(tmp_path):
    """SIGTERM to the launcher: the running job saves and exits 143, the launcher exits 130."""
    argv = _setup(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *argv, "--only=b", "--env=FAKE_STEP_S=0.05"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait until the job trains
        if "training from scratch" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 130, out
    assert "signal received: SIGTERM to b" in out and "b: stopped by a signal (exit 143)" in out
    assert status.run_status(str(tmp_path / "root" / "fake" / "b"), 40).state == status.PARTIAL


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    argv = _setup(tmp_path)
    for extra, message in [(["--concurrency=0"], "--concurrency must be at least 1"),
                           (["--deadline=-5"], "--deadline must be a positive number"),
                           (["--deadline=soon"], "invalid float value: 'soon'"),
                           (["--launcher=slurm", "--concurrency=2"], "--concurrency: for --launcher=local only")]:
        try:
            rc = run.main(argv + extra)
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert run.main(["experiments/no_such_sweep.py"]) == 2
    err = capsys.readouterr().err
    assert "sweep file 'experiments/no_such_sweep.py' not found" in err and len(err.strip().splitlines()) == 1


def test_dry_run_shows_the_schedule(tmp_path, capsys):
    argv = _setup(tmp_path)
    assert run.main(argv + ["--dry_run", "--concurrency=2", "--deadline=3600"]) == 0
    out = capsys.readouterr().out
    assert "# local launcher: at most 2 job(s) at once; SIGTERM at 3600 s, SIGKILL 120 s later" in out
    assert "# c: new (2 steps) (after a)" in out
    assert not os.path.exists(tmp_path / "root")


def test_launch_log_of_a_gs_workdir_is_local_until_copied(tmp_path):
    """A gs:// workdir's launch.log is written to a local file (Popen needs one; object stores take
    no appends) and copied into the workdir when the job ends; a local workdir holds its own."""
    from launch import local as local_launcher

    remote = local_launcher.log_path("gs://bkt/bvt/sweep/run")
    assert os.path.isdir(os.path.dirname(remote)) and "gs:" not in remote and "://" not in remote
    assert local_launcher.log_path(str(tmp_path / "w")) == str(tmp_path / "w" / "launch.log")
