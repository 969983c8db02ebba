"""Parameter counts against the papers: Vaswani Table 3 (base 65M, big 213M with a 37k shared
vocabulary), Devlin et al. (base 110M, large 340M) and Turc et al. 2019 (small BERTs)."""

import jax.numpy as jnp
import pytest

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import compare
from bert_vs_transformer.models import bert, layers, transformer

IDS = jnp.ones((1, 8), jnp.int32)


@pytest.mark.parametrize("variant, paper", [("base", 65e6), ("big", 213e6)])
def test_transformer_counts(variant, paper):
    cfg = config_args.model_config(f"configs/transformer.py:{variant}")
    assert cfg.vocab_size == 37000
    n = layers.count_params(compare.param_shapes(transformer.EncoderDecoder(cfg), IDS, IDS))
    assert abs(n - paper) / paper <= 0.03, (variant, n)


@pytest.mark.parametrize(
    "variant, paper, tol",
    [
        ("base", 110e6, 0.02),
        ("large", 340e6, 0.02),
        # Turc et al. 2019, Table 1 / the google-research/bert README (millions).
        ("tiny", 4.4e6, 0.02),
        ("mini", 11.3e6, 0.02),
        ("small", 29.1e6, 0.02),
        ("medium", 41.7e6, 0.02),
    ],
)
def test_bert_counts(variant, paper, tol):
    cfg = config_args.model_config(f"configs/bert.py:{variant}")
    n = layers.count_params(compare.param_shapes(bert.BertForPreTraining(cfg), IDS))
    assert abs(n - paper) / paper <= tol, (variant, n)


def test_transformer_base_by_hand():
    """63,082,496 = 37000*512 (shared embedding) + 6 encoder layers + 6 decoder layers, counted
    by hand from Sec. 3: attention 4 d^2 + 4 d, FFN 2 d d_ff + d_ff + d, LayerNorm 2 d each."""
    d, ff, v = 512, 2048, 37000
    attn = 4 * d * d + 4 * d
    ffn = 2 * d * ff + ff + d
    enc_layer = attn + ffn + 2 * (2 * d)
    dec_layer = 2 * attn + ffn + 3 * (2 * d)
    expected = v * d + 6 * enc_layer + 6 * dec_layer
    cfg = config_args.model_config("configs/transformer.py:base")
    assert layers.count_params(compare.param_shapes(transformer.EncoderDecoder(cfg), IDS, IDS)) == expected
