"""The cudnn attention path without a GPU.

Trace: with only cuDNN's version probe stubbed, the gradient of each task's full training loss
traces under attention_kernel='cudnn' and bf16 (BERT MLM + NSP on a padded batch with both
segments; the Transformer with padded sources, the causal decoder and cross-attention; the LM's
causal encoder) and so does one cached beam-search decode step. Every cuDNN call takes its masks as
`is_causal` and key lengths, never as a dense bias.
Equality: `jax.nn.dot_product_attention(implementation='xla')` given exactly the arguments the cudnn
path passes equals the project's xla kernel on every row a loss can read.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo
from jax.extend import core as jax_core

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.data import synthetic
from bert_vs_transformer.models import attention, decoding, transformer
from bert_vs_transformer.models.model_config import ModelConfig


@pytest.fixture
def cudnn_probe(monkeypatch):
    """cuDNN 9.10 reported; nothing else about JAX's cuDNN path is changed."""
    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)


def _config(spec, **model):
    config = config_args.load(spec)
    config.data.dataset = "synthetic"
    config.data.batch_size = 4
    config.model.update(dtype="bfloat16", attention_kernel="cudnn", attention_dropout_rate=0.0, **model)
    return config


def _cudnn_calls(jaxpr) -> list:
    """Every cuDNN attention primitive in a (closed) jaxpr, sub-jaxprs included."""
    found = []

    def walk(jx):
        for eqn in jx.eqns:
            if "dot_product_attention" in eqn.primitive.name:
                found.append(eqn)
            for sub in jax_core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return found


def _check_calls(calls, expect_causal: bool):
    assert calls, "no cuDNN attention call was traced"
    for eqn in calls:
        assert eqn.params["variadic_args"][0] is False, "a mask reached cuDNN as a dense bias"
    kinds = {str(eqn.params["mask_type"]) for eqn in calls}
    assert any("CAUSAL" in k for k in kinds) == expect_causal, kinds
    assert any("PADDING" in k for k in kinds), kinds


@pytest.mark.parametrize("spec,causal", [
    ("configs/bert.py:tiny", False),
    ("configs/transformer.py:tiny", True),
    ("configs/lm.py:tiny", True),
])
def test_training_loss_gradient_traces(cudnn_probe, spec, causal):
    config = _config(spec)
    task = tasks.get_task(config)
    batch = {k: jnp.asarray(v) for k, v in synthetic.global_batch(config, 0).items()}
    params = jax.eval_shape(lambda: task.model(True).init(jax.random.PRNGKey(0), *task.init_args(batch)))["params"]

    def loss(p):
        return task.loss(p, batch, task.normalizers(batch), jax.random.PRNGKey(1), False)[0]

    traced = jax.make_jaxpr(jax.value_and_grad(loss))(params)
    _check_calls(_cudnn_calls(traced), expect_causal=causal)


def test_cached_decode_step_traces(cudnn_probe):
    cfg = config_args.model_config("configs/transformer.py:tiny", dtype="bfloat16", attention_kernel="cudnn")
    src = jnp.asarray([[5, 6, 7, 0], [8, 9, 0, 0]], jnp.int32)
    params = jax.eval_shape(lambda: transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), src, src))["params"]

    def one_step(params, src, ids):
        step, cache = decoding.decode_step_program(cfg, params, src, copies=4)
        return step(cache, ids)[0]

    traced = jax.make_jaxpr(one_step)(params, src, jnp.ones((8,), jnp.int32))
    calls = _cudnn_calls(traced)
    # The prefill's self-attention has no mask; the step's self- and cross-attention both have lengths.
    _check_calls(calls, expect_causal=False)


@pytest.mark.parametrize("field,value,match", [
    ("dtype", "float32", "dtype bfloat16 or float16"),
    ("head_dim", 12, "multiple of 8"),
    ("attention_dropout_rate", 0.1, "no attention dropout"),
])
def test_config_refuses_what_cudnn_cannot_do(field, value, match):
    fields = dict(attention_kernel="cudnn", dtype="bfloat16", attention_dropout_rate=0.0)
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        ModelConfig(**fields)


def test_packed_translation_is_refused():
    config = _config("configs/transformer.py:tiny")
    config.data.pack = True
    with pytest.raises(ValueError, match="data.pack"):
        tasks.get_task(config)


def _qkv(b, q, k, h=2, d=16, seed=0):
    r = np.random.default_rng(seed)
    return [jnp.asarray(r.standard_normal(s), jnp.bfloat16) for s in ((b, q, h, d), (b, k, h, d), (b, k, h, d))]


def _lengths_valid(lengths, k):
    return jnp.arange(k)[None, :] < jnp.asarray(lengths)[:, None]


CASES = {
    # name: (q_len, kv_len, mask); rows with no real key are padding rows of the batch
    "padded": (6, 6, attention.AttentionMask(key_valid=_lengths_valid([6, 3, 1, 0], 6))),
    "causal": (6, 6, attention.AttentionMask(causal=True)),
    "causal_padded": (6, 6, attention.AttentionMask(key_valid=_lengths_valid([6, 4, 2, 0], 6), causal=True)),
    "cross": (5, 7, attention.AttentionMask(key_valid=_lengths_valid([7, 5, 2, 0], 7))),
    "decode_step": (1, 8, attention.AttentionMask(causal=True, offset=jnp.int32(3))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cudnn_arguments_equal_the_xla_kernel(case):
    q_len, kv_len, mask = CASES[case]
    q, k, v = _qkv(4, q_len, kv_len)
    ours = np.asarray(attention.dot_product_attention(q, k, v, mask, kernel="xla"), np.float32)
    args = attention.cudnn_arguments(mask, 4, q_len)
    assert "mask" not in args and "bias" not in args
    ref = np.asarray(jax.nn.dot_product_attention(q, k, v, implementation="xla", **args), np.float32)
    readable = np.ones(4, bool) if mask.key_valid is None else np.asarray(mask.key_valid).any(-1)
    np.testing.assert_allclose(ours[readable], ref[readable], atol=2e-2, rtol=2e-2)
    # All-padding rows: both finite (cuDNN reads key 0 there, the xla kernel averages every key).
    assert np.isfinite(ours).all() and np.isfinite(ref).all()
