"""Two processes x 4 CPU devices (gloo) on localhost, packed translation on the real Multi30k:
each process checkpoints and restores its own data-iterator state, so a run cut by SIGTERM and
rerun on the same process count logs the uninterrupted run's losses (packed streams differ per
process, so restoring process 0's state everywhere could not resume them)."""

import os
import signal
import subprocess
import sys

from test_train_loop import _complete_checkpoints, _env, _free_port, _logged_steps, _losses, _wait_for

from bert_vs_transformer.config_args import REPO_ROOT

STEPS = 40


def _procs(workdir, tfds_dir):
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    env = _env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", BVT_DATA_DIR=os.path.abspath(data_dir),
               TFDS_DATA_DIR=tfds_dir)
    port = _free_port()
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/transformer.py:tiny",
           f"--workdir={workdir}", "--config.data.pack=True", "--config.data.batch_size=16",
           "--config.data.max_len=64", "--config.model.num_encoder_layers=1",
           "--config.model.num_decoder_layers=1", "--config.model.d_model=32", "--config.model.d_ff=64",
           "--config.model.vocab_size=1000", "--config.evals.bleu.every_steps=0",
           "--config.evals.validation.every_steps=0",
           f"--config.num_train_steps={STEPS}", "--config.log_every_steps=1",
           f"--config.eval_every_steps={STEPS}", f"--config.checkpoint_every_steps={STEPS}",
           f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    return [subprocess.Popen(cmd + [f"--process_id={i}"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, code):
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == code, err[-3000:]
        errs.append(err)
    return errs


def test_packed_two_process_run_resumes_each_process_stream(tmp_path):
    tfds_dir = str(tmp_path / "tfds")
    reference = str(tmp_path / "reference")
    _finish(_procs(reference, tfds_dir), 0)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    workdir = str(tmp_path / "cut")
    procs = _procs(workdir, tfds_dir)
    _wait_for(lambda: _logged_steps(workdir) >= 3, procs[1])
    procs[1].send_signal(signal.SIGTERM)
    _finish(procs, 143)
    k = max(_losses(workdir))
    assert k < STEPS, "the signal arrived after the run finished; nothing was tested"
    assert _complete_checkpoints(workdir) == [k]
    data_dir = os.path.join(workdir, "checkpoints", str(k), "data")
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(data_dir))

    errs = _finish(_procs(workdir, tfds_dir), 0)
    assert f"resumed from step {k}" in errs[0], errs[0][-3000:]
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for s in range(k + 1, STEPS + 1):
        assert abs(losses[s] - expected[s]) <= 1e-6, (s, losses[s], expected[s])
