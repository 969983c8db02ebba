"""SIGHUP (a dropped ssh session) stops a run like SIGTERM: the flag is set, the run saves and exits
129 (128 + SIGHUP); a process started under nohup (SIGHUP ignored) keeps ignoring it."""

import os
import signal
import subprocess
import sys
import time

import pytest

from bert_vs_transformer.config_args import REPO_ROOT
from bert_vs_transformer.training import preemption


@pytest.fixture
def sighup_default():
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


def _deliver(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler between bytecodes, right after the kill returns


def test_sighup_sets_the_flag_like_sigterm(sighup_default):
    stopper = preemption.Preemption(step=0)
    try:
        assert not stopper.should_stop(1)
        _deliver(signal.SIGHUP)
        assert stopper.requested and stopper.signum == signal.SIGHUP and stopper.should_stop(2)
    finally:
        stopper.restore()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    stopped = preemption.Preempted(2, signal.SIGHUP)
    assert stopped.exit_code == 128 + signal.SIGHUP == 129 and "stopped by SIGHUP at step 2" in str(stopped)


def test_sighup_ignored_under_nohup_stays_ignored(sighup_default):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopper = preemption.Preemption(step=0)
    try:
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        _deliver(signal.SIGHUP)
        assert not stopper.requested and not stopper.should_stop(1)
        _deliver(signal.SIGTERM)  # SIGTERM still stops it
        assert stopper.requested and stopper.signum == signal.SIGTERM
    finally:
        stopper.restore()


def test_main_saves_and_exits_129_on_sighup(tmp_path):
    workdir = tmp_path / "run"
    steps = 100000  # far more than run before the signal
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", f"--workdir={workdir}",
           "--config=configs/transformer.py:tiny", "--config.data.dataset=synthetic", "--config.data.batch_size=16",
           "--config.data.max_len=12", "--config.model.vocab_size=96", "--config.model.d_model=32",
           "--config.model.d_ff=64", f"--config.num_train_steps={steps}", f"--config.eval_every_steps={steps}",
           "--config.checkpoint_every_steps=5", "--config.log_every_steps=5"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = workdir / "checkpoints"

    def saved():
        return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []

    t0 = time.time()
    while not saved():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < 240, "no checkpoint within 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 129, err[-3000:]
    k = saved()[-1]
    assert f"stopped: stopped by SIGHUP at step {k} " in err and "Traceback" not in err, err[-3000:]
    assert 5 <= k < steps
