"""The causal LM task (tasks/lm.py): the encoder never looks ahead, the loss is next-token
cross-entropy computed by hand from the model's logits, bad input is a one-line error naming the
field, and configs/lm.py:tiny trains end to end on the real PTB and on synthetic blocks."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.config_args import REPO_ROOT
from bert_vs_transformer.data import lm_pipeline


def _cfg(**model):
    config = config_args.load("configs/lm.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size, config.data.max_seq_len = 2, 8
    config.model.update(vocab_size=50, d_model=32, num_heads=2, d_ff=64, max_len=8, **model)
    return config


def _task_and_params(config):
    task = tasks.get_task(config)
    batch = task.dummy_batch(2)
    return task, nn.unbox(task.model(True).init(jax.random.PRNGKey(0), *task.init_args(batch))["params"])


def test_logits_at_t_ignore_tokens_after_t():
    task, params = _task_and_params(_cfg())
    model = task.model(True)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 50, size=(2, 8)), jnp.int32)
    base = np.asarray(model.apply({"params": params}, ids))
    for t in (0, 3, 6):
        other = ids.at[:, t + 1:].set((ids[:, t + 1:] + 7) % 47 + 3)
        changed = np.asarray(model.apply({"params": params}, other))
        np.testing.assert_allclose(changed[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(changed[:, t + 1:], base[:, t + 1:], atol=1e-3)


def test_loss_is_next_token_cross_entropy_by_hand():
    task, params = _task_and_params(_cfg())
    tokens = np.array([5, 9, 12, 7, 30, 1, 44, 6, 18, 1, 22], np.int32)  # 11 tokens -> 2 blocks of 8
    inputs, targets = lm_pipeline.to_blocks(tokens, 8)
    np.testing.assert_array_equal(inputs[0], tokens[:8])
    np.testing.assert_array_equal(targets[0], tokens[1:9])
    np.testing.assert_array_equal(targets[1], [1, 22] + [0] * 6)  # the last block: padding after the stream
    batch = {"input_ids": np.concatenate([inputs, np.zeros((1, 8), np.int32)]),
             "targets": np.concatenate([targets, np.zeros((1, 8), np.int32)]),
             "example_weights": np.array([1, 1, 0], np.float32)}
    batch["targets"][2] = 3  # a padding row's targets must not count

    loss, sums = task.loss(params, batch, task.normalizers(batch), None, deterministic=True)
    logits = np.asarray(task.model(True).apply({"params": params}, batch["input_ids"]), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), -1, keepdims=True))
    nll = [-logp[r, i, batch["targets"][r, i]] for r in range(2) for i in range(8) if batch["targets"][r, i]]
    assert len(nll) == 10 == float(sums["targets"])  # every token after the first, once
    assert float(loss) == pytest.approx(np.mean(nll), rel=1e-5)
    metrics = task.summarize(jax.device_get(sums))
    assert metrics["loss"] == pytest.approx(np.mean(nll), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(np.exp(np.mean(nll)), rel=1e-5)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert task.forward_flops(2)["output_projection"] == 2 * 32 * 50 * 2 * 8  # every position predicted


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match=r"config\.model\.causal"):
        tasks.get_task(_cfg(causal=False))
    config = _cfg()
    config.data.dataset = "multi30k"
    with pytest.raises(ValueError, match=r"config\.data\.dataset='multi30k'"):
        lm_pipeline.check(config)
    config.data.dataset, config.data.eval_split = "ptb", "dev2"
    with pytest.raises(ValueError, match=r"config\.data\.eval_split='dev2' is not a split of ptb"):
        lm_pipeline.check(config)
    with pytest.raises(ValueError, match="dataset='wt103'"):
        config_args.load("configs/lm.py:tiny,dataset=wt103")


def _run(workdir, *overrides, **env):
    # compute-bound (the whole PTB validation split is evaluated): XLA's default optimisation, not
    # conftest's -O0 (20 s against 26 s with a warm compilation cache)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", XLA_FLAGS="", **env)
    env.setdefault("BVT_JAX_CACHE_DIR", os.path.join(REPO_ROOT, ".jax_cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = env["BVT_JAX_CACHE_DIR"]
    cmd = [sys.executable, "-m", "bert_vs_transformer.main", "--config=configs/lm.py:tiny", f"--workdir={workdir}",
           "--config.num_train_steps=20", "--config.eval_every_steps=20", "--config.checkpoint_every_steps=20",
           "--config.data.eval_batch_size=256", "--config.model.vocab_size=1000", "--config.model.d_model=64",
           "--config.model.d_ff=256", *overrides]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r for r in records if "eval_perplexity" in r]
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    assert evals and np.isfinite(evals[-1]["eval_perplexity"]) and "eval_accuracy" in evals[-1], evals
    return evals[-1]


def test_tiny_trains_on_real_ptb_and_synthetic(tmp_path):
    data_dir = os.environ.get("BVT_DATA_DIR")
    assert data_dir, "set BVT_DATA_DIR to the shared datasets (CI: ../shared/data)"
    ev = _run(tmp_path / "ptb", BVT_DATA_DIR=os.path.abspath(data_dir), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    assert ev["eval_perplexity"] == pytest.approx(np.exp(ev["eval_loss"]), rel=1e-6)
    assert ev["eval_perplexity"] < 1000  # below the uniform guess over the 1,000 pieces
    _run(tmp_path / "synthetic", "--config.data.dataset=synthetic")
