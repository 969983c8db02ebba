"""Numerical parity of our post-LN Transformer with PyTorch's `torch.nn.Transformer`.

What is checked against what:
  * Our `transformer.EncoderDecoder` (Flax) is initialised at random; its weights are copied into a
    `torch.nn.Transformer(norm_first=False, activation='relu', dropout=0.0, batch_first=True)` by
    the mapping written out in `_load_into_torch` below (independent of `convert.py`).
  * torch receives input embeddings computed here with numpy, straight from the paper:
    E[ids] * sqrt(d_model) + PE, PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...).
  * Encoder memory, decoder output logits (decoder output @ E^T, Vaswani 3.4) are compared at real
    (non-padded) positions on a batch with mixed source and target padding: max |diff| <= 1e-4 (fp32).
  * The same with `scan_layers=True` (per-layer params stacked by `convert.stack_layers`).

Run with `pytest -s` to see the measured max differences.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bert_vs_transformer import config_args  # noqa: E402
from bert_vs_transformer.models import convert, transformer

TOL = 1e-4
VOCAB = 53
N_ENC, N_DEC = 2, 3  # different counts, so a swapped encoder/decoder mapping cannot pass
SRC_LENS = [9, 5, 1, 7]  # source length 9; rows padded to mixed lengths
TGT_LENS = [3, 8, 6, 1]  # target length 8


def _config(**overrides):
    return config_args.model_config(
        "configs/transformer.py:tiny",
        vocab_size=VOCAB, num_encoder_layers=N_ENC, num_decoder_layers=N_DEC, dropout_rate=0.0,
        **overrides,
    )


def _batch(lengths, max_len, rng):
    ids = np.zeros((len(lengths), max_len), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, VOCAB, size=n)
    return ids, ids != 0


def _sinusoids(length, d):
    """The paper's formula, written independently of layers.sinusoidal_positions."""
    pe = np.zeros((length, d), np.float64)
    pos = np.arange(length)[:, None].astype(np.float64)
    two_i = np.arange(0, d, 2).astype(np.float64)
    pe[:, 0::2] = np.sin(pos / 10000.0 ** (two_i / d))
    pe[:, 1::2] = np.cos(pos / 10000.0 ** (two_i / d))
    return pe


def _embed(ids, table):
    d = table.shape[1]
    return (table[ids] * np.sqrt(d) + _sinusoids(ids.shape[1], d)[None]).astype(np.float32)


def _t(x):
    return torch.tensor(np.asarray(x, np.float32))


def _copy_attention(mha, p):
    """Ours: query/key/value kernel (d, h, dk), bias (h, dk); out kernel (h, dk, d), bias (d).
    torch: in_proj_weight (3*h*dk, d) = [Wq; Wk; Wv] acting as x @ W^T, heads as contiguous dk
    chunks of the output features (the C-order reshape of our (h, dk)); out_proj.weight (d, h*dk)."""
    d = p["query"]["kernel"].shape[0]
    w = [np.asarray(p[n]["kernel"]).reshape(d, -1).T for n in ("query", "key", "value")]
    b = [np.asarray(p[n]["bias"]).reshape(-1) for n in ("query", "key", "value")]
    mha.in_proj_weight.copy_(_t(np.concatenate(w, axis=0)))
    mha.in_proj_bias.copy_(_t(np.concatenate(b, axis=0)))
    mha.out_proj.weight.copy_(_t(np.asarray(p["out"]["kernel"]).reshape(-1, d).T))
    mha.out_proj.bias.copy_(_t(p["out"]["bias"]))


def _copy_ffn(layer, p):
    """Ours: wi kernel (d, ff), wo kernel (ff, d); torch Linear weights are (out, in)."""
    layer.linear1.weight.copy_(_t(np.asarray(p["wi"]["kernel"]).T))
    layer.linear1.bias.copy_(_t(p["wi"]["bias"]))
    layer.linear2.weight.copy_(_t(np.asarray(p["wo"]["kernel"]).T))
    layer.linear2.bias.copy_(_t(p["wo"]["bias"]))


def _copy_norm(norm, p):
    norm.weight.copy_(_t(p["scale"]))
    norm.bias.copy_(_t(p["bias"]))


def _load_into_torch(model, params):
    with torch.no_grad():
        for i, layer in enumerate(model.encoder.layers):
            p = params["encoder"][f"layers_{i}"]
            _copy_attention(layer.self_attn, p["attention"])
            _copy_norm(layer.norm1, p["attention_norm"])
            _copy_ffn(layer, p["ffn"])
            _copy_norm(layer.norm2, p["ffn_norm"])
        for i, layer in enumerate(model.decoder.layers):
            p = params["decoder"][f"layers_{i}"]
            _copy_attention(layer.self_attn, p["self_attention"])
            _copy_norm(layer.norm1, p["self_attention_norm"])
            _copy_attention(layer.multihead_attn, p["cross_attention"])
            _copy_norm(layer.norm2, p["cross_attention_norm"])
            _copy_ffn(layer, p["ffn"])
            _copy_norm(layer.norm3, p["ffn_norm"])


def _torch_model(cfg, params):
    model = torch.nn.Transformer(
        d_model=cfg.d_model, nhead=cfg.num_heads, num_encoder_layers=N_ENC, num_decoder_layers=N_DEC,
        dim_feedforward=cfg.d_ff, dropout=0.0, activation="relu", batch_first=True, norm_first=False,
        layer_norm_eps=cfg.layernorm_eps,
    )
    # nn.Transformer always appends a LayerNorm after the whole encoder and after the whole decoder.
    # With post-LN (Vaswani 3.1: LayerNorm(x + Sublayer(x))) every layer already ends in a
    # LayerNorm, and the paper has no extra stack-level norm (that belongs to pre-LN variants),
    # so remove them to compare like with like.
    model.encoder.norm = None
    model.decoder.norm = None
    # Keep the plain padded-tensor path (no nested-tensor fast path and its prototype warning).
    model.encoder.use_nested_tensor = False
    _load_into_torch(model, params)
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    cfg = _config()
    assert cfg.norm_position == "post" and cfg.activation == "relu" and cfg.num_heads > 1
    rng = np.random.default_rng(0)
    src, src_valid = _batch(SRC_LENS, max(SRC_LENS), rng)
    tgt_in, tgt_valid = _batch(TGT_LENS, max(TGT_LENS), rng)
    model = transformer.EncoderDecoder(cfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), src, tgt_in)["params"])
    params = _randomize_norms_and_biases(jax.tree_util.tree_map(np.asarray, params), rng)

    # Reference: torch on numpy-computed embeddings. Masks are bool, True = not allowed.
    table = params["token_embed"]["embedding"]
    tm = _torch_model(cfg, params)
    causal = torch.triu(torch.ones(tgt_in.shape[1], tgt_in.shape[1], dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        src_pad = torch.tensor(~src_valid)
        tgt_pad = torch.tensor(~tgt_valid)
        memory = tm.encoder(_t(_embed(src, table)), src_key_padding_mask=src_pad)
        out = tm.decoder(
            _t(_embed(tgt_in, table)), memory, tgt_mask=causal,
            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
        )
    ref = dict(memory=memory.numpy(), out=out.numpy(), logits=out.numpy() @ table.T)
    return cfg, params, src, src_valid, tgt_in, tgt_valid, ref


def _randomize_norms_and_biases(params, rng):
    """Init gives LayerNorm scale 1 and zero biases, which would hide a misplaced norm or bias
    (and make an extra LayerNorm nearly idempotent); give them random values."""

    def perturb(path, x):
        name = path[-1].key
        if name == "scale":
            return (1.0 + 0.2 * rng.standard_normal(x.shape)).astype(x.dtype)
        if name == "bias":
            return (0.2 * rng.standard_normal(x.shape)).astype(x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(perturb, params)


def _max_diff(a, b, valid):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))[valid]))


def _ours(cfg, params, src, src_valid, tgt_in, tgt_valid):
    model = transformer.EncoderDecoder(cfg)
    variables = {"params": params}
    memory = model.apply(variables, src, src_valid, method="encode")
    logits = model.apply(variables, src, tgt_in, inputs_padding=src_valid, targets_padding=tgt_valid)
    # Decoder output before the tied projection: reuse decode_logits' input via the decoder module.
    out = model.apply(
        variables, tgt_in, memory, src_valid, tgt_valid,
        method=lambda m, *a: m.decoder(a[0], a[1], a[2], padding_mask=a[3]),
    )
    return dict(memory=np.asarray(memory), out=np.asarray(out), logits=np.asarray(logits))


def _check(name, ours, ref, src_valid, tgt_valid):
    diffs = {
        "memory": _max_diff(ours["memory"], ref["memory"], src_valid),
        "decoder_out": _max_diff(ours["out"], ref["out"], tgt_valid),
        "logits": _max_diff(ours["logits"], ref["logits"], tgt_valid),
    }
    report = f"{name}: max |ours - torch| at real positions " + ", ".join(
        f"{k}={v:.3e}" for k, v in diffs.items()
    )
    print("\n" + report)
    assert all(np.isfinite(v) for v in diffs.values()), report
    assert max(diffs.values()) <= TOL, report
    return diffs


def test_batch_has_mixed_padding(setup):
    _, _, _, src_valid, _, tgt_valid, _ = setup
    assert len(set(src_valid.sum(1))) > 2 and not src_valid.all()
    assert len(set(tgt_valid.sum(1))) > 2 and not tgt_valid.all()


def test_parity_unrolled(setup):
    cfg, params, src, src_valid, tgt_in, tgt_valid, ref = setup
    _check("unrolled", _ours(cfg, params, src, src_valid, tgt_in, tgt_valid), ref, src_valid, tgt_valid)


def test_parity_scan_layers(setup):
    cfg, params, src, src_valid, tgt_in, tgt_valid, ref = setup
    stacked = dict(params)
    stacked["encoder"] = convert.stack_layers(params["encoder"], N_ENC)
    stacked["decoder"] = convert.stack_layers(params["decoder"], N_DEC)
    scan_cfg = cfg.replace(scan_layers=True)
    # The stacked tree must be exactly what the scanned model itself initialises.
    expected = jax.eval_shape(
        lambda: nn.unbox(transformer.EncoderDecoder(scan_cfg).init(jax.random.PRNGKey(0), src, tgt_in)["params"])
    )
    assert jax.tree_util.tree_structure(expected) == jax.tree_util.tree_structure(stacked)
    assert jax.tree_util.tree_map(lambda x: x.shape, expected) == jax.tree_util.tree_map(np.shape, stacked)
    ours = _ours(scan_cfg, stacked, src, src_valid, tgt_in, tgt_valid)
    _check("scan_layers", ours, ref, src_valid, tgt_valid)
    unrolled = _ours(cfg, params, src, src_valid, tgt_in, tgt_valid)
    scan_vs_unrolled = _max_diff(ours["logits"], unrolled["logits"], tgt_valid)
    print(f"scan_layers vs unrolled: max logits diff {scan_vs_unrolled:.3e}")
    assert scan_vs_unrolled <= 1e-5, f"scan vs unrolled logits differ by {scan_vs_unrolled:.3e}"
