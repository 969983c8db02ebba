"""The sharded train step against itself on one device: the same loss and updated parameters on
meshes (8,1,1), (2,2,2), (1,8,1) and (1,1,1); fsdp shards hold 1/8 of each sharded parameter;
gradient accumulation equals the large batch and reduces gradients once per step, after its loop; a
checkpoint saved on 8-way fsdp restores onto one device."""

import jax
import numpy as np
import pytest

from _hlo import reductions_in_and_out_of_loops

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.data import synthetic as synthetic_data
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import checkpoints, optim, train_step

MESHES = [(8, 1, 1), (2, 2, 2), (1, 8, 1), (1, 1, 1)]


def _config(family: str, dropout: float = 0.1):
    config = config_args.load(f"configs/{family}.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size = 16
    m = config.model
    m.vocab_size, m.d_model, m.num_heads, m.d_ff = 96, 32, 4, 64
    m.dropout_rate = dropout
    m.attention_dropout_rate = dropout if family == "bert" else 0.0
    if family == "transformer":
        config.data.max_len = 12
    else:
        config.data.max_seq_len, config.data.max_predictions_per_seq = 16, 4
    # Adam's first update is ~lr * sign(g): on gradients that are zero in exact arithmetic (the
    # attention key biases, by softmax shift invariance) eps = 1e-9 turns float rounding noise into
    # +-lr. A larger eps keeps that noise at its own size, so the comparison tests sharding only.
    config.optimizer.eps = 1e-6
    # The noise that survives is proportional to the step size: pin it (BERT tiny's demo lr is 1e-3).
    if family == "bert":
        config.optimizer.learning_rate = 1e-4
    return config


def _run(config, mesh_shape, accum=1, steps=2):
    devices = jax.devices()[: int(np.prod(mesh_shape))]
    mesh = partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, mesh_shape)), devices)
    task = tasks.get_task(config)
    tx, schedule = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
    state, shardings = train_step.init_state(task, tx, config.data.batch_size, config.seed, mesh)
    step = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule, accum), shardings, mesh)
    losses = []
    for i in range(steps):
        batch = partitioning.global_batch_from_local(synthetic_data.global_batch(config, i), mesh)
        state, metrics = step(state, batch, jax.random.PRNGKey(7))
        losses.append(float(metrics["loss"]))
    return losses, state


def _max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("family", ["transformer", "bert"])
def test_meshes_agree(devices, family, capfd):
    config = _config(family)
    ref_losses, ref_state = _run(config, (1, 1, 1))
    ref_params = jax.device_get(ref_state.params)
    for shape in MESHES[:-1]:
        capfd.readouterr()
        losses, state = _run(config, shape)
        # XLA's SPMD partitioner warns (on stderr) where it can only reshard by replicating a tensor;
        # the embedding lookups used to (layers.lookup). A cached compilation prints nothing.
        assert "Involuntary full rematerialization" not in capfd.readouterr().err, shape
        np.testing.assert_allclose(losses, ref_losses, atol=1e-5, err_msg=str(shape))
        diff = _max_diff(jax.device_get(state.params), ref_params)
        print(f"{family} mesh {shape}: losses {losses}, max param diff vs 1 device {diff:.2e}")
        assert diff <= 1e-5, (shape, diff)
        if shape == (1, 8, 1):
            _check_fsdp_shards(state.params)


def _check_fsdp_shards(params):
    """Under fsdp=8 every parameter sharded over 'fsdp' holds 1/8 of its elements per device."""
    sharded = 0
    for leaf in jax.tree_util.tree_leaves(params):
        spec = leaf.sharding.spec
        if any(p == "fsdp" or (isinstance(p, tuple) and "fsdp" in p) for p in spec):
            sharded += 1
            for shard in leaf.addressable_shards:
                assert shard.data.size * 8 == leaf.size, (leaf.shape, spec, shard.data.shape)
    assert sharded > 0


@pytest.mark.parametrize("family", ["transformer", "bert"])
def test_gradient_accumulation_equals_large_batch(devices, family):
    config = _config(family, dropout=0.0)  # microbatches draw their own dropout masks
    full_losses, full = _run(config, (2, 1, 1), accum=1)
    acc_losses, acc = _run(config, (2, 1, 1), accum=4)
    np.testing.assert_allclose(acc_losses, full_losses, atol=1e-5)
    diff = _max_diff(jax.device_get(acc.params), jax.device_get(full.params))
    print(f"{family}: accumulation x4 vs full batch, max param diff {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("family", ["transformer", "bert"])
@pytest.mark.parametrize("shape", [(8, 1, 1), (1, 8, 1)], ids=["data8", "fsdp8"])
def test_gradient_accumulation_reduces_once_per_step(devices, family, shape, capfd):
    """Under grad_accum_steps=4 on data=8 or fsdp=8 no parameter-sized all-reduce or reduce-scatter runs
    inside the accumulation loop (scalar metric sums may): the gradients are reduced after it."""
    config = _config(family)
    config.data.batch_size = 32  # 4 microbatches x 8 shards
    mesh = partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, shape)), devices)
    task = tasks.get_task(config)
    tx, schedule = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
    state, shardings = train_step.abstract_state(task, tx, config.data.batch_size, config.seed, mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=partitioning.batch_sharding(mesh))
             for k, v in synthetic_data.global_batch(config, 0).items()}
    step = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule, 4), shardings, mesh)
    capfd.readouterr()
    with partitioning.activate(mesh):
        hlo = step.jitted.lower(state, batch, jax.random.PRNGKey(0)).compile().as_text()
    assert "Involuntary full rematerialization" not in capfd.readouterr().err
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    inside, outside = reductions_in_and_out_of_loops(hlo)
    print(f"{family} mesh {shape}: {num_params} parameters; elements reduced in loops {inside}, after {outside}")
    assert inside < 0.01 * num_params, (inside, num_params)
    assert outside >= num_params / 8, (outside, num_params)  # the gradients' one reduction (fsdp: 1/8 each)


def test_checkpoint_restores_onto_another_mesh(devices, tmp_path):
    config = _config("bert")
    _, state = _run(config, (1, 8, 1), steps=1)
    ckpt = checkpoints.Checkpointer(str(tmp_path), async_save=True)
    ckpt.save(1, state, {"index": 1}, config.to_dict())
    ckpt.wait()

    one = partitioning.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    task = tasks.get_task(config)
    tx, _ = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
    abstract, _ = train_step.abstract_state(task, tx, config.data.batch_size, config.seed, one)
    restored, data_state = checkpoints.Checkpointer(str(tmp_path)).restore(1, abstract)
    assert data_state == {"index": 1}
    leaf = jax.tree_util.tree_leaves(restored.params)[0]
    assert len(leaf.sharding.device_set) == 1
    assert _max_diff(jax.device_get(restored), jax.device_get(state)) == 0.0
    ckpt.close()
