"""The training entry point end to end (subprocesses, 8 simulated CPU devices, synthetic data):
resume after SIGTERM and after kill -9 reproduces the uninterrupted run's losses, a SIGTERM is
acted on within steps_in_flight steps, two processes on localhost match one process (and stop
together on a signal to one), and bad input fails fast with a one-line error naming the field."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bert_vs_transformer.config_args import REPO_ROOT

TINY = [
    "--config=configs/transformer.py:tiny",
    "--config.data.dataset=synthetic",
    "--config.data.batch_size=16",
    "--config.data.max_len=12",
    "--config.model.vocab_size=96",
    "--config.model.d_model=32",
    "--config.model.d_ff=64",
    "--config.log_every_steps=1",
]
STEPS = 14


def _env(devices=8, **extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    env.update(extra)
    return env


def _cmd(workdir, *overrides, steps=STEPS, ckpt_every=5):
    return [sys.executable, "-m", "bert_vs_transformer.main", f"--workdir={workdir}", *TINY,
            f"--config.num_train_steps={steps}", f"--config.eval_every_steps={steps}",
            f"--config.checkpoint_every_steps={ckpt_every}", *overrides]


def _run(cmd, env=None, timeout=300):
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                assert r["step"] not in out, f"step {r['step']} logged twice"
                out[r["step"]] = r["loss"]
    return out


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, f"run ended early:\n{proc.stderr.read()[-3000:]}"
        assert time.time() - t0 < timeout, "timed out waiting"
        time.sleep(0.05)


def _logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if '"loss"' in line)


def _complete_checkpoints(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    proc = _run(_cmd(workdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


def _evals(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if any(k.startswith("eval_") for k in r)]


def test_stop_at_step_then_rerun_matches_uninterrupted(reference, tmp_path):
    """stop_at_step ends the run at that step of the full schedule (evaluated, saved); the same
    command without it goes on to the end with the uninterrupted run's losses."""
    workdir = str(tmp_path)
    first = _run(_cmd(workdir, "--config.stop_at_step=7"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(_losses(workdir)) == list(range(1, 8))
    assert _complete_checkpoints(workdir)[-1] == 7 and _evals(workdir) == [7]
    rerun = _run(_cmd(workdir))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from step 7" in rerun.stderr
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for s in range(1, STEPS + 1):  # the learning-rate schedule is the full run's throughout
        assert losses[s] == reference[s], (s, losses[s], reference[s])


def test_sigterm_then_rerun_matches_uninterrupted(reference, tmp_path):
    workdir = str(tmp_path)
    proc = subprocess.Popen(_cmd(workdir), cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _logged_steps(workdir) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    k = max(_losses(workdir))
    assert k < STEPS, "the signal arrived after the run finished; nothing was tested"
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM: cut, not finished (launchers requeue)
    assert f"stopped: stopped by SIGTERM at step {k}" in err and "Traceback" not in err, err[-3000:]
    assert _complete_checkpoints(workdir)[-1] == k, "no checkpoint at the preempted step"

    rerun = _run(_cmd(workdir))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from step {k}" in rerun.stderr
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for s in range(k + 1, STEPS + 1):
        assert losses[s] == reference[s], (s, losses[s], reference[s])  # exactly: same data, same params


def test_kill9_during_checkpointing_resumes_from_last_complete(reference, tmp_path):
    workdir = str(tmp_path)
    proc = subprocess.Popen(_cmd(workdir, ckpt_every=1), cwd=REPO_ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_complete_checkpoints(workdir)) >= 2, proc)
    proc.kill()  # SIGKILL, most likely while an asynchronous save is in flight
    proc.wait(timeout=60)
    complete = _complete_checkpoints(workdir)
    # Make sure a half-written checkpoint is present, as a kill mid-write leaves one.
    partial = os.path.join(workdir, "checkpoints", f"{complete[-1] + 1}.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(partial, "state"), exist_ok=True)
    with open(os.path.join(partial, "state", "partial"), "w") as f:
        f.write("interrupted")

    rerun = _run(_cmd(workdir, ckpt_every=1))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from step {complete[-1]}" in rerun.stderr
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(losses[s] == reference[s] for s in range(complete[-1] + 1, STEPS + 1))


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    steps = 5
    single = str(tmp_path / "single")
    proc = _run(_cmd(single, steps=steps))
    assert proc.returncode == 0, proc.stderr[-3000:]

    multi = str(tmp_path / "multi")
    port = _free_port()
    env = _env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    procs = [
        subprocess.Popen(
            _cmd(multi, f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
                 steps=steps),
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    one, two = _losses(single), _losses(multi)
    assert sorted(two) == list(range(1, steps + 1))
    for s in one:
        assert abs(one[s] - two[s]) <= 1e-5, (s, one[s], two[s])


@pytest.mark.parametrize("service", [True, False], ids=["preemption_service", "all_gather"])
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path, service):
    """Multi-host preemption: only process 1 gets SIGTERM; both finish the same step, save one
    checkpoint there together and exit with 143. With JAX's preemption service (the default) the
    coordination service picks the step; without it the flag is all-gathered every step."""
    workdir, steps = str(tmp_path), 400
    port = _free_port()
    env = _env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               JAX_ENABLE_PREEMPTION_SERVICE=str(service).lower())
    procs = [
        subprocess.Popen(
            _cmd(workdir, f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
                 steps=steps, ckpt_every=steps),
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    _wait_for(lambda: _logged_steps(workdir) >= 3, procs[1])
    procs[1].send_signal(signal.SIGTERM)
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 143, err[-3000:]  # both: cut by SIGTERM after saving
        errs.append(err)
    k = max(_losses(workdir))
    assert k < steps, "the signal arrived after the run finished; nothing was tested"
    assert _complete_checkpoints(workdir) == [k]
    assert all(f"stopping at step {k} after a preemption signal" in err for err in errs), [e[-1500:] for e in errs]
    if service:
        assert all(f"preemption sync point at step {k}" in err for err in errs)
    else:
        assert "received signal" in errs[1] and "received signal" not in errs[0]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["--config.not_a_field=3"], "not_a_field"),
        (["--config.mesh.data=3"], "config.mesh"),
        (["--config.data.batch_size=12"], "config.data.batch_size=12"),
        ([f"--config.stop_at_step={STEPS + 1}"], f"config.stop_at_step={STEPS + 1} must be 0 (off) or a step"),
        (["--config.steps_in_flight=-1"], "config.steps_in_flight must be >= 0"),
    ],
)
def test_bad_config_fails_fast_with_one_line(tmp_path, overrides, expected):
    proc = _run(_cmd(str(tmp_path), *overrides), timeout=120)
    assert proc.returncode != 0
    error_lines = [line for line in proc.stderr.splitlines() if expected in line]
    assert error_lines, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints", "1"))


def _tree(workdir):
    """Every file under workdir with its size and modification time."""
    out = {}
    for dirpath, _, files in os.walk(workdir):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), workdir)] = (st.st_size, st.st_mtime_ns)
    return out


def test_workdir_of_a_different_model_is_refused_and_a_finished_run_is_left_alone(tmp_path):
    workdir = str(tmp_path)
    first = _run(_cmd(workdir, steps=1, ckpt_every=1))
    assert first.returncode == 0, first.stderr[-3000:]
    before = _tree(workdir)
    proc = _run(_cmd(workdir, "--config.model.d_model=48", steps=2), timeout=120)
    assert proc.returncode == 2
    assert "different model" in proc.stderr and "model.d_model" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _tree(workdir) == before, "a refused run wrote into the workdir"
    again = _run(_cmd(workdir, steps=1, ckpt_every=1), timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds the finished run (checkpoint at step 1 of 1): nothing to do" in again.stderr
    assert _tree(workdir) == before, "rerunning a finished run wrote into the workdir"


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    """Truncated array files in the newest checkpoint: the rerun says which step it skipped and why,
    keeps it as <step>.unreadable and resumes from the one before."""
    workdir = str(tmp_path)
    first = _run(_cmd(workdir, "--config.stop_at_step=4", steps=6, ckpt_every=2))
    assert first.returncode == 0, first.stderr[-3000:]
    assert _complete_checkpoints(workdir) == [2, 4]
    # the array data files (OCDBT keeps them under state/d and state/ocdbt.process_*/d), cut in half
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(workdir, "checkpoints", "4", "state"))
             for f in fs if os.path.basename(d) == "d"]
    assert files
    biggest = max(files, key=os.path.getsize)
    size = os.path.getsize(biggest)
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    rerun = _run(_cmd(workdir, steps=6, ckpt_every=2))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "checkpoint step 4 of" in rerun.stderr and "cannot be read" in rerun.stderr, rerun.stderr[-3000:]
    assert "resumed from step 2" in rerun.stderr
    kept = os.path.join(workdir, "checkpoints", "4.unreadable", "state", os.path.relpath(biggest, os.path.join(
        workdir, "checkpoints", "4", "state")))
    assert os.path.getsize(kept) == size // 2, "the unreadable checkpoint was not kept as it was"
    assert _complete_checkpoints(workdir)[-1] == 6 and sorted(_losses(workdir)) == list(range(1, 7))


def _read_tensorboard_scalars(directory):
    """Parses TFRecord-framed Event protos (no TensorFlow): {tag: [(step, value)]}."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos: pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12: pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_classification_run_writes_metrics_and_tensorboard(tmp_path):
    workdir = str(tmp_path)
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", f"--workdir={workdir}",
           "--config=configs/bert.py:tiny", "--config.task=classification", "--config.data.dataset=synthetic",
           "--config.data.batch_size=16", "--config.data.max_seq_len=16", "--config.model.vocab_size=64",
           "--config.num_train_steps=4", "--config.log_every_steps=2", "--config.eval_every_steps=4",
           "--config.checkpoint_every_steps=4", "--config.profile_steps=2", "--config.profile_start_step=1"]
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # config.profile_steps: steps 2-3 traced into WORKDIR/profile and summarised
    assert "profile of steps 2-3" in proc.stderr, proc.stderr[-3000:]
    with open(os.path.join(workdir, "profile", "summary.md")) as f:
        assert "ms per step" in f.read()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        assert {"learning_rate", "steps_per_s", "tokens_per_s", "mfu"} <= set(r)
    assert any("eval_accuracy" in r for r in records)
    scalars = _read_tensorboard_scalars(os.path.join(workdir, "tensorboard"))
    assert [s for s, _ in scalars["loss"]] == [2, 4]
    assert abs(scalars["loss"][0][1] - train[0]["loss"]) < 1e-5
    assert "step 4/4" in proc.stderr and "tok/s" in proc.stderr and "ETA" in proc.stderr


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(devices, tmp_path, monkeypatch):
    """An update that poisons the parameters at step 5 (its loss is still finite) must not be
    saved; the loss of step 6 is NaN and the run stops naming it; step 4's checkpoint remains."""
    import jax.numpy as jnp
    import optax

    from bert_vs_transformer import config_args
    from bert_vs_transformer.training import loop as train, optim

    real = optim.make_optimizer

    def poisoned(opt, d_model, steps):
        tx, schedule = real(opt, d_model, steps)
        poison = optax.scale_by_schedule(lambda count: jnp.where(count == 4, jnp.nan, 1.0))
        return optax.chain(tx, poison), schedule

    monkeypatch.setattr(optim, "make_optimizer", poisoned)
    config = config_args.load("configs/transformer.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size, config.data.max_len = 8, 8
    config.model.vocab_size, config.model.d_model, config.model.d_ff = 64, 32, 64
    config.num_train_steps, config.log_every_steps = 12, 3
    config.eval_every_steps, config.checkpoint_every_steps = 100, 2
    with pytest.raises(FloatingPointError, match=r"after step 6|at step 6") as err:
        train.train_and_evaluate(config, str(tmp_path))
    assert _complete_checkpoints(str(tmp_path))[-1] == 4, err.value


def test_tiny_multi30k_trains_on_real_data(tmp_path):
    """The README's quick start, shortened: configs/transformer.py:tiny on the real Multi30k."""
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    workdir = str(tmp_path / "run")
    env = _env(devices=1, BVT_DATA_DIR=os.path.abspath(data_dir), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/transformer.py:tiny",
           f"--workdir={workdir}", "--config.num_train_steps=40", "--config.log_every_steps=10",
           "--config.eval_every_steps=40", "--config.checkpoint_every_steps=40"]
    proc = _run(cmd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5, losses
    ev = [r for r in records if "eval_nll" in r]
    assert ev and ev[-1]["eval_nll"] < 7.0, ev


# Trains the tiny model with device steps slower than their dispatch, once per steps_in_flight given
# on the command line, sending itself SIGTERM once step 5 is computed; prints the checkpointed steps.
_SLOW_STEPS_DRIVER = r"""
import json, os, signal, sys, threading, time
import jax, jax.numpy as jnp
from bert_vs_transformer import config_args
from bert_vs_transformer.training import loop, preemption, train_step

compile_train_step = train_step.compile_train_step
dispatched = []  # each step's loss, in dispatch order


def slowed(step_fn, shardings, mesh, donate=True):
    def step_then_work(state, batch, rng):  # a slow step; its result feeds the next step
        state, metrics = step_fn(state, batch, rng)
        x = jax.lax.fori_loop(0, 1000, lambda i, x: jnp.tanh(x @ x), jnp.full((128, 128), 0.01))
        return state.replace(step=state.step + jnp.where(jnp.isnan(x.sum()), 1, 0)), metrics

    run = compile_train_step(step_then_work, shardings, mesh, donate)

    def record(*args):
        state, metrics = run(*args)
        dispatched.append(metrics["loss"])
        return state, metrics

    return record


def send_when_computed(signal_at, out):
    while len(dispatched) < signal_at or not dispatched[signal_at - 1].is_ready():
        time.sleep(0.001)
    out["dispatched"] = len(dispatched)
    os.kill(os.getpid(), signal.SIGTERM)


train_step.compile_train_step = slowed
signal_at, results = int(sys.argv[1]), {}
for k in sys.argv[3:]:
    config = config_args.load("configs/transformer.py:tiny")
    config.data.dataset, config.data.batch_size, config.data.max_len = "synthetic", 16, 12
    config.model.vocab_size, config.model.d_model, config.model.d_ff = 96, 32, 64
    config.num_train_steps = config.log_every_steps = config.eval_every_steps = 40
    config.checkpoint_every_steps, config.async_checkpointing = 40, False
    config.steps_in_flight = int(k)
    dispatched.clear()
    out = {}
    sender = threading.Thread(target=send_when_computed, args=(signal_at, out), daemon=True)
    sender.start()
    workdir = os.path.join(sys.argv[2], k)
    try:
        loop.train_and_evaluate(config, workdir)
    except preemption.Preempted:
        pass
    sender.join(timeout=30)
    out["checkpoints"] = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    results[k] = out
print(json.dumps(results))
"""


def test_sigterm_is_read_within_steps_in_flight(tmp_path):
    """One device whose steps are slower than their dispatch, SIGTERM once step 5 is computed: the
    run saves and stops at most steps_in_flight + 1 steps later. Unbounded (10000), Python has
    dispatched far ahead by then and reads the signal only at the end of its 40-step log window: the
    48 s a SIGTERM took to act on a CPU fine-tuning run (1.6 s steps, 50-step log window)."""
    signal_at = 5
    proc = _run([sys.executable, "-c", _SLOW_STEPS_DRIVER, str(signal_at), str(tmp_path), "0", "2", "10000"],
                env=_env(devices=1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for k in (0, 2):
        stopped = results[str(k)]["checkpoints"]
        assert len(stopped) == 1 and signal_at <= stopped[0] <= signal_at + k + 1, (k, results)
    unbounded = results["10000"]
    assert unbounded["dispatched"] > signal_at + 8, f"no run-ahead to bound; the test shows nothing: {results}"
    assert unbounded["checkpoints"][-1] > signal_at + 8, results
