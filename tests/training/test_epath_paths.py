"""Every file a run reads or writes goes through etils.epath: a tiny training run, its resume, its
loading and its sweep status with a gs:// workdir, on a stand-in for GCS.

The stand-in swaps only the two bottom layers a real bucket uses: fsspec's `gcs` filesystem (what
epath calls for gs:// without TensorFlow; gcsfs in production) becomes a folder elsewhere on disk
that, like an object store, refuses appends, and orbax's tensorstore kvstore for a gs:// path (its
`gcs` driver) becomes the `file` driver on that folder. Everything above them is the production
path: epath's gs:// backend, orbax's GCS handling (checkpoints written in place and marked complete
by a commit file, old ones deleted through epath). The run's working directory is an empty folder:
an os-level write to the raw 'gs://bvt-test/run' string would land in 'gs:/bvt-test/run' there, and
an os-level read would find nothing.
"""

import importlib
import json
import os
import subprocess
import sys

import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from bert_vs_transformer import config_args

BUCKET = "bvt-test"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """-> the local folder that holds the fake bucket's objects (BUCKET/<key>)."""
    store = tmp_path / "store"
    store.mkdir()

    class FakeGCS(DirFileSystem):
        protocol = ("gcs", "gs")
        cachable = False

        def __init__(self, *args, **kwargs):  # epath passes gcsfs's finalize_on_close=True
            super().__init__(path=str(store), fs=LocalFileSystem(auto_mkdir=True))

        def open(self, path, mode="rb", *args, **kwargs):
            if "a" in mode or "+" in mode:
                raise OSError(f"{path}: an object store cannot append to or update an object (mode {mode!r})")
            return super().open(path, mode, *args, **kwargs)

    from orbax.checkpoint._src.path import gcs_utils

    def file_kvstore(path):  # orbax's tensorstore spec for gs://bucket/key, on the stand-in's folder
        bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
        return {"driver": "file", "path": str(store / bucket / key)}

    # fsspec's registry (fsspec.register_implementation's dict) maps a protocol to its class; setitem
    # puts the previous entry back afterwards
    registry = importlib.import_module("fsspec.registry")._registry
    monkeypatch.setitem(registry, "gcs", FakeGCS)
    monkeypatch.setitem(registry, "gs", FakeGCS)
    monkeypatch.setenv("EPATH_USE_TF", "false")  # epath's gs:// via fsspec even where TensorFlow is installed
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", file_kvstore)
    # orbax asks the GCS API whether a bucket has hierarchical namespaces (a flat bucket here)
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem per protocol
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield store
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    assert not os.listdir(cwd), f"something wrote the raw gs:// path with os-level calls: {os.listdir(cwd)}"


def _config(steps):
    config = config_args.load("configs/transformer.py:tiny")
    config.data.dataset = "synthetic"
    config.data.update(batch_size=16, max_len=12)
    config.model.update(vocab_size=96, d_model=32, d_ff=64)
    config.num_train_steps = steps
    config.log_every_steps = 1
    config.eval_every_steps = steps
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 1  # orbax deletes the older checkpoint on the bucket
    return config


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_training_run_on_a_gs_workdir(fake_gcs):
    from experiments import status
    from bert_vs_transformer.training import checkpoints, loop, run_loading

    workdir = f"gs://{BUCKET}/run"
    run = fake_gcs / BUCKET / "run"
    assert loop.train_and_evaluate(_config(4), workdir)

    assert [r["step"] for r in _records(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["num_train_steps"] == 4
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 100  # the scalars of 4 steps, uploaded at each flush
    # orbax's GCS layout: written in place, complete once commit_success.txt is there; keep 1 deleted step 2
    assert sorted(os.listdir(run / "checkpoints")) == ["4"]
    assert (run / "checkpoints" / "4" / "commit_success.txt").is_file()

    # a checkpoint cut off midway on GCS (no commit file) counts neither for resuming nor for status
    (run / "checkpoints" / "6").mkdir()
    (run / "checkpoints" / "6" / "partial").write_text("x")
    assert checkpoints.saved_steps(workdir) == [4]
    assert status.checkpoint_steps(workdir) == [4]
    assert status.run_status(workdir).finished
    (run / "checkpoints" / "6" / "partial").unlink()
    (run / "checkpoints" / "6").rmdir()

    # a record logged after the last checkpoint by a run that was then killed: the resume drops it
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": -1.0}) + "\n")
    # resumed from the bucket's checkpoint; metrics.jsonl uploaded whole, each step once
    assert loop.train_and_evaluate(_config(6), workdir)
    losses = {r["step"]: r["loss"] for r in _records(run / "metrics.jsonl") if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and losses[5] != -1.0
    assert len([r for r in _records(run / "metrics.jsonl") if "loss" in r]) == 6
    assert sorted(os.listdir(run / "checkpoints")) == ["6"]
    assert status.run_status(workdir, 6).finished and not status.run_status(workdir, 8).finished

    config, params, step = run_loading.load_run(workdir)
    assert step == 6 and config.num_train_steps == 6 and params
    # select_step reads the bucket's metrics.jsonl and checkpoints as it reads the same files on local disk
    step, why = checkpoints.select_step(workdir, "eval_nll")
    assert "no eval_nll evaluations" not in why
    assert (step, why) == checkpoints.select_step(str(run), "eval_nll")


def test_profile_is_copied_to_a_gs_workdir(fake_gcs):
    import jax.numpy as jnp
    import ml_collections

    from bert_vs_transformer.training import profiling

    config = ml_collections.ConfigDict(dict(profile_steps=1, profile_start_step=0))
    profiler = profiling.StepProfiler(config, f"gs://{BUCKET}/run", first_step=0, is_main=True)
    profiler.before(0)
    assert profiler.after(1, jnp.ones((64, 64)) @ jnp.ones((64, 64)))
    local = profiler.dir
    assert not os.path.exists(local)  # the local trace folder is removed once copied
    copied = sorted(str(p.relative_to(fake_gcs / BUCKET / "run")) for p in (fake_gcs / BUCKET / "run").rglob("*")
                    if p.is_file())
    assert "profile/summary.md" in copied and any(p.endswith(".xplane.pb") for p in copied), copied


def test_tokenizer_and_instance_caches_on_gs(fake_gcs):
    import numpy as np

    from bert_vs_transformer.data import pretraining_examples as pe
    from bert_vs_transformer.data import pretraining_pipeline, sentencepiece_tokenizer, wordpiece

    texts = [f"the {w} sat on the mat with {v} cats" for w in ("cat", "dog", "bird") for v in range(40)]
    calls = []

    def texts_fn():
        calls.append(1)
        return texts

    kw = dict(vocab_size=60, cache_key={"corpus": "toy"}, cache_dir=f"gs://{BUCKET}/cache", num_threads=1)
    first = sentencepiece_tokenizer.train_or_load(texts_fn, **kw)
    again = sentencepiece_tokenizer.train_or_load(texts_fn, **kw)
    assert len(calls) == 1 and again.encode(texts[0]) == first.encode(texts[0])
    assert [p.name for p in (fake_gcs / BUCKET / "cache").glob("sentencepiece-*/spm.model")]

    # the pretraining instances' cache file: uploaded whole, read back through epath
    source = pe.InstanceSource(np.arange(10), [0, 4, 10], [2, 3], [False, True], [4, 6])
    path = f"gs://{BUCKET}/cache/pretraining-instances-x.npz"
    pretraining_pipeline._save(source, path, {"key": 1})
    back = pretraining_pipeline._load(path)
    assert back.tokens.tolist() == list(range(10)) and back.offsets.tolist() == [0, 4, 10]
    assert back.is_random_next.tolist() == [False, True] and back.target_seq_length.tolist() == [4, 6]
    assert json.loads((fake_gcs / BUCKET / "cache" / "pretraining-instances-x.json").read_text()) == {"key": 1}

    wp = wordpiece.train_wordpiece(texts, 40, f"gs://{BUCKET}/cache")
    assert wp.vocab_path.startswith(f"gs://{BUCKET}/cache/wordpiece-")
    cached = wordpiece.train_wordpiece(iter(texts), 40, f"gs://{BUCKET}/cache")  # read back, not retrained
    assert cached.vocab_path == wp.vocab_path and cached.encode(texts[5]) == wp.encode(texts[5])


@pytest.mark.parametrize("workdir, expected", [
    ("nope://bucket/run", "etils.epath reads no nope:// paths"),
    ("gs://bucket/run", "pip install 'bert_vs_transformer[gcs]'"),
])
def test_main_refuses_a_workdir_it_cannot_reach(tmp_path, workdir, expected):
    if workdir.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401
            pytest.skip("gcsfs is installed: gs:// is reachable")
        except ImportError:
            pass
    config = os.path.join(config_args.REPO_ROOT, "configs", "transformer.py") + ":tiny"
    proc = subprocess.run([sys.executable, "-m", "bert_vs_transformer.main", f"--config={config}",
                           f"--workdir={workdir}"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=config_args.REPO_ROOT,
                                   EPATH_USE_TF="false"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --workdir=") and expected in last and "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)
