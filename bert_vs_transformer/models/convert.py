"""Hugging Face BERT weights <-> our Flax params (numpy state dicts; nothing is unpickled).

`bert_from_hf` accepts the `BertForPreTraining` naming (`bert.` prefix, `cls.` heads) and the
`BertModel` naming without the prefix (sentence-transformers checkpoints). `bert_to_hf` writes the
naming the params imply: with MLM/NSP heads the `BertForPreTraining` one, otherwise `BertModel`'s.
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any, Mapping

import jax
import numpy as np

from bert_vs_transformer.models.model_config import ModelConfig

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def config_from_hf(hf_config: Any, **overrides) -> ModelConfig:
    """A `transformers.BertConfig` (or its dict / config.json path) -> ModelConfig."""
    if isinstance(hf_config, (str, os.PathLike)):
        with open(hf_config) as f:
            hf_config = json.load(f)
    get = (lambda k, d=None: hf_config.get(k, d)) if isinstance(hf_config, Mapping) else (
        lambda k, d=None: getattr(hf_config, k, d))
    act = get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}; supported: {sorted(_ACTIVATIONS)}")
    if get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"unsupported position_embedding_type {get('position_embedding_type')!r}")
    fields = dict(
        vocab_size=get("vocab_size"),
        d_model=get("hidden_size"),
        num_heads=get("num_attention_heads"),
        d_ff=get("intermediate_size"),
        num_encoder_layers=get("num_hidden_layers"),
        num_decoder_layers=0,
        activation=_ACTIVATIONS[act],
        positional="learned",
        max_len=get("max_position_embeddings", 512),
        type_vocab_size=get("type_vocab_size", 2),
        embed_scale=False,
        embed_layernorm=True,
        layernorm_eps=get("layer_norm_eps", 1e-12),
        dropout_rate=get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=get("attention_probs_dropout_prob", 0.1),
        norm_position="post",
        use_bias=True,
        share_embeddings=True,
        initializer="bert",
        pooler=True,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """ModelConfig -> a `BertConfig` dict (config.json), for configs that BERT can express."""
    inverse = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
    problems = []
    if cfg.num_decoder_layers:
        problems.append("num_decoder_layers > 0")
    if cfg.positional != "learned" or cfg.embed_scale or not cfg.embed_layernorm:
        problems.append("BERT embeddings need learned positions, no sqrt(d) scale, an embedding LayerNorm")
    if cfg.norm_position != "post" or not cfg.use_bias or cfg.qkv_dim * cfg.num_heads != cfg.d_model:
        problems.append("BERT layers need post-LN, biases and head_dim = d_model / num_heads")
    if cfg.causal or cfg.pooling != "first":
        problems.append("BERT attends bidirectionally and pools the first token ([CLS]); "
                        f"got causal={cfg.causal}, pooling={cfg.pooling!r}")
    if problems:
        raise ValueError("config has no BERT equivalent: " + "; ".join(problems))
    return {
        "architectures": ["BertForPreTraining"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_encoder_layers,
        "hidden_act": inverse[cfg.activation],
        "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layernorm_eps,
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }


def _linear_in(w, b, in_shape, out_shape):
    """torch Linear (out, in) weight -> our kernel in_shape + out_shape and bias out_shape."""
    return {"kernel": np.asarray(w).T.reshape(*in_shape, *out_shape), "bias": np.asarray(b).reshape(out_shape)}


def _linear_out(p, prefix, sd):
    k = np.asarray(p["kernel"])
    out_size = int(np.prod(np.asarray(p["bias"]).shape))
    sd[prefix + ".weight"] = k.reshape(-1, out_size).T.copy()
    sd[prefix + ".bias"] = np.asarray(p["bias"]).reshape(-1).copy()


def _ln_in(w, b):
    return {"scale": np.asarray(w), "bias": np.asarray(b)}


def _ln_out(p, prefix, sd):
    sd[prefix + ".weight"] = np.asarray(p["scale"]).copy()
    sd[prefix + ".bias"] = np.asarray(p["bias"]).copy()


def bert_from_hf(state_dict: Mapping[str, Any], hf_config: Any, **config_overrides) -> tuple[ModelConfig, dict]:
    """HF BERT state dict (numpy or torch tensors) + config -> (ModelConfig, params).

    params = {'bert': ..., 'mlm': ..., 'nsp': ...}; the heads appear only when the state dict has
    them. With config_overrides(scan_layers=True) the layers are stacked for nn.scan.
    """
    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    if not any(k.startswith("bert.") for k in sd):  # BertModel naming: add the prefix
        sd = {("bert." + k if not k.startswith("cls.") else k): v for k, v in sd.items()}
    cfg = config_from_hf(hf_config, **config_overrides)
    used: set[str] = set()

    def take(name):
        if name not in sd:
            raise KeyError(f"state dict has no {name!r} (has e.g. {sorted(sd)[:5]})")
        used.add(name)
        return sd[name]

    d, h, dk = cfg.d_model, cfg.num_heads, cfg.qkv_dim
    lin = lambda name, i, o: _linear_in(take(name + ".weight"), take(name + ".bias"), i, o)  # noqa: E731
    ln = lambda name: _ln_in(take(name + ".weight"), take(name + ".bias"))  # noqa: E731
    # Spelled out rather than traverse_util.unflatten_dict over renamed keys: each entry also
    # transposes/reshapes (torch Linear -> multi-axis kernel), which a key renaming cannot say.
    e = "bert.embeddings."
    encoder = {
        "embeddings": {
            "position_embedding": take(e + "position_embeddings.weight"),
            "token_type_embedding": take(e + "token_type_embeddings.weight"),
            "layernorm": ln(e + "LayerNorm"),
        }
    }
    for i in range(cfg.num_encoder_layers):
        p = f"bert.encoder.layer.{i}."
        encoder[f"layers_{i}"] = {
            "attention": {
                "query": lin(p + "attention.self.query", (d,), (h, dk)),
                "key": lin(p + "attention.self.key", (d,), (h, dk)),
                "value": lin(p + "attention.self.value", (d,), (h, dk)),
                "out": lin(p + "attention.output.dense", (h, dk), (d,)),
            },
            "attention_norm": ln(p + "attention.output.LayerNorm"),
            "ffn": {
                "wi": lin(p + "intermediate.dense", (d,), (cfg.d_ff,)),
                "wo": lin(p + "output.dense", (cfg.d_ff,), (d,)),
            },
            "ffn_norm": ln(p + "output.LayerNorm"),
        }
    word = take(e + "word_embeddings.weight")
    bert = {"token_embed": {"embedding": word}, "encoder": encoder}
    if "bert.pooler.dense.weight" in sd:
        bert["pooler"] = lin("bert.pooler.dense", (d,), (d,))
    else:
        cfg = cfg.replace(pooler=False)
    params: dict[str, Any] = {"bert": bert}

    if "cls.predictions.transform.dense.weight" in sd:
        decoder = sd.get("cls.predictions.decoder.weight")
        if decoder is not None:
            used.add("cls.predictions.decoder.weight")
            if not np.array_equal(decoder, word):
                raise ValueError("cls.predictions.decoder.weight differs from the word embeddings; "
                                 "only tied MLM decoders (BERT's) are supported")
        bias = take("cls.predictions.bias")
        if "cls.predictions.decoder.bias" in sd:
            used.add("cls.predictions.decoder.bias")
        params["mlm"] = {
            "transform": lin("cls.predictions.transform.dense", (d,), (d,)),
            "transform_norm": ln("cls.predictions.transform.LayerNorm"),
            "output_bias": bias,
        }
    if "cls.seq_relationship.weight" in sd:
        params["nsp"] = lin("cls.seq_relationship", (d,), (2,))
    for head, (name, n_out) in {"classifier": ("classifier", None), "span": ("qa_outputs", 2)}.items():
        if name + ".weight" in sd:
            n = sd[name + ".weight"].shape[0] if n_out is None else n_out
            params[head] = lin(name, (d,), (n,))

    ignorable = {"bert.embeddings.position_ids"}
    unused = sorted(set(sd) - used - ignorable)
    if unused:
        raise ValueError(f"state dict entries not converted: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    if cfg.param_dtype != "bfloat16":
        dtype = np.dtype(cfg.param_dtype)
        params = jax.tree.map(lambda x: x.astype(dtype), params)
    if cfg.scan_layers:
        params["bert"]["encoder"] = stack_layers(params["bert"]["encoder"], cfg.num_encoder_layers)
    return cfg, params


def bert_to_hf(cfg: ModelConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our params -> HF state dict of numpy arrays (BertForPreTraining naming when the MLM/NSP
    heads are present, else BertModel naming without the `bert.` prefix)."""
    params = jax.tree.map(np.asarray, dict(params))
    enc = dict(params["bert"]["encoder"])
    if "layers" in enc:  # scanned layout
        enc = unstack_layers(enc)
    sd: dict[str, np.ndarray] = {}
    e = "bert.embeddings."
    word = params["bert"]["token_embed"]["embedding"]
    sd[e + "word_embeddings.weight"] = word.copy()
    sd[e + "position_embeddings.weight"] = enc["embeddings"]["position_embedding"].copy()
    sd[e + "token_type_embeddings.weight"] = enc["embeddings"]["token_type_embedding"].copy()
    _ln_out(enc["embeddings"]["layernorm"], e + "LayerNorm", sd)
    for i in range(cfg.num_encoder_layers):
        lp, p = enc[f"layers_{i}"], f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            _linear_out(lp["attention"][name], p + "attention.self." + name, sd)
        _linear_out(lp["attention"]["out"], p + "attention.output.dense", sd)
        _ln_out(lp["attention_norm"], p + "attention.output.LayerNorm", sd)
        _linear_out(lp["ffn"]["wi"], p + "intermediate.dense", sd)
        _linear_out(lp["ffn"]["wo"], p + "output.dense", sd)
        _ln_out(lp["ffn_norm"], p + "output.LayerNorm", sd)
    if "pooler" in params["bert"]:
        _linear_out(params["bert"]["pooler"], "bert.pooler.dense", sd)
    pretraining = "mlm" in params or "nsp" in params
    if "mlm" in params:
        mlm = params["mlm"]
        sd["cls.predictions.bias"] = mlm["output_bias"].copy()
        _linear_out(mlm["transform"], "cls.predictions.transform.dense", sd)
        _ln_out(mlm["transform_norm"], "cls.predictions.transform.LayerNorm", sd)
        sd["cls.predictions.decoder.weight"] = word.copy()
        sd["cls.predictions.decoder.bias"] = mlm["output_bias"].copy()
    if "nsp" in params:
        _linear_out(params["nsp"], "cls.seq_relationship", sd)
    if "classifier" in params:
        _linear_out(params["classifier"], "classifier", sd)
    if "span" in params:
        _linear_out(params["span"], "qa_outputs", sd)
    if not pretraining and "classifier" not in params and "span" not in params:
        sd = {k[len("bert."):]: v for k, v in sd.items()}
    return sd


def stack_layers(stack_params: Mapping[str, Any], num_layers: int) -> dict:
    """{'layers_0': t0, ..., 'layers_{n-1}': tn} -> {'layers': stacked} (the nn.scan layout)."""
    out = {k: v for k, v in stack_params.items() if not k.startswith("layers_")}
    per_layer = [stack_params[f"layers_{i}"] for i in range(num_layers)]
    out["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *per_layer)
    return out


def unstack_layers(stack_params: Mapping[str, Any]) -> dict:
    """The inverse of stack_layers."""
    out = {k: v for k, v in stack_params.items() if k != "layers"}
    stacked = stack_params["layers"]
    for i in range(jax.tree.leaves(stacked)[0].shape[0]):
        out[f"layers_{i}"] = jax.tree.map(operator.itemgetter(i), stacked)
    return out


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, converted without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a .safetensors file into numpy arrays (no pickle involved)."""
    from safetensors.numpy import load_file

    return load_file(path)


SHARD_INDEX = "model.safetensors.index.json"  # Hugging Face's sharded-checkpoint index


def is_hf_folder(path: str) -> bool:
    """A Hugging Face model folder: model.safetensors, or shards listed by model.safetensors.index.json."""
    return os.path.isfile(os.path.join(path, "model.safetensors")) or os.path.isfile(os.path.join(path, SHARD_INDEX))


def load_hf_weights(model_dir: str) -> dict[str, np.ndarray]:
    """model.safetensors, or every shard its index names (read by safetensors: no pickle)."""
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(single):
        return load_safetensors(single)
    with open(os.path.join(model_dir, SHARD_INDEX)) as f:
        weight_map = json.load(f)["weight_map"]
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        weights.update(load_safetensors(os.path.join(model_dir, shard)))
    missing = sorted(set(weight_map) - set(weights))
    if missing:
        raise ValueError(f"{model_dir}: {len(missing)} tensor(s) of {SHARD_INDEX} are in no shard, e.g. {missing[:3]}")
    return weights


def load_hf_checkpoint(model_dir: str, **config_overrides) -> tuple[ModelConfig, dict]:
    """A Hugging Face model folder (config.json + model.safetensors or its shards) -> (ModelConfig, params)."""
    config = os.path.join(model_dir, "config.json")
    for path, ok in ((os.path.join(model_dir, "model.safetensors"), is_hf_folder(model_dir)),
                     (config, os.path.isfile(config))):
        if not ok:
            raise FileNotFoundError(
                f"{path} not found: a Hugging Face BERT folder needs config.json and model.safetensors "
                f"(or {SHARD_INDEX} and its shards; pytorch_model.bin is refused: unpickling runs arbitrary code)"
            )
    return bert_from_hf(load_hf_weights(model_dir), config, **config_overrides)
