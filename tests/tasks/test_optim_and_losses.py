"""Optimisers, schedules and losses against the papers' formulas and hand computations."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.data import synthetic as synthetic_data
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import optim, train_step
from bert_vs_transformer.tasks import losses


def test_vaswani_schedule_formula():
    sched = optim.rsqrt_schedule(d_model=512, warmup_steps=4000)
    for step in [1, 100, 3999, 4000, 4001, 100_000]:
        expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        np.testing.assert_allclose(float(sched(step - 1)), expected, rtol=1e-6)  # optax counts from 0


def test_bert_warmup_linear_decay():
    sched = optim.warmup_linear_decay(1e-4, warmup_steps=10, total_steps=110)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 60, 110)], [0, 5e-5, 1e-4, 5e-5, 0], atol=1e-12)


def test_adamw_skips_layernorm_and_biases():
    config = config_args.load("configs/bert.py:tiny")
    params = {"bert": {"encoder": {"layers_0": {"attention": {"query": {"kernel": 1.0, "bias": 1.0}},
                                               "attention_norm": {"scale": 1.0, "bias": 1.0}}},
                       "token_embed": {"embedding": 1.0}},
              "mlm": {"output_bias": 1.0, "transform_norm": {"scale": 1.0}}}
    mask = optim.decay_mask(params)
    assert mask["bert"]["encoder"]["layers_0"]["attention"]["query"] == {"kernel": True, "bias": False}
    assert mask["bert"]["encoder"]["layers_0"]["attention_norm"] == {"scale": False, "bias": False}
    assert mask["bert"]["token_embed"]["embedding"] is True
    assert mask["mlm"] == {"output_bias": False, "transform_norm": {"scale": False}}
    # With zero gradients only decayed weights move: w <- w - lr * wd * w.
    tx, _ = optim.make_optimizer(dict(config.optimizer, schedule="constant", learning_rate=0.1, grad_clip_norm=0.0),
                                 128, 10)
    p = jax.tree_util.tree_map(lambda x: jnp.full((2,), x), params)
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, p), tx.init(p), p)
    new = jax.tree_util.tree_map(lambda a, b: a + b, p, updates)
    np.testing.assert_allclose(new["bert"]["encoder"]["layers_0"]["attention"]["query"]["kernel"], 1 - 0.1 * 0.01)
    np.testing.assert_allclose(new["bert"]["encoder"]["layers_0"]["attention"]["query"]["bias"], 1.0)


def test_global_norm_clipping():
    tx, _ = optim.make_optimizer(
        {"name": "adam", "b1": 0.9, "b2": 0.98, "eps": 1e-9, "schedule": "constant", "learning_rate": 1.0,
         "warmup_steps": 1, "grad_clip_norm": 1.0}, 8, 10)
    g = {"a": jnp.array([3.0, 4.0])}
    clipped, _ = tx.update(g, tx.init(g), g)  # first Adam step ~ -lr * sign(g) either way
    assert np.all(np.asarray(clipped["a"]) < 0)


def test_label_smoothed_cross_entropy_by_hand():
    logits = jnp.array([[2.0, 0.5, -1.0, 0.0]])
    label = jnp.array([0])
    eps, v = 0.1, 4
    logp = np.asarray(jax.nn.log_softmax(logits))[0]
    q = np.full(v, eps / (v - 1))
    q[0] = 1 - eps
    expected = -(q * logp).sum() + (q * np.log(q)).sum()  # KL(q || p): zero at p = q
    np.testing.assert_allclose(float(losses.cross_entropy(logits, label, eps)[0]), expected, rtol=1e-5)
    perfect = jnp.log(jnp.asarray(q))[None]
    np.testing.assert_allclose(float(losses.cross_entropy(perfect, label, eps)[0]), 0.0, atol=1e-5)


def test_bf16_training_keeps_fp32_master_weights(devices):
    config = config_args.load("configs/bert.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size, config.data.max_seq_len, config.data.max_predictions_per_seq = 8, 16, 4
    config.model.vocab_size, config.model.dtype = 64, "bfloat16"
    config.optimizer.moments_dtype = "bfloat16"
    mesh = partitioning.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    task = tasks.get_task(config)
    tx, schedule = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
    state, shardings = train_step.init_state(task, tx, 8, 0, mesh)
    step = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule), shardings, mesh)
    state, metrics = step(state, partitioning.global_batch_from_local(synthetic_data.global_batch(config, 0), mesh),
                          jax.random.PRNGKey(0))
    assert np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype("float32")}
    leaves = jax.tree_util.tree_leaves(state.opt_state)
    assert any(x.dtype == jnp.bfloat16 for x in leaves), "moments_dtype=bfloat16 not applied"


def test_config_has_every_contract_field():
    for spec in ("configs/transformer.py:tiny", "configs/bert.py:base"):
        config = config_args.load(spec)
        for field in ("seed", "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                      "mesh", "model", "data", "optimizer"):
            assert field in config, (spec, field)
        assert isinstance(config.model, ml_collections.ConfigDict)
