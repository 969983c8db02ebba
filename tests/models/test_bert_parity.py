"""Our Flax BERT vs Hugging Face's PyTorch BERT (`transformers`), in fp32 on CPU.

What is compared to what:
  * forward: `transformers.BertForPreTraining` (random init, every parameter perturbed so biases and
    LayerNorm params are not 0/1, eval mode, eager attention) -> `convert.bert_from_hf` -> our
    `bert.encode` / `bert.pretraining_logits`. Last hidden states, pooled output, MLM logits and NSP
    logits must agree to max abs diff <= 1e-4 at real (non-padding) positions, for a 2-layer
    small-vocab config (d_ff != 4H, to catch shape mix-ups) and for the BERT-base shape, on a padded
    batch with mixed token types. `masked_positions` logits must equal HF's full logits gathered
    at those positions. The small config is also run with scan_layers=True.
  * conversion: `bert_to_hf(bert_from_hf(sd)) == sd` exactly (keys, dtypes, values), both for the
    unrolled and the scan_layers=True layout; `transformers.BertModel` naming (no `bert.` prefix,
    with and without a pooler) converts and matches `BertModel`'s outputs.
  * gradients: loss = MLM cross-entropy at a few masked positions + NSP cross-entropy on a tiny
    BERT with dropout 0. `jax.grad` w.r.t. all our params, mapped to HF names with
    `convert.bert_to_hf` (a linear map), vs torch autograd, for every HF parameter (tied ones
    included): relative max diff <= 1e-4; attention key biases, whose gradient is analytically 0,
    are checked to be ~0 on both sides instead.

Run with `-s` to see the measured max diffs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # the [parity] extra: imported plainly so a missing install fails instead of skipping
import transformers

from bert_vs_transformer.models import bert, convert

ATOL = 1e-4  # fp32 forward tolerance (max abs diff)
GRAD_RTOL = 1e-4  # fp32 gradient tolerance (max abs diff / max abs torch gradient)

# 2 layers, small vocab, head_dim 12, d_ff not 4H: any transposed/reshaped kernel breaks shapes or
# values. Init std 0.1 (not 0.02) so pre-activations are O(1) even at width 48: then erf vs tanh GELU
# or a swapped bias each move the outputs well past the tolerance (negative controls in
# test_pretraining_forward_matches_hf).
SMALL = dict(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=80, max_position_embeddings=40, type_vocab_size=2, initializer_range=0.1)
BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02)
CONFIGS = {"small": SMALL, "base": BASE}


def _hf_config(dims, **kw):
    return transformers.BertConfig(**dims, hidden_act="gelu", layer_norm_eps=1e-12,
                                   attn_implementation="eager", **kw)


def _perturb_(model, seed):
    """Adds N(0, initializer_range) noise to every parameter (tied ones once), so zero-initialised
    biases and unit LayerNorm scales become distinguishable and a swapped bias or scale is caught."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(model.config.initializer_range * torch.randn(p.shape, generator=gen))
    return model


def _numpy_sd(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _batch(vocab, lengths, seq_len, seed):
    """Padded batch: random ids, token types 0 then 1 (sentence A | B) inside the real tokens."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    ids = rng.integers(1, vocab, size=(b, seq_len), dtype=np.int64)
    mask = np.zeros((b, seq_len), np.int64)
    tt = np.zeros((b, seq_len), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        tt[i, n // 2:n] = 1
    ids = np.where(mask == 1, ids, 0)
    return ids, tt, mask


def _masked_positions(lengths, num, seed):
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(n, size=num, replace=False)) for n in lengths]).astype(np.int32)


def _max_diff(a, b, where=None):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if where is not None:
        d = d[where]
    return float(d.max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pretraining_case(request):
    """(name, hf_config, torch BertForPreTraining in eval mode, its numpy state dict)."""
    name = request.param
    torch.manual_seed(0)
    hf_cfg = _hf_config(CONFIGS[name])
    model = _perturb_(transformers.BertForPreTraining(hf_cfg), seed=1).eval()
    return name, hf_cfg, model, _numpy_sd(model)


def test_pretraining_forward_matches_hf(pretraining_case):
    name, hf_cfg, model, sd = pretraining_case
    lengths, seq_len = [16, 11, 5], 16
    ids, tt, mask = _batch(hf_cfg.vocab_size, lengths, seq_len, seed=2)
    positions = _masked_positions(lengths, num=4, seed=3)

    with torch.no_grad():
        t_ids, t_tt, t_mask = (torch.from_numpy(x) for x in (ids, tt, mask))
        enc = model.bert(input_ids=t_ids, token_type_ids=t_tt, attention_mask=t_mask)
        out = model(input_ids=t_ids, token_type_ids=t_tt, attention_mask=t_mask)
    hf_hidden = enc.last_hidden_state.numpy()
    hf_pooled = enc.pooler_output.numpy()
    hf_mlm = out.prediction_logits.numpy()
    hf_nsp = out.seq_relationship_logits.numpy()

    scans = (False, True) if name == "small" else (False,)  # BERT-base scanned: same code, slow compile
    real = mask.astype(bool)
    for scan in scans:
        cfg, params = convert.bert_from_hf(sd, hf_cfg, scan_layers=scan)
        assert cfg.scan_layers == scan and cfg.pooler and set(params) == {"bert", "mlm", "nsp"}
        hidden, pooled = bert.encode(cfg, params, ids, tt, mask)
        mlm, nsp = bert.pretraining_logits(cfg, params, ids, tt, mask)
        mlm_at, nsp_at = bert.pretraining_logits(cfg, params, ids, tt, mask, positions)
        assert hidden.shape == hf_hidden.shape and pooled.shape == hf_pooled.shape
        assert mlm.shape == hf_mlm.shape and nsp.shape == hf_nsp.shape
        assert mlm_at.shape == (len(lengths), positions.shape[1], hf_cfg.vocab_size)
        assert mlm.dtype == jnp.float32 and nsp.dtype == jnp.float32

        hf_mlm_at = np.take_along_axis(hf_mlm, positions[..., None].astype(np.int64), axis=1)
        diffs = {
            "hidden": _max_diff(hidden, hf_hidden, real),
            "pooled": _max_diff(pooled, hf_pooled),
            "mlm": _max_diff(mlm, hf_mlm, real),
            "nsp": _max_diff(nsp, hf_nsp),
            "mlm@masked_positions": _max_diff(mlm_at, hf_mlm_at),
            "nsp(masked call)": _max_diff(nsp_at, hf_nsp),
        }
        print(f"\n[parity {name} scan_layers={scan}] max abs diff vs HF: "
              + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
        for k, v in diffs.items():
            assert v <= ATOL, f"{name} scan_layers={scan}: {k} max abs diff {v:.3e} > {ATOL}"
        # The gather path is our own full logits at those positions (no extra error on top).
        ours_gathered = np.take_along_axis(np.asarray(mlm), positions[..., None], axis=1)
        assert _max_diff(mlm_at, ours_gathered) <= 1e-5

    if name == "small":
        # Negative controls: the comparison is sharp enough to see near-miss implementations.
        cfg, params = convert.bert_from_hf(sd, hf_cfg)
        swapped = convert.bert_from_hf(sd, hf_cfg)[1]
        attn0 = swapped["bert"]["encoder"]["layers_0"]["attention"]
        attn0["query"]["bias"], attn0["key"]["bias"] = attn0["key"]["bias"], attn0["query"]["bias"]
        controls = {"tanh-approximate GELU": (cfg.replace(activation="gelu_tanh"), params),
                    "layer-0 query/key biases swapped": (cfg, swapped)}
        for what, (wrong_cfg, wrong_params) in controls.items():
            mlm, _ = bert.pretraining_logits(wrong_cfg, wrong_params, ids, tt, mask)
            off = _max_diff(mlm, hf_mlm, real)
            print(f"[parity small] negative control, {what}: mlm max abs diff {off:.2e}")
            assert off > 10 * ATOL, what


def _assert_same_state_dict(got, want):
    assert set(got) == set(want), (sorted(set(want) - set(got)), sorted(set(got) - set(want)))
    for k, v in want.items():
        assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
        assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
        np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("scan", [False, True])
def test_state_dict_round_trip(pretraining_case, scan):
    name, hf_cfg, _, sd = pretraining_case
    cfg, params = convert.bert_from_hf(sd, hf_cfg, scan_layers=scan)
    if scan:
        leaf = params["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"]
        assert leaf.shape[0] == hf_cfg.num_hidden_layers
    _assert_same_state_dict(convert.bert_to_hf(cfg, params), sd)
    if name == "small":  # also from device (jax.Array) params
        _assert_same_state_dict(convert.bert_to_hf(cfg, jax.device_put(params)), sd)


@pytest.mark.parametrize("pooler", [True, False])
def test_bertmodel_naming(pooler):
    """`BertModel` state dicts (no `bert.` prefix, no heads, e.g. sentence-transformers')."""
    torch.manual_seed(4)
    hf_cfg = _hf_config(SMALL)
    model = _perturb_(transformers.BertModel(hf_cfg, add_pooling_layer=pooler), seed=5).eval()
    sd = _numpy_sd(model)
    assert not any(k.startswith(("bert.", "cls.")) for k in sd)
    cfg, params = convert.bert_from_hf(sd, hf_cfg)
    assert set(params) == {"bert"} and cfg.pooler == pooler

    lengths = [13, 7]
    ids, tt, mask = _batch(hf_cfg.vocab_size, lengths, 13, seed=6)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(tt),
                    attention_mask=torch.from_numpy(mask))
    hidden, pooled = bert.encode(cfg, params, ids, tt, mask)
    d_hidden = _max_diff(hidden, out.last_hidden_state.numpy(), mask.astype(bool))
    msg = f"\n[BertModel naming, pooler={pooler}] hidden max abs diff {d_hidden:.2e}"
    assert d_hidden <= ATOL
    if pooler:
        d_pooled = _max_diff(pooled, out.pooler_output.numpy())
        msg += f", pooled {d_pooled:.2e}"
        assert d_pooled <= ATOL
    else:
        assert pooled is None
    print(msg)
    with pytest.raises(ValueError, match="pretraining heads"):
        bert.pretraining_logits(cfg, params, ids, tt, mask)
    _assert_same_state_dict(convert.bert_to_hf(cfg, params), sd)  # written back without the prefix


@pytest.mark.parametrize("scan", [False, True])
def test_gradients_match_torch(scan):
    torch.manual_seed(7)
    hf_cfg = _hf_config(SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = _perturb_(transformers.BertForPreTraining(hf_cfg), seed=8).train()  # dropout 0: train == eval
    sd = _numpy_sd(model)
    cfg, params = convert.bert_from_hf(sd, hf_cfg, scan_layers=scan)

    lengths = [12, 9, 6]
    ids, tt, mask = _batch(hf_cfg.vocab_size, lengths, 12, seed=9)
    positions = _masked_positions(lengths, num=3, seed=10)
    rng = np.random.default_rng(11)
    mlm_labels = rng.integers(0, hf_cfg.vocab_size, size=positions.shape)
    nsp_labels = np.array([0, 1, 1])

    # torch: full-sequence logits gathered at the masked positions.
    model.zero_grad()
    out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(tt),
                attention_mask=torch.from_numpy(mask))
    idx = torch.from_numpy(positions.astype(np.int64))
    logits_at = torch.gather(out.prediction_logits, 1, idx[..., None].expand(-1, -1, hf_cfg.vocab_size))
    t_loss = (torch.nn.functional.cross_entropy(logits_at.reshape(-1, hf_cfg.vocab_size),
                                                torch.from_numpy(mlm_labels).reshape(-1))
              + torch.nn.functional.cross_entropy(out.seq_relationship_logits, torch.from_numpy(nsp_labels)))
    t_loss.backward()

    # ours: the masked_positions path of the flax module, training-mode module (dropout 0).
    module = bert.BertForPreTraining(cfg, deterministic=False)

    def loss_fn(p):
        mlm, nsp = module.apply({"params": p}, ids, tt, mask, positions, rngs={"dropout": jax.random.key(0)})
        mlm_ce = -jnp.take_along_axis(jax.nn.log_softmax(mlm), mlm_labels[..., None], -1).mean()
        nsp_ce = -jnp.take_along_axis(jax.nn.log_softmax(nsp), nsp_labels[:, None], -1).mean()
        return mlm_ce + nsp_ce

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    assert abs(float(loss) - t_loss.item()) <= 1e-5

    # bert_to_hf is linear in the params, so it maps gradients too. Tied entries
    # (cls.predictions.decoder.weight = word embeddings, decoder.bias = cls.predictions.bias) are the
    # same torch Parameter, whose .grad holds the sum of both uses, as does our single leaf: compared too.
    ours = convert.bert_to_hf(cfg, grads)
    assert set(ours) == set(sd)
    global_max = max(float(model.get_parameter(k).grad.abs().max()) for k in ours)
    worst, key_bias_max = ("", 0.0), 0.0
    for k, g in ours.items():
        t = model.get_parameter(k).grad
        assert t is not None, k
        t = t.numpy()
        assert g.shape == t.shape, (k, g.shape, t.shape)
        if k.endswith("attention.self.key.bias"):
            # Analytically zero: softmax is shift-invariant per query, and q . b_key shifts every key's
            # logit by the same amount. Both sides hold only fp32 round-off (~1e-8 here), which a
            # relative test cannot compare; check that both are ~0 instead.
            key_bias_max = max(key_bias_max, float(np.abs(g).max()), float(np.abs(t).max()))
            assert key_bias_max <= 1e-6 * global_max, k
            continue
        scale = max(float(np.abs(t).max()), 1e-12)
        rel = _max_diff(g, t) / scale
        if rel > worst[1]:
            worst = (k, rel)
        assert rel <= GRAD_RTOL, f"{k}: max|g_ours - g_torch| / max|g_torch| = {rel:.3e} (scale {scale:.3e})"
    print(f"\n[gradients scan_layers={scan}] loss ours {float(loss):.6f} torch {t_loss.item():.6f}; "
          f"{len(ours)} HF params, worst relative max diff {worst[1]:.2e} ({worst[0]}); key-bias grads "
          f"(analytically 0) max {key_bias_max:.1e} vs largest grad {global_max:.2f}")
