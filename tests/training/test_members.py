"""Member runs (members.py): seeds x learning rates vmapped in one program, each member checked
against the single run it stands for (its own init, dropout, data order, clipping and lr).

Tiny RTE fine-tuning from scratch on the real data (BVT_DATA_DIR), 8 simulated devices."""

import json
import os
import shutil

import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.training import member_group, members
from bert_vs_transformer.training import run_loading

TINY_MODEL = dict(d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1)
STEPS = 4


def _config(tmp_path, **fields):
    assert os.environ.get("BVT_DATA_DIR"), "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    config = config_args.load("configs/glue.py:task=rte,init=scratch,max_seq_len=48,batch_size=16")
    config.model.update(TINY_MODEL)
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = STEPS
    config.log_every_steps = 1
    config.optimizer.warmup_steps = 1
    config.data.tfds_data_dir = str(tmp_path.parent / "tfds")  # shared by the runs below
    config.data.num_threads = 0
    config.async_checkpointing = False
    for k, v in fields.items():
        setattr(config, k, v)
    return config


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _params(workdir):

    _, params, _ = run_loading.load_run(str(workdir))
    return params


def _leaves(tree):
    """{'/a/b': array} of a nested dict of arrays."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"".join(f"/{p.key}" for p in path): np.asarray(v) for path, v in flat}


def test_parse_members():
    config = config_args.load("configs/glue.py:task=rte,init=scratch,seed=5,lr=2e-5")
    assert members.parse(config) is None
    config.member_seeds = "0,1,2"
    assert [m.name for m in members.parse(config)] == ["lr2e-05-seed0", "lr2e-05-seed1", "lr2e-05-seed2"]
    config.member_lrs = "1e-4, 3e-4"
    got = members.parse(config)
    assert len(got) == 6 and got[0] == members.Member(0, 1e-4) and got[-1] == members.Member(2, 3e-4)
    config.member_seeds = ""
    assert [(m.seed, m.learning_rate) for m in members.parse(config)] == [(5, 1e-4), (5, 3e-4)]
    config.member_lrs = "1e-4,1e-4"
    with pytest.raises(ValueError, match="repeat"):
        members.parse(config)
    config.member_lrs = "1e-4,1.0000001e-4"  # distinct numbers, one directory name
    with pytest.raises(ValueError, match="print alike"):
        members.parse(config)
    config.member_lrs = "fast"
    with pytest.raises(ValueError, match="comma-separated numbers"):
        members.parse(config)


def test_stack_batches_pads_to_the_widest():
    a = {"input_ids": np.array([[5, 6, 0]], np.int32), "label": np.array([1], np.int32)}
    b = {"input_ids": np.array([[7, 8, 9, 4, 0]], np.int32), "label": np.array([0], np.int32)}
    out = member_group.stack_batches([a, b])
    assert out["input_ids"].shape == (2, 1, 5) and out["label"].shape == (2, 1)
    np.testing.assert_array_equal(out["input_ids"][0, 0], [5, 6, 0, 0, 0])
    np.testing.assert_array_equal(out["input_ids"][1, 0], [7, 8, 9, 4, 0])


def test_members_equal_their_single_runs(devices, tmp_path):
    """Four members (seeds 0, 1 x lrs 1e-3, 3e-3); two of them rerun alone: the same loss at every
    step, the same dev metrics and the same final parameters."""
    from bert_vs_transformer.cli import glue_grid
    from bert_vs_transformer.training import loop as train

    group_dir = tmp_path / "group"
    config = _config(tmp_path, member_seeds="0,1", member_lrs="1e-3,3e-3")
    config.checkpoint_every_steps, config.keep_checkpoints = 2, 3
    last = train.train_and_evaluate(config, str(group_dir))
    assert last["members"] == 4 and "eval_accuracy" in last
    stacked = _params(group_dir)
    names = [m.name for m in members.parse(config)]
    assert names == ["lr0.001-seed0", "lr0.001-seed1", "lr0.003-seed0", "lr0.003-seed1"]
    for k, name in enumerate(names):
        member_dir = group_dir / "members" / name
        assert glue_grid.run_result(str(member_dir)) is not None  # a finished run, as glue_grid reads it

    # the members differ from each other (seed: init and data; lr: the update size)
    first = _leaves(stacked)
    assert all(v.shape[0] == 4 for v in first.values())
    w = first["/classifier/kernel"]
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[0], w[2])

    # interrupted after step 2 and resumed: the same members (every member's data stream restored)
    shutil.rmtree(group_dir / "checkpoints" / str(STEPS))
    train.train_and_evaluate(config, str(group_dir))
    resumed = _leaves(_params(group_dir))
    for path, v in resumed.items():
        np.testing.assert_allclose(v, first[path], rtol=1e-6, atol=1e-7, err_msg=f"resumed {path}")
    assert [r["step"] for r in _records(group_dir / "members" / names[1] / "metrics.jsonl")] == [1, 2, 3, 4, 4]

    for k, (seed, lr) in [(0, (0, 1e-3)), (3, (1, 3e-3))]:
        single_dir = tmp_path / f"single{k}"
        c = _config(tmp_path, seed=seed)
        c.optimizer.learning_rate = lr
        train.train_and_evaluate(c, str(single_dir))
        ours = _records(group_dir / "members" / names[k] / "metrics.jsonl")
        theirs = _records(single_dir / "metrics.jsonl")
        assert [r["step"] for r in ours] == [r["step"] for r in theirs]
        for a, b in zip(ours, theirs):
            for key in ("loss", "learning_rate", "grad_norm", "eval_loss"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (k, a["step"], key)
            for key in ("eval_accuracy", "eval_examples"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], abs=1.5 / 277), (k, a["step"], key)
        single = _leaves(_params(single_dir))
        assert set(single) == set(first)
        for path, v in single.items():
            np.testing.assert_allclose(first[path][k], v, rtol=1e-4, atol=1e-5, err_msg=f"member {k} {path}")


def test_member_checkpoint_refuses_a_single_run_config(devices, tmp_path):
    from bert_vs_transformer.training import loop as train

    config = _config(tmp_path, member_seeds="0,1")
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 1
    train.train_and_evaluate(config, str(tmp_path / "run"))
    single = _config(tmp_path)
    single.num_train_steps = 2
    with pytest.raises(train.ConfigError, match="member axis"):
        train.train_and_evaluate(single, str(tmp_path / "run"))


def test_glue_grid_vmap_runs_the_grid_as_one_program(devices, tmp_path):
    """glue_grid --vmap: one main.py process for 2 lrs x 2 seeds, the usual report from its members;
    export_hf takes one member."""
    from bert_vs_transformer.cli import export_hf, glue_grid

    root = tmp_path / "grid"
    tiny = [f"--config.model.{k}={v}" for k, v in TINY_MODEL.items()]
    argv = ["--task=rte", "--init=scratch", f"--root={root}", "--lrs=1e-3,3e-3", "--seeds=2", "--epochs=0.02",
            "--batch_size=16", "--max_seq_len=48", "--vmap", "--", *tiny,
            f"--config.data.tfds_data_dir={tmp_path.parent / 'tfds'}"]
    assert glue_grid.main(argv) == 0
    with open(root / "rte" / "scratch" / "results.json") as f:
        summary = json.load(f)
    assert [(r["lr"], r["seed"], r["status"]) for r in summary["runs"]] == [
        (1e-3, 0, "done"), (1e-3, 1, "done"), (3e-3, 0, "done"), (3e-3, 1, "done")]
    assert summary["best"]["seeds"] == 2 and 0.0 <= summary["best"]["accuracy"] <= 1.0
    assert all(r["workdir"].startswith(str(root / "rte" / "scratch" / "vmap" / "members")) for r in summary["runs"])
    group = root / "rte" / "scratch" / "vmap"
    with open(group / "config.json") as f:
        assert json.load(f)["member_lrs"] == "0.003,0.001"
    # a second call finds every member finished and starts nothing
    logs = []
    status = glue_grid.run_vmapped(glue_grid.grid_points("rte", "scratch", str(root), (1e-3, 3e-3), range(2), 0.02,
                                                         16, 48, vmap=True), log=logs.append)
    assert set(status.values()) == {"done"} and "skipped" in logs[0]

    with pytest.raises(ValueError, match="member run: pass --member"):
        export_hf.export_run(str(group), str(tmp_path / "hf"))
    hf = export_hf.export_run(str(group), str(tmp_path / "hf"), member=1)
    assert hf["num_labels"] == 2 and os.path.isfile(tmp_path / "hf" / "model.safetensors")


def test_two_processes_match_one(devices, tmp_path):
    """A member run over 2 processes x 4 devices (localhost, gloo) equals the same run in one
    process x 8: each process feeds its rows of every member's batch (P(None, data x fsdp))."""
    import socket
    import subprocess
    import sys

    from bert_vs_transformer.training import loop as train
    from bert_vs_transformer.config_args import REPO_ROOT

    fields = dict(member_seeds="0,1", member_lrs="1e-3")
    config = _config(tmp_path, **fields)
    config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
    train.train_and_evaluate(config, str(tmp_path / "one"))  # also prepares the shared tfds dir

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    overrides = [f"--config.model.{k}={v}" for k, v in TINY_MODEL.items()] + [
        f"--config.{k}={v}" for k, v in dict(
            num_train_steps=3, eval_every_steps=3, checkpoint_every_steps=3, log_every_steps=1,
            **fields).items()] + [
        "--config.optimizer.warmup_steps=1", f"--config.data.tfds_data_dir={tmp_path.parent / 'tfds'}",
        "--config.data.num_threads=0"]
    two = tmp_path / "two"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "bert_vs_transformer.main",
         "--config=configs/glue.py:task=rte,init=scratch,max_seq_len=48,batch_size=16", f"--workdir={two}",
         *overrides, f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]

    for name in ("lr0.001-seed0", "lr0.001-seed1"):
        ours = _records(two / "members" / name / "metrics.jsonl")
        theirs = _records(tmp_path / "one" / "members" / name / "metrics.jsonl")
        assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [1, 2, 3, 3]
        for a, b in zip(ours, theirs):
            for key in ("loss", "grad_norm", "eval_loss", "eval_accuracy", "eval_examples"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (name, a["step"], key)
    one, two_p = _leaves(_params(tmp_path / "one")), _leaves(_params(two))
    for path, v in one.items():
        np.testing.assert_allclose(two_p[path], v, rtol=1e-5, atol=1e-6, err_msg=path)


def test_a_diverging_member_stops_alone(devices, tmp_path):
    """lr 1e12 turns its member's loss non-finite: that member stops (an error record, no final eval,
    glue_grid reports it failed) and the lr 1e-3 member finishes as its single run; resume keeps it so."""
    from bert_vs_transformer.cli import glue_grid
    from bert_vs_transformer.training import loop as train

    config = _config(tmp_path, member_seeds="0", member_lrs="1e-3,1e12")
    config.checkpoint_every_steps, config.keep_checkpoints = 2, 3
    group_dir = tmp_path / "group"
    last = train.train_and_evaluate(config, str(group_dir))
    assert last["members"] == 1 and "eval_accuracy" in last
    good, bad = (str(group_dir / "members" / n) for n in ("lr0.001-seed0", "lr1e+12-seed0"))
    assert glue_grid.run_result(good) is not None and glue_grid.run_result(bad) is None
    errors = [r for r in _records(os.path.join(bad, "metrics.jsonl")) if "error" in r]
    assert len(errors) == 1 and "non-finite" in errors[0]["error"] and errors[0]["step"] <= STEPS

    single_dir = tmp_path / "single"
    c = _config(tmp_path, seed=0)
    c.optimizer.learning_rate = 1e-3
    train.train_and_evaluate(c, str(single_dir))
    ours, theirs = _records(os.path.join(good, "metrics.jsonl")), _records(single_dir / "metrics.jsonl")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs):
        for key in ("loss", "grad_norm", "eval_loss", "eval_accuracy"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)

    # resumed from step 2: the stopped member stays stopped (once), the other one ends as before
    shutil.rmtree(group_dir / "checkpoints" / str(STEPS))
    train.train_and_evaluate(config, str(group_dir))
    assert [r for r in _records(os.path.join(bad, "metrics.jsonl")) if "error" in r] == errors
    assert glue_grid.run_result(good)["eval_accuracy"] == pytest.approx(ours[-1]["eval_accuracy"])
    md, summary = glue_grid.report([glue_grid.Point("rte", "scratch", lr, 0, d, "") for lr, d in ((1e-3, good), (1e12, bad))])
    assert [r["status"] for r in summary["runs"]][0] == "done"
    assert summary["runs"][1]["status"].startswith("failed: member lr1e+12-seed0: non-finite")
