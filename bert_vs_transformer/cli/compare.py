"""Shows the relation the project is about: the Transformer encoder and BERT, side by side.

    python -m bert_vs_transformer.cli.compare [--transformer=configs/transformer.py:base]
                                          [--bert=configs/bert.py:base]

Prints every ModelConfig field on which the two configs differ, then parameter counts per
component, computed from the models themselves (shapes only, via jax.eval_shape).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from bert_vs_transformer import config_args
from bert_vs_transformer.cli import fail, run_absl
from bert_vs_transformer.models import bert, layers, transformer
from bert_vs_transformer.models.model_config import ModelConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined when it runs, so importing the module defines none)."""
    flags.DEFINE_string("transformer", "configs/transformer.py:base", "Transformer config spec.")
    flags.DEFINE_string("bert", "configs/bert.py:base", "BERT config spec.")

# Why each architectural difference exists, in the papers' words (shown beside the table).
NOTES = {
    "vocab_size": "shared en-de BPE (V 5.1) vs uncased WordPiece (B 3)",
    "d_model": "base sizes: 512 (V Table 3) vs 768 (B 3)",
    "num_heads": "",
    "d_ff": "4 x d_model in both",
    "num_encoder_layers": "",
    "num_decoder_layers": "BERT keeps only the encoder",
    "activation": "ReLU (V 3.3) vs GELU (B 3)",
    "positional": "sinusoids (V 3.5) vs a learned table (B 3)",
    "type_vocab_size": "sentence A/B segment embeddings (B 3)",
    "embed_scale": "x sqrt(d_model) (V 3.4)",
    "embed_layernorm": "LayerNorm on the embedding sum (BERT code)",
    "layernorm_eps": "",
    "attention_dropout_rate": "",
    "initializer": "Glorot vs truncated normal(0.02)",
    "pooler": "tanh dense on [CLS] for sentence-level heads",
}


def param_shapes(module: nn.Module, *args) -> dict:
    """Parameter shapes of module.init(*args), without allocating them."""
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))
    return nn.unbox(variables["params"])


def _count(tree) -> int:
    return layers.count_params(tree) if tree else 0


def _layer_total(stack: dict) -> int:
    return sum(_count(v) for k, v in stack.items() if k.startswith("layers"))


def component_counts(t_cfg: ModelConfig, b_cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """(component, Transformer count, BERT count); the Transformer's decoder listed separately."""
    ids = jnp.ones((1, 8), jnp.int32)
    tp = param_shapes(transformer.EncoderDecoder(t_cfg), ids, ids)
    bp = param_shapes(bert.BertForPreTraining(b_cfg), ids)
    t_enc, b_enc = tp["encoder"], bp["bert"]["encoder"]
    rows = [
        ("token embeddings (tied to the output layer)", _count(tp["token_embed"]), _count(bp["bert"]["token_embed"])),
        ("position + segment embeddings, embedding LayerNorm", _count(t_enc.get("embeddings")), _count(b_enc.get("embeddings"))),
        ("encoder layers, total", _layer_total(t_enc), _layer_total(b_enc)),
        ("  one encoder layer", _layer_total(t_enc) // t_cfg.num_encoder_layers,
         _layer_total(b_enc) // b_cfg.num_encoder_layers),
        ("  of which self-attention", _layer_total_of(t_enc, "attention", t_cfg),
         _layer_total_of(b_enc, "attention", b_cfg)),
        ("  of which feed-forward", _layer_total_of(t_enc, "ffn", t_cfg), _layer_total_of(b_enc, "ffn", b_cfg)),
        ("pooler", 0, _count(bp["bert"].get("pooler"))),
        ("MLM head (transform + LayerNorm + output bias)", 0, _count(bp["mlm"])),
        ("NSP head", 0, _count(bp["nsp"])),
    ]
    encoder_total = _count(tp["token_embed"]) + _count(t_enc)
    rows.append(("= encoder side total", encoder_total, _count(bp)))
    rows.append(("decoder (Transformer only)", _count(tp["decoder"]), 0))
    rows.append(("= whole model", _count(tp), _count(bp)))
    return rows


def _layer_total_of(stack: dict, sub: str, cfg: ModelConfig) -> int:
    """Per-layer parameters of one sublayer kind (attention or ffn), averaged over layers."""
    total = sum(_count(v.get(sub)) for k, v in stack.items() if k.startswith("layers"))
    return total // cfg.num_encoder_layers


def config_diff(t_cfg: ModelConfig, b_cfg: ModelConfig) -> list[tuple[str, object, object]]:
    """ModelConfig fields whose values differ (the relation, as data)."""
    out = []
    for f in dataclasses.fields(ModelConfig):
        a, b = getattr(t_cfg, f.name), getattr(b_cfg, f.name)
        if a != b:
            out.append((f.name, a, b))
    return out


def training_diff(t_config, b_config) -> list[tuple[str, object, object]]:
    """Non-model config fields (optimizer, schedule, objective, steps) that differ or exist in one."""
    def flat(cd, prefix=""):
        out = {}
        for k, v in cd.items():
            if k in ("model", "data", "mesh"):
                continue
            if hasattr(v, "items"):
                out.update(flat(v, prefix + k + "."))
            else:
                out[prefix + k] = v
        return out

    ta, bb = flat(t_config), flat(b_config)
    missing = "-"
    return [(k, ta.get(k, missing), bb.get(k, missing)) for k in sorted(set(ta) | set(bb))
            if ta.get(k, missing) != bb.get(k, missing)]


def render(t_spec: str, b_spec: str) -> str:
    t_cfg, b_cfg = config_args.model_config(t_spec), config_args.model_config(b_spec)
    lines = [f"Transformer: {t_spec}    BERT: {b_spec}", ""]
    lines += ["Settings that differ (every other ModelConfig field is equal):", ""]
    lines += ["| field | Transformer | BERT | note |", "|---|---|---|---|"]
    for name, a, b in config_diff(t_cfg, b_cfg):
        lines.append(f"| `{name}` | {a} | {b} | {NOTES.get(name, '')} |")
    same = [f.name for f in dataclasses.fields(ModelConfig)
            if getattr(t_cfg, f.name) == getattr(b_cfg, f.name)]
    lines += ["", "Equal: " + ", ".join(f"`{n}`" for n in same), ""]
    lines += ["Training settings that differ:", "", "| field | Transformer | BERT |", "|---|---|---|"]
    for name, a, b in training_diff(config_args.load(t_spec), config_args.load(b_spec)):
        lines.append(f"| `{name}` | {a} | {b} |")
    lines.append("")
    lines += ["Parameters per component:", ""]
    lines += ["| component | Transformer | BERT |", "|---|---:|---:|"]
    for name, a, b in component_counts(t_cfg, b_cfg):
        lines.append(f"| {name} | {a:,} | {b:,} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("transformer", "bert"):
        try:
            config_args.load(FLAGS[name].value)
        except (FileNotFoundError, ValueError) as e:
            fail(f"--{name}={FLAGS[name].value}: {e}", e)
    print(render(FLAGS.transformer, FLAGS.bert))


def run():
    """Console-script entry point (bvt-compare)."""
    define_flags()
    run_absl(main)


if __name__ == "__main__":
    run()
