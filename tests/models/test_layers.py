"""Layer-stack options that must not change the maths: nn.scan (stacked params) equals the
unrolled stack, remat policies give identical gradients, bf16 compute keeps fp32 master weights,
and every parameter carries logical axis names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.models import bert, convert, transformer
from bert_vs_transformer.models.model_config import ModelConfig

SRC = jnp.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
TGT = jnp.array([[1, 2, 3, 0], [4, 5, 6, 7]])


def _tiny_transformer(**kw):
    return config_args.model_config("configs/transformer.py:tiny", vocab_size=64, **kw)


def _loss(model, params, rngs=None):
    logits = model.apply({"params": params}, SRC, TGT, rngs=rngs)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 3])


@pytest.fixture(scope="module")
def unrolled():
    cfg = _tiny_transformer()
    model = transformer.EncoderDecoder(cfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), SRC, TGT)["params"])
    return cfg, model, params


def _stack(cfg, params):
    p = dict(params)
    p["encoder"] = convert.stack_layers(params["encoder"], cfg.num_encoder_layers)
    p["decoder"] = convert.stack_layers(params["decoder"], cfg.num_decoder_layers)
    return p


def test_scan_equals_unrolled(unrolled):
    cfg, model, params = unrolled
    scfg = cfg.replace(scan_layers=True)
    smodel = transformer.EncoderDecoder(scfg)
    sparams = _stack(cfg, params)
    # The scanned module initialises to the same tree structure we build by stacking.
    init_shapes = jax.tree_util.tree_map(jnp.shape, nn.unbox(smodel.init(jax.random.PRNGKey(0), SRC, TGT)["params"]))
    assert init_shapes == jax.tree_util.tree_map(jnp.shape, sparams)
    np.testing.assert_allclose(
        np.asarray(smodel.apply({"params": sparams}, SRC, TGT)),
        np.asarray(model.apply({"params": params}, SRC, TGT)), atol=1e-5,
    )
    g = jax.grad(lambda p: _loss(model, p))(params)
    sg = jax.grad(lambda p: _loss(smodel, p))(sparams)
    for a, b in zip(jax.tree_util.tree_leaves(_stack(cfg, g)), jax.tree_util.tree_leaves(sg)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("policy", ["full", "dots", "save_attention_out"])
def test_remat_keeps_gradients(unrolled, policy):
    cfg, model, params = unrolled
    rmodel = transformer.EncoderDecoder(cfg.replace(remat_policy=policy))
    g = jax.grad(lambda p: _loss(model, p))(params)
    rg = jax.grad(lambda p: _loss(rmodel, p))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(rg)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_dropout_is_seeded_and_active(unrolled):
    cfg, _, params = unrolled
    train = transformer.EncoderDecoder(cfg, deterministic=False)
    a = _loss(train, params, {"dropout": jax.random.PRNGKey(1)})
    b = _loss(train, params, {"dropout": jax.random.PRNGKey(1)})
    c = _loss(train, params, {"dropout": jax.random.PRNGKey(2)})
    assert a == b and a != c


def test_bf16_compute_with_fp32_master_weights():
    cfg = config_args.model_config("configs/bert.py:tiny", vocab_size=64)
    model = bert.BertForPreTraining(cfg)
    ids = jnp.array([[2, 5, 6, 3, 0, 0], [2, 7, 8, 9, 10, 3]])
    params = nn.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
    bcfg = cfg.replace(dtype="bfloat16")
    bparams = nn.unbox(bert.BertForPreTraining(bcfg).init(jax.random.PRNGKey(0), ids)["params"])
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(bparams))
    hidden, _ = bert.encode(bcfg, params, ids, None, ids != 0)
    assert hidden.dtype == jnp.bfloat16
    ref, _ = bert.encode(cfg, params, ids, None, ids != 0)
    valid = np.asarray(ids != 0)
    err = np.abs(np.asarray(hidden, np.float32) - np.asarray(ref))[valid].max()
    assert err < 0.1, err  # bf16 has ~3 significant digits; LayerNorm outputs are O(1)
    mlm, nsp = bert.pretraining_logits(bcfg, params, ids, None, ids != 0)
    assert mlm.dtype == jnp.float32 and nsp.dtype == jnp.float32


@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_logical_axis_names(scan):
    for cfg, model, args in [
        (_tiny_transformer(scan_layers=scan), transformer.EncoderDecoder, (SRC, TGT)),
        (config_args.model_config("configs/bert.py:tiny", vocab_size=64, scan_layers=scan),
         bert.BertForPreTraining, (SRC,)),
    ]:
        boxed = model(cfg).init(jax.random.PRNGKey(0), *args)["params"]
        leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        for leaf in leaves:
            assert isinstance(leaf, nn.LogicallyPartitioned), leaf
            assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
            assert ("layers" in leaf.names) == (scan and leaf.value.ndim > 0 and leaf.names[0] == "layers")
        names = {n for leaf in leaves for n in leaf.names}
        assert {"embed", "heads", "kv", "mlp", "vocab"} <= names


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(activation="swish")
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig(d_model=100, num_heads=8)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"d_modle": 3})


def test_head_dim_decoupled_from_width():
    """Table 3 rows (A)/(B) vary d_k independently of d_model/h."""
    cfg = _tiny_transformer(head_dim=8)
    params = nn.unbox(transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), SRC, TGT)["params"])
    assert params["encoder"]["layers_0"]["attention"]["query"]["kernel"].shape == (cfg.d_model, cfg.num_heads, 8)
