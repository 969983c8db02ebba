"""Model FLOPs per training step and model FLOPs utilisation (MFU).

Convention (Kaplan et al. 2020; PaLM appendix B): count the matrix multiplications the *model*
needs, not what the hardware executes.

    training step = forward + backward = 3 x forward     (backward: 2 matmuls per forward matmul)
    a dense layer with an (m x n) weight costs 2 m n FLOPs per row it is applied to (multiply + add)

so the dense part is ``6 * (weights used per token) * tokens``, counted per component. With
d = d_model, h = num_heads, d_k = head_dim (h * d_k = d unless decoupled), d_ff, V = vocab_size,
forward FLOPs are:

    per token, per layer that has them
      self-attention projections   Q, K, V, O:            4 * d * (h d_k) * 2
      feed-forward                 W1, W2:                2 * d * d_ff * 2
      cross-attention Q, O         on the t target tokens:  2 * d * (h d_k) * 2
      cross-attention K, V         on the s source tokens:  2 * d * (h d_k) * 2   (per decoder layer)
    attention scores and values, per layer per sequence:
      Q K^T and softmax(.) V:                             2 * 2 * L_q * L_k * h * d_k
        encoder self-attention L_q = L_k = s; decoder self-attention t x t; cross-attention t x s.
        No causal discount: the decoder's masked half is computed (and counted) all the same.
    output layer (tied to the embedding, Vaswani 3.4 / BERT's MLM decoder): 2 * d * V per
      predicted position. Transformer: every target position. BERT pretraining: only the
      P = max_predictions_per_seq masked positions per sequence (every position if none are given),
      which also pass the MLM transform (dense d x d: 2 * d * d each).
    per sequence: BERT pooler 2 * d * d, NSP head 2 * d * 2, classifier 2 * d * num_labels.

Not counted: embedding lookups (gathers, no FLOPs), biases, LayerNorm, activations, softmax,
dropout, the loss and the optimizer update (all O(d) per token against the O(d^2) above), and
rematerialisation's recomputed forward (model FLOPs, not hardware FLOPs, as MFU is defined).

MFU = model FLOPs per step * steps per second / (number of devices * peak FLOP/s per device),
with the peak from `PEAK_FLOPS` (bf16 dense; fp32 runs on GPUs are measured against that too,
so they show a low MFU) or an explicit override.
"""

from __future__ import annotations

from typing import Mapping

import jax

from bert_vs_transformer.models.model_config import ModelConfig

# device_kind substring -> peak dense bf16 FLOP/s per device. Checked in order: more specific first.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),  # SXM; the PCIe card is lower (756e12): pass --peak_tflops there
    ("A100", 312e12),
    ("v5 lite", 197e12),  # TPU v5e reports device_kind "TPU v5 lite"
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("TPU v5", 459e12),  # TPU v5p reports "TPU v5"
    ("v6 lite", 918e12),  # TPU v6e (Trillium) reports "TPU v6 lite"
    ("v6e", 918e12),
    ("TPU v4", 275e12),
)

def _sum(d: Mapping[str, int]) -> int:
    return int(sum(d.values()))


def _encoder_layer(cfg: ModelConfig, batch: int, length: int) -> dict[str, int]:
    """Forward FLOPs of one encoder layer over `batch` sequences of `length` tokens."""
    d, hd = cfg.d_model, cfg.num_heads * cfg.qkv_dim
    tokens = batch * length
    return {
        "attention_projections": 4 * d * hd * 2 * tokens,
        "attention_scores": 2 * 2 * length * length * hd * batch,
        "ffn": 2 * d * cfg.d_ff * 2 * tokens,
    }


def _decoder_layer(cfg: ModelConfig, batch: int, src_len: int, tgt_len: int) -> dict[str, int]:
    """Forward FLOPs of one decoder layer: causal self-attention, cross-attention, FFN."""
    d, hd = cfg.d_model, cfg.num_heads * cfg.qkv_dim
    src, tgt = batch * src_len, batch * tgt_len
    return {
        "attention_projections": (
            4 * d * hd * 2 * tgt  # self-attention Q, K, V, O
            + 2 * d * hd * 2 * tgt  # cross-attention Q, O on the targets
            + 2 * d * hd * 2 * src  # cross-attention K, V on the encoder memory
        ),
        "attention_scores": (2 * 2 * tgt_len * tgt_len * hd + 2 * 2 * tgt_len * src_len * hd) * batch,
        "ffn": 2 * d * cfg.d_ff * 2 * tgt,
    }


def _add(total: dict[str, int], part: Mapping[str, int], times: int = 1) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + times * v


def transformer_forward_flops(cfg: ModelConfig, batch: int, src_len: int, tgt_len: int) -> dict[str, int]:
    """Forward FLOPs of EncoderDecoder by component (see the module docstring)."""
    out: dict[str, int] = {}
    _add(out, _encoder_layer(cfg, batch, src_len), cfg.num_encoder_layers)
    _add(out, _decoder_layer(cfg, batch, src_len, tgt_len), cfg.num_decoder_layers)
    out["output_projection"] = 2 * cfg.d_model * cfg.vocab_size * batch * tgt_len
    return out


def transformer_step_flops(cfg: ModelConfig, batch: int, src_len: int, tgt_len: int) -> int:
    """Training-step FLOPs (3 x forward) of the Transformer on [batch, src_len] -> [batch, tgt_len]."""
    return 3 * _sum(transformer_forward_flops(cfg, batch, src_len, tgt_len))


def bert_forward_flops(
    cfg: ModelConfig, batch: int, seq_len: int, num_masked: int | None = None, nsp: bool = True
) -> dict[str, int]:
    """Forward FLOPs of BertForPreTraining; num_masked = predictions per sequence (None: all)."""
    d = cfg.d_model
    predicted = batch * (seq_len if num_masked is None else num_masked)
    out: dict[str, int] = {}
    _add(out, _encoder_layer(cfg, batch, seq_len), cfg.num_encoder_layers)
    out["mlm_transform"] = 2 * d * d * predicted
    out["output_projection"] = 2 * d * cfg.vocab_size * predicted
    if cfg.pooler:
        out["pooler"] = 2 * d * d * batch
    if nsp:
        out["nsp"] = 2 * d * 2 * batch
    return out


def bert_step_flops(cfg: ModelConfig, batch: int, seq_len: int, num_masked: int | None = None) -> int:
    """Training-step FLOPs (3 x forward) of BERT pretraining (MLM at num_masked positions + NSP)."""
    return 3 * _sum(bert_forward_flops(cfg, batch, seq_len, num_masked))


def classification_forward_flops(cfg: ModelConfig, batch: int, seq_len: int, num_labels: int = 2) -> dict[str, int]:
    """Forward FLOPs of BertForSequenceClassification: encoder, pooler, linear classifier."""
    d = cfg.d_model
    out: dict[str, int] = {}
    _add(out, _encoder_layer(cfg, batch, seq_len), cfg.num_encoder_layers)
    out["pooler"] = 2 * d * d * batch
    out["classifier"] = 2 * d * num_labels * batch
    return out


def classification_step_flops(cfg: ModelConfig, batch: int, seq_len: int, num_labels: int = 2) -> int:
    return 3 * _sum(classification_forward_flops(cfg, batch, seq_len, num_labels))


def total(forward: Mapping[str, int]) -> int:
    """Training-step FLOPs from forward FLOPs by component: forward + backward = 3 x forward."""
    return 3 * _sum(forward)


def peak_flops_per_device(override: float | None = None, device_kind: str | None = None) -> float | None:
    """`override` if given, else the table entry for the device kind, else None (CPU, unknown)."""
    if override:
        return float(override)
    if device_kind is None:
        device_kind = jax.devices()[0].device_kind
    for key, peak in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return peak
    return None


def mfu(flops_per_step: float, steps_per_s: float, num_devices: int, peak: float | None) -> float | None:
    """Achieved model FLOP/s over the devices' peak; None when the peak is unknown."""
    if not peak or num_devices <= 0:
        return None
    return flops_per_step * steps_per_s / (num_devices * peak)
