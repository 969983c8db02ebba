"""The TPU-pod and SLURM launchers (launch/tpu.py, launch/tpu_worker.py, launch/slurm.py): the TPU
launcher refuses a root the workers do not share, starts each run detached from the ssh session with
per-worker logs in the workdir, and judges a run by its workdir, not by ssh's exit status (checked
with a stand-in gcloud that runs the workers' commands here); the SLURM script gives srun its CPUs
and a GPU binding and requeues on the preemption status alone; gs:// roots pass through unmangled."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # experiments/ and launch/ are run from the checkout, not installed
    sys.path.insert(0, REPO)

from experiments import run, status  # noqa: E402
from launch import common, tpu  # noqa: E402

TPU_ARGS = ["--launcher=tpu", "--tpu_name=pod", "--tpu_zone=us-central2-b", "--only=base"]


def _bash_n(text, tmp_path):
    path = tmp_path / "out.sh"
    path.write_text(text)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + text


def test_tpu_launcher_without_a_shared_root_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BVT_SWEEP_ROOT", raising=False)
    for extra in ([], [f"--root={tmp_path}"], ["--root=s3://bucket/bvt"]):
        assert run.main(["experiments/vaswani_table3.py", "--dry_run", *TPU_ARGS, *extra]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (out, err)
        assert "--root=gs://BUCKET/DIR" in err
    argv = ["--dry_run", "--", "--config=configs/transformer.py:tiny", f"--workdir={tmp_path}/one"]
    assert common.single_job_main("tpu", argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "--tpu_shared_root" in err
    assert not os.listdir(tmp_path)


def test_tpu_dry_run_with_a_gs_root(tmp_path, capsys, monkeypatch):
    """gs:// unmangled; pinned stack on Python 3.11; each job started detached (tpu_worker start),
    then polled on every worker and judged by the workdir's status on worker 0."""
    monkeypatch.setattr(status, "run_status", lambda workdir, total=None: status.Status(status.NEW, None, None, total))
    assert run.main(["experiments/vaswani_table3.py", "--dry_run", *TPU_ARGS, "--root=gs://bkt/bvt", "--tpu_create",
                     "--env=BVT_DATA_DIR=gs://bkt/data"]) == 0
    out = capsys.readouterr().out
    _bash_n(out, tmp_path)
    workdir = "gs://bkt/bvt/vaswani_table3/base"
    assert "gs:/bkt" not in out.replace("gs://", "") and "gcsfuse" not in out
    setup = next(line for line in out.splitlines() if "uv venv" in line)
    assert "--python=3.11" in setup and "-r launch/tpu_requirements.txt -e ." in setup
    starts = [line for line in out.splitlines() if "launch.tpu_worker start" in line]
    assert len(starts) == 1 and "--worker=all" in starts[0]
    assert f"--workdir={workdir} --steps=8000 -- -m bert_vs_transformer.main " in starts[0]
    assert f"--workdir={workdir}" in starts[0].split("bert_vs_transformer.main")[1]
    assert "export BVT_DATA_DIR=gs://bkt/data" in starts[0]
    assert f"launch.tpu_worker poll --workdir={workdir}'" in out
    assert f"--worker=0 --command='cd ~/bert_vs_transformer && ~/bvt-venv/bin/python -m experiments.status {workdir} " \
           f"--steps=8000'" in out


def test_tpu_stack_is_pinned_to_the_versions_tested_here():
    import flax
    import jax
    import orbax.checkpoint

    pins = dict(re.findall(r"^([\w\-\[\],]+)==(\S+)$", open(os.path.join(REPO, "launch", "tpu_requirements.txt")).read(),
                           re.M))
    assert {"jax[tpu]", "jaxlib", "flax", "optax", "orbax-checkpoint", "etils[epath,epath-gcs]"} <= set(pins), pins
    installed = {"jax[tpu]": jax.__version__, "flax": flax.__version__, "orbax-checkpoint": orbax.checkpoint.__version__}
    if installed["jax[tpu]"] != pins["jax[tpu]"]:
        pytest.skip(f"this environment runs jax {jax.__version__}; the TPU pins are for {pins['jax[tpu]']}")
    assert {name: pins[name] for name in installed} == installed


_RUN = r"""
import os, sys, time
print("hello from the run", os.getsid(0), flush=True)
open(sys.argv[1], "w").write(str(os.getsid(0)))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
sys.exit(143)
"""


def _poll(workdir, env):
    out = subprocess.run([sys.executable, "-m", "launch.tpu_worker", "poll", f"--workdir={workdir}"], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True).stdout
    return tpu.parse_workers(out)[socket.gethostname()]


def _wait(predicate, timeout=60):
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_tpu_worker_runs_detached_with_its_log_in_the_workdir(tmp_path):
    """`start` from a shell in its own session, as ssh runs it; that session then hangs up (SIGHUP to
    its process group, as sshd does when the connection drops): the run goes on, in a session of
    its own, its log and exit status land in the workdir."""
    workdir, sid_file, release = tmp_path / "w", tmp_path / "sid", tmp_path / "release"
    env = dict(os.environ, BVT_RUNS_DIR=str(tmp_path / "runs"))
    start = f"{sys.executable} -m launch.tpu_worker start --workdir={workdir} --copy_seconds=0.2 -- -c '{_RUN}' " \
            f"{sid_file} {release}"
    ssh = subprocess.Popen(["bash", "-c", f"{start} && sleep 60"], cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, text=True)
    _wait(sid_file.exists)
    os.killpg(ssh.pid, signal.SIGHUP)
    assert ssh.wait(timeout=30) == -signal.SIGHUP
    assert "started (pid" in ssh.stdout.read()
    assert int(sid_file.read_text()) != ssh.pid  # the run's session is not the ssh session
    assert _poll(workdir, env) == ("running", None)  # survived the hangup
    again = subprocess.run(start, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert "already running" in again.stdout  # a second launcher re-attaches, starts nothing
    release.write_text("")
    _wait(lambda: _poll(workdir, env)[0] == "exited")
    assert _poll(workdir, env) == ("exited", 143)
    host = socket.gethostname()
    assert "hello from the run" in (workdir / "logs" / f"{host}.log").read_text()
    assert json.loads((workdir / "logs" / f"{host}.exit.json").read_text())["rc"] == 143


def test_tpu_outcome_is_the_workdirs():
    new = status.Status(status.PARTIAL, 5, 6, 10)
    done = status.Status(status.FINISHED, 10, 10, 10)
    text = "Using ssh batch size of 4.\nbvt-worker t1v-w-0 exited 143\nnoise\nbvt-worker t1v-w-1 exited 143\n"
    workers = tpu.parse_workers(text)
    assert workers == {"t1v-w-0": ("exited", 143), "t1v-w-1": ("exited", 143)}
    rc, line = tpu.outcome(workers, new)
    assert rc == 143 and "resumes from step 5/10" in line and "rerun" in line
    assert tpu.outcome(workers, done)[0] == 0  # it finished: the exit statuses do not matter
    assert tpu.outcome({"a": ("exited", 0), "b": ("exited", 0)}, new)[0] == 1  # exit 0 is not "done"
    rc, line = tpu.outcome({"a": ("exited", 143), "b": ("lost", None)}, new)
    assert rc == 1 and "b lost its run" in line
    assert tpu.outcome({"a": ("exited", 1), "b": ("exited", 143)}, new)[0] == 1


# Stands in for bert_vs_transformer.main on the stand-in worker: leaves the workdir as main does
# (config.json, metrics.jsonl, checkpoints/<step>) at --config.stop_at_step or the last step, then
# exits 0, or $FAKE_MAIN_EXIT (143: saved on SIGTERM).
_FAKE_MAIN = r"""
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
workdir, total = args["workdir"], int(args["config.num_train_steps"])
step = int(args.get("config.stop_at_step", total))
os.makedirs(os.path.join(workdir, "checkpoints", str(step)), exist_ok=True)
json.dump({"num_train_steps": total}, open(os.path.join(workdir, "config.json"), "w"))
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.writelines(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, step + 1))
print(f"trained to step {step} of {total}", flush=True)
sys.exit(int(os.environ.get("FAKE_MAIN_EXIT", "0")))
"""


def test_tpu_launcher_waits_on_the_workdir_not_on_ssh(tmp_path, monkeypatch, capsys):
    """A stand-in gcloud runs every worker command here (one worker, this checkout with a stand-in
    training program) and always exits 0. The launcher reports what the workdir says: a run that
    exits 0 before its last step is unfinished (1), one stopped by a preemption is resumable (143),
    and the same command then takes it to the end (0)."""
    home = tmp_path / "home"
    (home / "bvt-venv" / "bin").mkdir(parents=True)
    (home / "bvt-venv" / "bin" / "python").symlink_to(sys.executable)
    checkout = home / "bert_vs_transformer"
    (checkout / "bert_vs_transformer").mkdir(parents=True)
    for name in ("launch", "experiments", "configs"):
        (checkout / name).symlink_to(os.path.join(REPO, name))
    (checkout / "bert_vs_transformer" / "__init__.py").write_text("")
    (checkout / "bert_vs_transformer" / "main.py").write_text(_FAKE_MAIN)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gcloud.txt"
    (bin_dir / "gcloud").write_text(
        f"#!{sys.executable}\nimport subprocess, sys\nopen({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "cmd = next(a[len('--command='):] for a in sys.argv if a.startswith('--command='))\n"
        "subprocess.call(['bash', '-c', cmd])\n")
    (bin_dir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(home))
    workdir = tmp_path / "shared" / "sweep" / "run"
    ours = ["--tpu_no_setup", "--tpu_shared_root", "--tpu_poll_seconds=0.1"]
    main_args = ["--", "--config=configs/transformer.py:tiny", f"--workdir={workdir}", "--config.num_train_steps=2"]

    assert common.single_job_main("tpu", ours + main_args + ["--config.stop_at_step=1"]) == 1
    out, err = capsys.readouterr()
    assert "[run] 1 exited 0" in out and "every worker exited 0, but the workdir does not hold the finished run" in err
    assert "partial: resumes from step 1/2" in err
    log = (workdir / "logs" / f"{socket.gethostname()}.log").read_text()
    assert "trained to step 1 of 2" in log

    assert common.single_job_main("tpu", ours + ["--env=FAKE_MAIN_EXIT=143"] + main_args
                                  + ["--config.stop_at_step=1"]) == 143
    out, err = capsys.readouterr()
    assert "stopped after saving a checkpoint (exit 143); partial: resumes from step 1/2" in err, out + err

    assert common.single_job_main("tpu", ours + main_args) == 0
    out, err = capsys.readouterr()
    assert "[run] finished (2 steps)" in out, out + err
    assert status.run_status(str(workdir), 2).finished
    ssh = calls.read_text().splitlines()
    assert all(line.startswith("compute tpus tpu-vm ssh bvt-tpu --zone=us-central2-b --worker=") for line in ssh)
    assert sum("launch.tpu_worker start" in line for line in ssh) == 3
    assert common.single_job_main("tpu", ours + main_args) == 0  # finished: nothing started
    assert "nothing to do" in capsys.readouterr().out
    assert sum("launch.tpu_worker start" in line for line in calls.read_text().splitlines()) == 3


def test_slurm_script_gives_srun_cpus_and_a_gpu_binding(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(status, "run_status", lambda workdir, total=None: status.Status(status.NEW, None, None, total))
    assert run.main(["experiments/vaswani_table3.py", "--dry_run", "--only=base", "--launcher=slurm",
                     "--root=gs://bkt/bvt", "--slurm_cpus_per_task=12", f"--slurm_repo_dir={tmp_path}/repo"]) == 0
    out = capsys.readouterr().out
    _bash_n(out, tmp_path)
    (script,) = re.findall(r"<<'BVT_SBATCH_EOF'\n(.*?)\nBVT_SBATCH_EOF", out, re.S)
    lines = script.splitlines()
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert "export SRUN_CPUS_PER_TASK=12" in lines[:srun] and "#SBATCH --cpus-per-task=12" in lines
    assert lines[srun].startswith("srun --kill-on-bad-exit=1 --gpu-bind=none ")
    assert "--workdir=gs://bkt/bvt/vaswani_table3/base" in lines[srun]
    # sbatch reads no gs://: the scripts and logs go under the checkout on the cluster
    assert f"cat > {tmp_path}/repo/workdirs/vaswani_table3/slurm/base.sbatch <<" in out
    assert f"#SBATCH --output={tmp_path}/repo/workdirs/vaswani_table3/slurm/base-%j.out" in lines
    requeue = [line for line in lines if "scontrol requeue" in line]
    assert len(requeue) == 1 and 'if [ "$rc" -ne 143 ]; then' in lines


def test_slurm_without_gpus_binds_none(tmp_path, capsys):
    assert run.main(["experiments/vaswani_table3.py", "--dry_run", "--only=base", "--launcher=slurm",
                     f"--root={tmp_path}", "--slurm_gpus_per_node=0"]) == 0
    out = capsys.readouterr().out
    assert "--gpu-bind" not in out and "export SRUN_CPUS_PER_TASK=8" in out
