r"""The PyTorch peer of `benchmark.py`: times the same training step, at the same shapes, in
Hugging Face `BertForPreTraining` or `torch.nn.Transformer`; prints one JSON line.

    python -m bert_vs_transformer.cli.peer_benchmark --model=bert --variant=large \
        --batch_size=128 --seq_len=128 --steps=20 --warmup=3 [--compile] \
        [--dtype=bf16|fp32 --device=cuda|cpu --attention_dropout=0.0 --max_predictions=P]

The model's sizes come from OUR config file (configs/bert.py or configs/transformer.py at
`--variant`), so the two programs build the same architecture:

- bert: `transformers.BertForPreTraining` from a `BertConfig` with our vocabulary, H, L, A, d_ff,
  exact GELU, positions, segment types, LayerNorm eps and dropouts; `attn_implementation='sdpa'`;
  the MLM decoder tied to the word embeddings (HF default). Loss = HF's own MLM + NSP loss, with
  MLM labels at P random positions per sequence (-100 elsewhere; P = max_predictions_per_seq scaled
  with seq_len exactly as benchmark.py does: 20 at 128, 80 at 512) and random NSP labels. Note that
  HF's head computes vocabulary logits at *every* position (ours: only at the P masked ones); the
  model FLOPs and MFU use our formula for both, so they are throughput normalised the same way.
  AdamW (beta 0.9/0.999, eps 1e-6, weight decay 0.01 not on biases/LayerNorm; fused on CUDA,
  foreach on CPU) after clipping the global gradient norm to the config's grad_clip_norm.
- transformer: `torch.nn.Transformer(batch_first=True, norm_first=False, activation='relu')` with
  our d_model, heads, d_ff, layers, dropout and LayerNorm eps (it also appends a final LayerNorm
  to the encoder and to the decoder: 4 d extra parameters; its attention dropout is set to the
  config's attention_dropout_rate, 0, and its FFN-inner dropout to 0, as ours has none there), one `nn.Embedding` shared by source,
  target and the output projection (tied), x sqrt(d_model) and a sinusoidal position buffer,
  causal target mask, key-padding masks (`--nopadding_masks` drops them, letting SDPA take the
  flash kernel for the causal self-attention), targets shifted right as the decoder input, and
  `F.cross_entropy(label_smoothing=config.label_smoothing, ignore_index=0)`. Adam (0.9, 0.98, 1e-9;
  fused on CUDA).

One synthetic batch (random ids in [1, vocab), no padding; BERT: segment A then B, attention mask
of ones) is created on the device once and reused. Mixed precision: fp32 parameters and
optimizer, forward and loss under `torch.autocast(dtype=bfloat16)` (`--dtype=bf16`, the default on
CUDA). `--compile` wraps the model + loss in `torch.compile` (the optimizer step stays eager and
fused). The warm-up steps (at least one; with --compile it compiles) are excluded; the timed steps
are launched back to back and synchronised once at the end, as in benchmark.py.

Output: one JSON object with benchmark.py's field names where they apply (task, model_family,
variant, batch_size, seq_len / num_masked or src_len / tgt_len, steps, warmup, step_time_s,
steps_per_s, seq_per_s, tokens_per_step, tokens_per_s, model_tflops_per_step, model_tflops,
achieved_tflops_per_s, peak_tflops_per_device, mfu, peak_memory_gb (torch.cuda.max_memory_allocated;
null on CPU), compile_and_warmup_s, final_loss, compute_dtype, device_kind, platform, num_devices)
plus implementation, compile, torch_version, transformers_version, param_count, optimizer,
peer_config (the HF config / nn.Transformer arguments) and model_config (our ModelConfig).

This process never runs JAX: models/flops.py imports jax.numpy (through model_config), so when run as a
program it first sets JAX_PLATFORMS=cpu and XLA_PYTHON_CLIENT_PREALLOCATE=false, and JAX never
touches (or preallocates) the GPU. Run it in its own process, apart from benchmark.py.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before anything imports jax (flops -> model_config -> jax.numpy)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"

import contextlib
import json
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from absl import app, flags, logging

from bert_vs_transformer import config_args
from bert_vs_transformer.models import flops
from bert_vs_transformer.models.model_config import ModelConfig

FLAGS = flags.FLAGS

MODELS = {"bert": "configs/bert.py", "transformer": "configs/transformer.py"}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32"}


def define_flags() -> None:
    flags.DEFINE_enum("model", None, sorted(MODELS), "Which peer: HF BertForPreTraining or nn.Transformer.")
    flags.DEFINE_string("variant", "base", "Variant of our config file (bert: tiny..large; transformer: tiny/base/big).")
    flags.DEFINE_integer("batch_size", None, "Sequences per step; default the config's data.batch_size.")
    flags.DEFINE_integer("seq_len", None, "Sequence length (translation: source and target); default the config's.")
    flags.DEFINE_integer("steps", 10, "Timed steps.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps before timing (with --compile the first compiles); at least 1.")
    flags.DEFINE_bool("compile", False, "torch.compile the model + loss.")
    flags.DEFINE_string("compile_mode", None, "torch.compile mode (None = default, e.g. max-autotune).")
    flags.DEFINE_enum("dtype", "auto", ["auto", "bf16", "fp32"], "Compute dtype (auto: bf16 on CUDA, fp32 on CPU).")
    flags.DEFINE_enum("device", "auto", ["auto", "cuda", "cpu"], "auto: cuda when available.")
    flags.DEFINE_integer("max_predictions", None, "BERT: masked positions per sequence (default scaled as benchmark.py).")
    flags.DEFINE_float("attention_dropout", None, "Attention-probability dropout; default the config's attention_dropout_rate.")
    flags.DEFINE_bool("padding_masks", True, "Transformer: pass key-padding masks (ours always applies its masks).")
    flags.DEFINE_integer("num_layers", None, "Override encoder (and decoder) layers, e.g. for quick tests.")
    flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device for MFU (overrides flops.PEAK_FLOPS).")
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic batch and the initialisation.")


# ---------------------------------------------------------------------------------------------
# Shapes and FLOPs: the same as benchmark.prepare_config / Task.step_flops.


def load_config(model: str, variant: str, num_layers: int | None = None):
    """Our training config (ml_collections) for the peer's model and variant."""
    if model not in MODELS:
        raise ValueError(f"--model={model!r} is not one of {sorted(MODELS)}")
    config = config_args.load(f"{MODELS[model]}:{variant}")
    if num_layers:
        with config.unlocked():
            config.model.num_encoder_layers = int(num_layers)
            if config.model.num_decoder_layers:
                config.model.num_decoder_layers = int(num_layers)
    return config


def shapes(config, batch_size: int | None = None, seq_len: int | None = None, max_predictions: int | None = None) -> dict:
    """batch_size and the lengths benchmark.prepare_config would give the same flags."""
    d = config.data
    batch = int(batch_size or d.batch_size)
    if config.task == "translation":
        length = int(seq_len or d.max_len)
        return {"batch_size": batch, "src_len": length, "tgt_len": length}
    old_len, old_pred = int(d.max_seq_len), d.get("max_predictions_per_seq", None)
    length = int(seq_len or old_len)
    if max_predictions:
        pred = int(max_predictions)
    elif seq_len and old_pred:
        pred = max(1, round(old_pred * int(seq_len) / old_len))
    else:
        pred = old_pred
    if pred is not None and pred > length:
        raise ValueError(f"max_predictions={pred} exceeds seq_len={length}")
    return {"batch_size": batch, "seq_len": length, "num_masked": pred}


def step_flops(cfg: ModelConfig, shape: dict) -> int:
    """Our models/flops.py count of one training step at these shapes."""
    if "src_len" in shape:
        return flops.transformer_step_flops(cfg, shape["batch_size"], shape["src_len"], shape["tgt_len"])
    return flops.bert_step_flops(cfg, shape["batch_size"], shape["seq_len"], shape["num_masked"])


# ---------------------------------------------------------------------------------------------
# Models.


def hf_bert_config(cfg: ModelConfig, attention_dropout: float | None = None):
    """A transformers.BertConfig with our ModelConfig's architecture, SDPA attention."""
    import transformers

    if cfg.head_dim is not None and cfg.head_dim * cfg.num_heads != cfg.d_model:
        raise ValueError("HF BERT has no decoupled head_dim")
    if cfg.norm_position != "post" or cfg.activation != "gelu" or cfg.positional != "learned":
        raise ValueError("HF BERT is post-LN, exact GELU, learned positions")
    return transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.num_encoder_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.d_ff,
        hidden_act="gelu",  # exact erf GELU, as ours
        hidden_dropout_prob=cfg.dropout_rate,
        attention_probs_dropout_prob=cfg.attention_dropout_rate if attention_dropout is None else attention_dropout,
        max_position_embeddings=cfg.max_len,
        type_vocab_size=max(cfg.type_vocab_size, 1),
        layer_norm_eps=cfg.layernorm_eps,
        tie_word_embeddings=cfg.share_embeddings,
        attn_implementation="sdpa",
    )


def sinusoids(length: int, d: int) -> torch.Tensor:
    """Vaswani 3.5, interleaved sin/cos as layers.sinusoidal_positions: [length, d] fp32."""
    i = torch.arange(d // 2, dtype=torch.float32)
    inv_freq = torch.exp(-math.log(10000.0) * 2.0 * i / d)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq
    pe = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(length, -1)
    if d % 2:
        pe = F.pad(pe, (0, 1))
    return pe


class PeerTransformer(torch.nn.Module):
    """torch.nn.Transformer + one shared embedding (source, target, tied output projection),
    x sqrt(d) and sinusoidal positions; forward returns the label-smoothed loss."""

    def __init__(self, cfg: ModelConfig, label_smoothing: float = 0.1, max_len: int = 512, padding_masks: bool = True):
        super().__init__()
        if cfg.head_dim is not None and cfg.head_dim * cfg.num_heads != cfg.d_model:
            raise ValueError("nn.Transformer has no decoupled head_dim")
        if not cfg.share_embeddings:
            raise ValueError("the peer ties source, target and output embeddings (share_embeddings=True)")
        d = cfg.d_model
        self.d_model, self.vocab_size = d, cfg.vocab_size
        self.label_smoothing, self.padding_masks = float(label_smoothing), bool(padding_masks)
        self.scale = math.sqrt(d) if cfg.embed_scale else 1.0
        self.embed = torch.nn.Embedding(cfg.vocab_size, d)
        torch.nn.init.normal_(self.embed.weight, std=d ** -0.5)
        self.dropout = torch.nn.Dropout(cfg.dropout_rate)
        self.transformer = torch.nn.Transformer(
            d_model=d,
            nhead=cfg.num_heads,
            num_encoder_layers=cfg.num_encoder_layers,
            num_decoder_layers=cfg.num_decoder_layers,
            dim_feedforward=cfg.d_ff,
            dropout=cfg.dropout_rate,
            activation=cfg.activation if cfg.activation in ("relu", "gelu") else "relu",
            layer_norm_eps=cfg.layernorm_eps,
            batch_first=True,
            norm_first=cfg.norm_position == "pre",
            bias=cfg.use_bias,
        )
        self.register_buffer("pe", sinusoids(max_len, d), persistent=False)

    def set_attention_dropout(self, rate: float) -> None:
        """Makes nn.Transformer compute our function: its `dropout` also drops attention
        probabilities (ours: model.attention_dropout_rate, 0 for the Transformer) and the FFN's inner
        activations (ours has no dropout there); residual and embedding dropout stay cfg.dropout_rate."""
        for layer in [*self.transformer.encoder.layers, *self.transformer.decoder.layers]:
            layer.self_attn.dropout = float(rate)
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = float(rate)
            layer.dropout.p = 0.0  # between linear1 and linear2
        self.attention_dropout = float(rate)

    def _embed(self, ids):
        return self.dropout(self.embed(ids) * self.scale + self.pe[: ids.shape[1]].to(self.embed.weight.dtype))

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets_in = F.pad(targets, (1, 0))[:, :-1]  # shifted right, 0 (BOS) first
        t = targets.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=targets.device), diagonal=1)
        src_pad = tgt_pad = None
        if self.padding_masks:  # True = padding (ignored), as ours masks every batch
            src_pad, tgt_pad = inputs == 0, targets == 0
        y = self.transformer(
            self._embed(inputs), self._embed(targets_in), tgt_mask=causal,
            src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
            tgt_is_causal=True,
        )
        logits = F.linear(y, self.embed.weight)  # tied pre-softmax projection (Vaswani 3.4)
        return F.cross_entropy(
            logits.reshape(-1, self.vocab_size).float(), targets.reshape(-1),
            ignore_index=0, label_smoothing=self.label_smoothing,
        )


class BertLoss(torch.nn.Module):
    """HF BertForPreTraining returning its own MLM + NSP loss (what torch.compile wraps)."""

    def __init__(self, hf_config):
        super().__init__()
        import transformers

        self.model = transformers.BertForPreTraining(hf_config)

    def forward(self, input_ids, token_type_ids, attention_mask, labels, next_sentence_label):
        return self.model(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
            labels=labels, next_sentence_label=next_sentence_label,
        ).loss


def build_model(model: str, config, cfg: ModelConfig, attention_dropout: float | None = None, padding_masks: bool = True,
                max_len: int = 512) -> torch.nn.Module:
    """The peer module (returns the loss from a batch) on the current default device."""
    if model == "bert":
        return BertLoss(hf_bert_config(cfg, attention_dropout))
    module = PeerTransformer(cfg, float(config.get("label_smoothing", 0.0) or 0.0), max(max_len, cfg.max_len), padding_masks)
    module.set_attention_dropout(cfg.attention_dropout_rate if attention_dropout is None else attention_dropout)
    return module


def count_params(module: torch.nn.Module) -> int:
    """Distinct parameters (a tied matrix counts once, as in ours)."""
    return sum(p.numel() for p in module.parameters())  # parameters() already skips shared ones


def peer_description(model: str, module: torch.nn.Module) -> dict:
    if model == "bert":
        c = module.model.config
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps", "tie_word_embeddings")
        out = {k: getattr(c, k, None) for k in keys}
        out["attn_implementation"] = getattr(c, "_attn_implementation", None)
        return out
    t = module.transformer
    layer = t.encoder.layers[0]
    return {
        "d_model": t.d_model, "nhead": t.nhead, "num_encoder_layers": len(t.encoder.layers),
        "num_decoder_layers": len(t.decoder.layers), "dim_feedforward": layer.linear1.out_features,
        "dropout": layer.dropout.p, "batch_first": t.batch_first, "norm_first": layer.norm_first,
        "activation": getattr(layer.activation, "__name__", str(layer.activation)),
        "vocab_size": module.vocab_size, "tied_embeddings": True, "embed_scale": module.scale,
        "attention_dropout": module.attention_dropout, "ffn_inner_dropout": layer.dropout.p,
        "label_smoothing": module.label_smoothing, "padding_masks": module.padding_masks,
    }


# ---------------------------------------------------------------------------------------------
# Batch, optimizer, timing.


def synthetic_batch(model: str, cfg: ModelConfig, shape: dict, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids in [1, vocab) (no padding), as benchmark.synthetic_batch."""
    g = torch.Generator().manual_seed(seed)
    b = shape["batch_size"]

    def ids(*s):
        return torch.randint(1, cfg.vocab_size, s, generator=g, dtype=torch.long)

    if model == "transformer":
        batch = {"inputs": ids(b, shape["src_len"]), "targets": ids(b, shape["tgt_len"])}
    else:
        seq = shape["seq_len"]
        p = shape["num_masked"] if shape["num_masked"] is not None else seq
        types = torch.zeros(b, seq, dtype=torch.long)
        if cfg.type_vocab_size > 1:
            types[:, seq // 2:] = 1  # sentence A, then sentence B
        input_ids = ids(b, seq)
        labels = torch.full((b, seq), -100, dtype=torch.long)
        for row in range(b):
            pos = torch.randperm(seq, generator=g)[:p]
            labels[row, pos] = ids(p)
        batch = {
            "input_ids": input_ids, "token_type_ids": types,
            "attention_mask": torch.ones(b, seq, dtype=torch.long), "labels": labels,
            "next_sentence_label": torch.randint(0, 2, (b,), generator=g, dtype=torch.long),
        }
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(model: str, module: torch.nn.Module, opt_cfg, device) -> torch.optim.Optimizer:
    """Our optimizer's hyperparameters in torch: AdamW (BERT) or Adam (Transformer), fused on CUDA."""
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    lr = float(opt_cfg.get("learning_rate", 1e-4) or 1e-4)
    betas, eps = (float(opt_cfg.b1), float(opt_cfg.b2)), float(opt_cfg.eps)
    if opt_cfg.name == "adamw":
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            (no_decay if name.endswith("bias") or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": float(opt_cfg.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **impl)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=eps, **impl)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device=cuda but torch.cuda.is_available() is False")
    return torch.device(name)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(model: str, variant: str = "base", batch_size: int | None = None, seq_len: int | None = None, steps: int = 10,
        warmup: int = 2, compile: bool = False, dtype: str = "auto", device: str = "auto",
        max_predictions: int | None = None, attention_dropout: float | None = None, padding_masks: bool = True,
        num_layers: int | None = None, peak_tflops: float | None = None, seed: int = 0,
        compile_mode: str | None = None) -> dict[str, Any]:
    """Benchmarks the peer; returns the result record (benchmark.py's field names)."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"--steps ({steps}) and --warmup ({warmup}) must be at least 1")
    dev = resolve_device(device)
    if dtype == "auto":
        dtype = "bf16" if dev.type == "cuda" else "fp32"
    config = load_config(model, variant, num_layers)
    cfg = ModelConfig.from_config(config)
    shape = shapes(config, batch_size, seq_len, max_predictions)
    longest = max(v for k, v in shape.items() if k.endswith("len"))
    if cfg.positional == "learned" and longest > cfg.max_len:
        raise ValueError(f"sequence length {longest} exceeds the learned position table (model.max_len={cfg.max_len})")

    torch.manual_seed(seed)
    with dev:
        module = build_model(model, config, cfg, attention_dropout, padding_masks, longest)
    module = module.to(dev).train()
    n_params = count_params(module)
    description = peer_description(model, module)
    opt = make_optimizer(model, module, config.optimizer, dev)
    clip = float(config.optimizer.get("grad_clip_norm", 0.0) or 0.0)
    params = [p for p in module.parameters() if p.requires_grad]
    forward = torch.compile(module, mode=compile_mode) if compile else module
    batch = synthetic_batch(model, cfg, shape, dev, seed)
    if dtype == "bf16":
        autocast = lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    def train_step():
        with autocast():
            loss = forward(**batch)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = train_step()
    _sync(dev)
    t1 = time.perf_counter()
    for _ in range(steps):
        loss = train_step()
    _sync(dev)
    t2 = time.perf_counter()
    final_loss = float(loss.detach().float().item())

    step_time = (t2 - t1) / steps
    flops_per_step = step_flops(cfg, shape)
    device_kind = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = flops.peak_flops_per_device(peak_tflops * 1e12 if peak_tflops else None, device_kind)
    b = shape["batch_size"]
    if model == "transformer":
        tokens_per_step = float((batch["inputs"] > 0).sum().item() + (batch["targets"] > 0).sum().item())
    else:
        tokens_per_step = float(batch["attention_mask"].sum().item())
    import transformers

    return {
        "task": config.task,
        "model_family": config.get("model_family", None),
        "variant": variant,
        "implementation": "transformers.BertForPreTraining" if model == "bert" else "torch.nn.Transformer",
        **shape,
        "steps": steps,
        "warmup": warmup,
        "step_time_s": step_time,
        "steps_per_s": 1.0 / step_time,
        "seq_per_s": b / step_time,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / step_time,
        "model_tflops_per_step": flops_per_step / 1e12,
        "model_tflops": flops_per_step / 1e12,
        "achieved_tflops_per_s": flops_per_step / step_time / 1e12,
        "peak_tflops_per_device": peak / 1e12 if peak else None,
        "mfu": flops.mfu(flops_per_step, 1.0 / step_time, 1, peak),
        "peak_memory_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None,
        "peak_memory_reserved_gb": torch.cuda.max_memory_reserved(dev) / 1e9 if dev.type == "cuda" else None,
        "compile_and_warmup_s": t1 - t0,
        "final_loss": final_loss,
        "compute_dtype": DTYPE_NAMES[dtype],
        "autocast": dtype == "bf16",
        "compile": bool(compile),
        "compile_mode": compile_mode,
        "device_kind": device_kind,
        "platform": dev.type,
        "num_devices": 1,
        "param_count": n_params,
        "optimizer": {
            "name": type(opt).__name__, "fused": bool(opt.defaults.get("fused")),
            "foreach": bool(opt.defaults.get("foreach")), "betas": list(opt.defaults["betas"]),
            "eps": opt.defaults["eps"], "weight_decay": config.optimizer.get("weight_decay", 0.0),
            "grad_clip_norm": clip,
        },
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "cuda_version": torch.version.cuda,
        "torch_num_threads": torch.get_num_threads(),
        "peer_config": description,
        "model_config": cfg.to_dict(),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.model is None:
        raise app.UsageError("--model=bert|transformer is required")
    record = run(
        FLAGS.model, FLAGS.variant, FLAGS.batch_size, FLAGS.seq_len, FLAGS.steps, FLAGS.warmup, FLAGS.compile,
        FLAGS.dtype, FLAGS.device, FLAGS.max_predictions, FLAGS.attention_dropout, FLAGS.padding_masks,
        FLAGS.num_layers, FLAGS.peak_tflops, FLAGS.seed, FLAGS.compile_mode,
    )
    logging.info("peer_benchmark: %.4f s/step, %.1f seq/s", record["step_time_s"], record["seq_per_s"])
    print(json.dumps(record, default=str), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
