"""Model FLOPs (flops.py) against hand counts and against the parameters of the real flax models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_vs_transformer import config_args, tasks
from bert_vs_transformer.models import bert, flops, transformer
from bert_vs_transformer.models.model_config import ModelConfig

# A tiny model whose FLOPs are counted by hand below: d=8, h=2, d_k=4, d_ff=16, V=10, one layer.
TINY = ModelConfig(
    vocab_size=10, d_model=8, num_heads=2, d_ff=16, num_encoder_layers=1, num_decoder_layers=1,
    max_len=16, dropout_rate=0.0,
)
TINY_BERT = TINY.replace(
    num_decoder_layers=0, activation="gelu", positional="learned", type_vocab_size=2, embed_scale=False,
    embed_layernorm=True, initializer="bert", pooler=True,
)


def test_bert_hand_count():
    # batch 2, L = 4, P = 2 masked positions per sequence.
    # Per token, one encoder layer:
    #   Q, K, V, O: 4 matrices of 8 x (2*4) -> 4 * 8 * 8 * 2 = 512 FLOPs
    #   FFN: 8 x 16 and 16 x 8           -> 2 * 8 * 16 * 2 = 512 FLOPs
    # 8 tokens x 1024                                        = 8192
    # Scores Q K^T (4x4 per head, inner 4): 2*4*4*4 = 128 per head, x2 heads = 256; same for A V
    #   -> 512 per sequence, x2 sequences                    = 1024
    # MLM at 2*2 = 4 predicted positions: transform 8x8 (128) + tied 8x10 decoder (160)
    #   -> 4 * 288                                            = 1152
    # pooler 8x8 (128) + NSP 8x2 (32) per sequence, x2       = 320
    forward = 8192 + 1024 + 1152 + 320
    assert forward == 10688
    assert flops.bert_step_flops(TINY_BERT, batch=2, seq_len=4, num_masked=2) == 3 * 10688 == 32064


def test_classification_hand_count():
    # batch 2, L = 4, 3 labels: encoder 8192 + scores 1024 + pooler 2*128 + classifier 2*(2*8*3 = 48)
    forward = 8192 + 1024 + 256 + 96
    assert flops.classification_step_flops(TINY_BERT, batch=2, seq_len=4, num_labels=3) == 3 * forward


def test_transformer_hand_count():
    # batch 2, source s = 4, target t = 3.
    # Encoder (per source token 1024, see above): 8 tokens              = 8192
    #   scores 2*2*4*4*(2*4) per sequence = 512, x2                      = 1024
    # Decoder, per target token: self Q,K,V,O 512 + cross Q,O 2*8*8*2 = 256 + FFN 512 = 1280
    #   6 target tokens                                                   = 7680
    # Cross K, V on the 8 source tokens: 256 each                        = 2048
    # Decoder self-attention scores 2*2*3*3*8 = 288, cross 2*2*3*4*8 = 384 per sequence
    #   (672) x2                                                          = 1344
    # Tied output projection 2*8*10 = 160 at each of 6 target positions  = 960
    forward = 8192 + 1024 + 7680 + 2048 + 1344 + 960
    assert forward == 21248
    assert flops.transformer_step_flops(TINY, batch=2, src_len=4, tgt_len=3) == 3 * 21248


def test_decoupled_head_dim_uses_h_times_dk():
    cfg = TINY.replace(head_dim=3)  # h * d_k = 6 != d = 8
    got = flops.transformer_forward_flops(cfg, batch=1, src_len=2, tgt_len=2)
    # encoder Q,K,V,O 4*8*6*2 = 384 per token x2; decoder self 384 + cross Q,O 192 per token x2,
    # cross K,V 192 per source token x2
    assert got["attention_projections"] == 384 * 2 + (384 + 192) * 2 + 192 * 2
    # encoder 2*2*2*2*6 = 96, decoder self 96 + cross 96
    assert got["attention_scores"] == 96 * 3


def _kernels(params):
    """{path: size} of the matmul weights (dense kernels); biases / LayerNorm are not matmuls."""
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]
    out = {}
    for path, leaf in flat:
        names = tuple(getattr(k, "key", str(k)) for k in path)
        if names[-1] == "kernel":
            out["/".join(names)] = int(np.prod(leaf.shape))
    return out


def _attention_scores(cfg, batch, lq, lk):
    return 2 * 2 * lq * lk * cfg.num_heads * cfg.qkv_dim * batch


def test_bert_dense_part_equals_six_n_t_from_the_flax_model():
    cfg = TINY_BERT.replace(num_encoder_layers=2, d_model=16, num_heads=4, d_ff=24, vocab_size=37)
    b, L = 3, 6
    ids = jnp.ones((b, L), jnp.int32)
    params = jax.eval_shape(lambda: bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids))["params"]
    kernels = _kernels(params)
    per_sequence = sum(v for k, v in kernels.items() if k.startswith(("bert/pooler", "nsp")))
    per_token = sum(kernels.values()) - per_sequence
    assert per_token > 0 and per_sequence == 16 * 16 + 16 * 2
    tied_projection = cfg.vocab_size * cfg.d_model  # the embedding table reused as the MLM decoder
    expected = 6 * (per_token + tied_projection) * b * L + 6 * per_sequence * b
    expected += 3 * cfg.num_encoder_layers * _attention_scores(cfg, b, L, L)
    assert flops.bert_step_flops(cfg, b, L, num_masked=None) == expected


def test_transformer_dense_part_equals_six_n_t_from_the_flax_model():
    cfg = TINY.replace(num_encoder_layers=2, num_decoder_layers=3, d_model=16, num_heads=4, d_ff=24, vocab_size=37)
    b, s, t = 2, 5, 7
    src, tgt = jnp.ones((b, s), jnp.int32), jnp.ones((b, t), jnp.int32)
    params = jax.eval_shape(lambda: transformer.EncoderDecoder(cfg).init(jax.random.PRNGKey(0), src, tgt))["params"]
    kernels = _kernels(params)
    on_source = sum(
        v for k, v in kernels.items()
        if k.startswith("encoder/") or ("cross_attention/key" in k or "cross_attention/value" in k)
    )
    on_target = sum(kernels.values()) - on_source
    assert on_target > 0 and on_source > 0
    tied_projection = cfg.vocab_size * cfg.d_model
    expected = 6 * on_source * b * s + 6 * (on_target + tied_projection) * b * t
    expected += 3 * (
        cfg.num_encoder_layers * _attention_scores(cfg, b, s, s)
        + cfg.num_decoder_layers * (_attention_scores(cfg, b, t, t) + _attention_scores(cfg, b, t, s))
    )
    assert flops.transformer_step_flops(cfg, b, s, t) == expected


def test_step_flops_from_configs():
    tcfg = config_args.load("configs/transformer.py:tiny")
    m = ModelConfig.from_config(tcfg)
    n = tcfg.data.max_len
    assert tasks.get_task(tcfg).step_flops(4) == flops.transformer_step_flops(m, 4, n, n)

    bcfg = config_args.load("configs/bert.py:tiny")
    m = ModelConfig.from_config(bcfg)
    seq, preds = bcfg.data.max_seq_len, bcfg.data.max_predictions_per_seq  # tiny: 64, 10
    assert tasks.get_task(bcfg).step_flops(4) == flops.bert_step_flops(m, 4, seq, preds)
    bcfg.task = "classification"
    bcfg.num_labels = 3
    assert tasks.get_task(bcfg).step_flops(4) == flops.classification_step_flops(m, 4, seq, 3)


def test_bert_base_magnitude():
    # ~6 * 85M encoder params * 128 tokens ~ 65 GFLOPs per sequence, plus attention and MLM.
    bcfg = config_args.load("configs/bert.py:base")
    per_seq = tasks.get_task(bcfg).step_flops(1)
    assert 6.5e10 < per_seq < 8e10


def test_peak_and_mfu():
    assert flops.peak_flops_per_device(device_kind="NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops_per_device(device_kind="NVIDIA H200") == 989e12
    assert flops.peak_flops_per_device(device_kind="NVIDIA A100-SXM4-40GB") == 312e12
    assert flops.peak_flops_per_device(device_kind="TPU v4") == 275e12
    assert flops.peak_flops_per_device(device_kind="TPU v5 lite") == 197e12
    assert flops.peak_flops_per_device(device_kind="TPU v5p") == 459e12
    assert flops.peak_flops_per_device(device_kind="TPU v5") == 459e12
    assert flops.peak_flops_per_device(device_kind="TPU v6 lite") == 918e12
    assert flops.peak_flops_per_device(device_kind="cpu") is None
    assert flops.peak_flops_per_device(123e12, device_kind="cpu") == 123e12
    assert flops.mfu(1e12, 2.0, 4, None) is None
    assert flops.mfu(1e12, 2.0, 4, 1e12) == pytest.approx(0.5)
