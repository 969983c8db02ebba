"""BERT Table 5's ablation options: a causal encoder never looks ahead, the 'last' pooler reads
the last real token (the 'mean' pooler the mean of the real tokens), nsp_weight=0 drops NSP, and
the LTR objective is next-token cross-entropy on the unmasked text (checked against a hand
computation from the model's logits)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.data import synthetic as synthetic_data
from bert_vs_transformer.models import bert, convert


def _cfg(**model):
    config = config_args.load("configs/bert.py:tiny")
    config.data.dataset = "synthetic"
    config.data.batch_size, config.data.max_seq_len, config.data.max_predictions_per_seq = 4, 12, 3
    config.model.vocab_size = 50
    for k, v in model.items():
        config.model[k] = v
    return config


def _params(config):
    task = tasks.get_task(config)
    batch = task.dummy_batch(2)
    return nn.unbox(task.model(True).init(jax.random.PRNGKey(0), *task.init_args(batch))["params"])


def test_causal_encoder_ignores_the_future():
    config = _cfg(causal=True)
    mcfg = tasks.get_task(config).model_config
    params = _params(config)
    ids = jnp.array([[2, 7, 8, 9, 10, 3]])
    other = ids.at[0, 4:].set(jnp.array([20, 21]))
    a, _ = bert.encode(mcfg, params, ids, None, ids != 0)
    b, _ = bert.encode(mcfg, params, other, None, other != 0)
    np.testing.assert_allclose(np.asarray(a[0, :4]), np.asarray(b[0, :4]), atol=1e-6)
    assert not np.allclose(np.asarray(a[0, 4:]), np.asarray(b[0, 4:]))


def test_last_token_pooling():
    config = _cfg(causal=True, pooling="last")
    mcfg = tasks.get_task(config).model_config
    params = _params(config)
    ids = jnp.array([[2, 7, 8, 3, 0, 0], [2, 9, 10, 11, 12, 3]])
    hidden, pooled = bert.encode(mcfg, params, ids, None, ids != 0)
    p = params["bert"]["pooler"]
    for row, last in ((0, 3), (1, 5)):
        expected = np.tanh(np.asarray(hidden[row, last]) @ np.asarray(p["kernel"]) + np.asarray(p["bias"]))
        np.testing.assert_allclose(np.asarray(pooled[row]), expected, atol=1e-5)


def test_mean_pooling_averages_real_tokens_only():
    config = _cfg(pooling="mean")
    mcfg = tasks.get_task(config).model_config
    params = _params(config)
    ids = jnp.array([[2, 7, 8, 3, 0, 0], [2, 9, 10, 11, 12, 3]])
    hidden, pooled = bert.encode(mcfg, params, ids, None, ids != 0)
    p = params["bert"]["pooler"]
    for row, n in ((0, 4), (1, 6)):  # by hand: mean of the first n hidden states, then tanh(dense)
        mean = np.asarray(hidden[row, :n]).mean(axis=0)
        expected = np.tanh(mean @ np.asarray(p["kernel"]) + np.asarray(p["bias"]))
        np.testing.assert_allclose(np.asarray(pooled[row]), expected, atol=1e-5)
    # Extra padding changes nothing; [CLS] pooling of the same weights gives another vector.
    _, unpadded = bert.encode(mcfg, params, ids[:1, :4], None, ids[:1, :4] != 0)
    np.testing.assert_allclose(np.asarray(unpadded[0]), np.asarray(pooled[0]), atol=1e-5)
    _, first = bert.encode(mcfg.replace(pooling="first"), params, ids, None, ids != 0)
    assert not np.allclose(np.asarray(first), np.asarray(pooled), atol=1e-3)


def test_hf_export_refuses_what_bert_cannot_express():
    for fields in ({"pooling": "mean"}, {"pooling": "last", "causal": True}):
        mcfg = tasks.get_task(_cfg(**fields)).model_config
        with pytest.raises(ValueError, match="no BERT equivalent"):
            convert.config_to_hf(mcfg)
    assert convert.config_to_hf(tasks.get_task(_cfg()).model_config)["model_type"] == "bert"


def _loss(config, params, batch):
    task = tasks.get_task(config)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    return task.loss(params, batch, task.normalizers(batch), None, deterministic=True)


def test_nsp_weight_zero_drops_nsp():
    config = _cfg()
    params = _params(config)
    batch = synthetic_data.global_batch(config, 0)
    full, sums = _loss(config, params, batch)
    config.nsp_weight = 0.0
    mlm_only, _ = _loss(config, params, batch)
    np.testing.assert_allclose(float(mlm_only), float(sums["mlm_loss_sum"] / sums["masked"]), rtol=1e-6)
    np.testing.assert_allclose(float(full - mlm_only), float(sums["nsp_loss_sum"] / sums["sequences"]), rtol=1e-5)


def test_ltr_objective_is_next_token_cross_entropy():
    config = _cfg(causal=True)
    config.lm_objective, config.nsp_weight = "ltr", 0.0
    params = _params(config)
    batch = synthetic_data.global_batch(config, 0)
    loss, _ = _loss(config, params, batch)
    # By hand: put the masked tokens back, run the MLM head at every position, score token t+1.
    ids = np.array(batch["input_ids"])
    for r in range(ids.shape[0]):
        for p, t, w in zip(batch["masked_lm_positions"][r], batch["masked_lm_ids"][r], batch["masked_lm_weights"][r]):
            if w > 0:
                ids[r, p] = t
    mcfg = tasks.get_task(config).model_config
    logits, _ = bert.pretraining_logits(mcfg, params, ids, batch["token_type_ids"], batch["attention_mask"])
    logp = np.asarray(jax.nn.log_softmax(logits))
    total, count = 0.0, 0
    for r in range(ids.shape[0]):
        n = int(batch["attention_mask"][r].sum())
        for t in range(n - 1):
            total -= logp[r, t, ids[r, t + 1]]
            count += 1
    np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)
