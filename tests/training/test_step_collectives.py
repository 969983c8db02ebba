"""Collectives in the compiled train step (8 simulated CPU devices), counted in its HLO text.

- data=8 and fsdp=8, bf16: the tied embedding table is all-gathered once a step (fsdp), and the
  lookups and the output projection share that copy (not once in fp32 and again in bf16); its
  gradient is reduced once, not once per use.
- tensor=2: the fused Q/K/V (and cross-attention K/V) projections leave 4 activation all-reduces
  per encoder layer (2 forward, 2 backward) and 7 per decoder layer, plus a few for the embeddings
  and heads: BERT 11 where separate projections gave 19, the Transformer 27 where they gave 53.
"""

import jax
import pytest
from _hlo import collectives

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.data import synthetic
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import optim, train_step

VOCAB, D = 96, 32
LAYERS = 2


def _compiled_step(family: str, mesh_shape, dtype: str = "float32") -> str:
    config = config_args.load(f"configs/{family}.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size = 16
    m = config.model
    m.vocab_size, m.d_model, m.num_heads, m.d_ff, m.dtype = VOCAB, D, 4, 64, dtype
    m.num_encoder_layers = LAYERS
    if family == "transformer":
        config.data.max_len = 12
        m.num_decoder_layers = LAYERS
    else:
        config.data.max_seq_len, config.data.max_predictions_per_seq = 16, 4
    mesh = partitioning.make_mesh(dict(zip(partitioning.MESH_AXES, mesh_shape)), jax.devices())
    task = tasks.get_task(config)
    tx, schedule = optim.make_optimizer(config.optimizer, D, config.num_train_steps)
    state, shardings = train_step.abstract_state(task, tx, config.data.batch_size, config.seed, mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=partitioning.batch_sharding(mesh))
             for k, v in synthetic.global_batch(config, 0).items()}
    step = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule), shardings, mesh)
    with partitioning.activate(mesh):
        return step.jitted.lower(state, batch, jax.random.PRNGKey(0)).compile().as_text()


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1)], ids=["data8", "fsdp8"])
@pytest.mark.parametrize("family", ["transformer", "bert"])
def test_embedding_table_gathered_and_reduced_once(devices, family, mesh_shape):
    hlo = _compiled_step(family, mesh_shape, "bfloat16")
    found = collectives(hlo, ("all-gather", "all-reduce", "reduce-scatter"))
    gathers = [s for kind, s in found if kind == "all-gather" and s == (VOCAB, D)]
    # Its gradient, whole or as fsdp shards: the encoder and decoder lookups and the output
    # projection (3 uses in the Transformer, 2 in BERT) share one reduction.
    reductions = [s for kind, s in found if kind != "all-gather" and s in ((VOCAB, D), (VOCAB, D // 8))]
    print(f"{family} {mesh_shape}: table all-gathers {len(gathers)}, gradient reductions {len(reductions)}")
    assert len(gathers) == (1 if mesh_shape[1] == 8 else 0)
    assert len(reductions) == 1


@pytest.mark.parametrize("family,per_layer", [("bert", {"enc": 4}), ("transformer", {"enc": 4, "dec": 7})])
def test_tensor_parallel_activation_all_reduces(devices, family, per_layer):
    hlo = _compiled_step(family, (4, 1, 2))
    # Activation-shaped: [batch rows, length, d_model] (embedding and head reductions included).
    found = [s for _, s in collectives(hlo, ("all-reduce",)) if len(s) == 3 and s[-1] == D]
    layers = LAYERS * sum(per_layer.values())
    print(f"{family} tensor=2: {len(found)} activation all-reduces for {LAYERS} layers of each stack")
    assert len(found) <= layers + 5, found  # + the embeddings' and heads'
