"""Write a run's BERT weights as a Hugging Face model folder that `transformers` loads.

    python -m bert_vs_transformer.cli.export_hf --workdir=DIR --output=OUT [--step=N] [--member=K]
        [--dtype=float16] [--max_shard_mb=15]

DIR is a workdir of ours (pretraining or GLUE fine-tuning). OUT receives:

- `model.safetensors`: `convert.bert_to_hf` of the checkpoint's parameters, float32 (or `--dtype`),
  written with `safetensors.numpy.save_file` (no pickle); with `--max_shard_mb`, Hugging Face's
  shards and `model.safetensors.index.json` instead (what transformers and `init=OUT` read too). Naming follows the heads the run has:
  pretraining (`mlm`/`nsp`) -> `BertForPreTraining` (`bert.*`, `cls.*`); classification ->
  `BertForSequenceClassification` (`bert.*`, `classifier.*`); span -> `BertForQuestionAnswering`;
  encoder only -> `BertModel`.
- `config.json`: `convert.config_to_hf` of the run's model config, with `architectures` set as
  above and, for a classifier, `num_labels` (`problem_type` "regression" when it is 1, as STS-B),
  `id2label` / `label2id`.
- `vocab.txt` (the run's WordPiece vocabulary: `config.data.vocab_path` / `vocab`, default BERT's
  uncased one) and `tokenizer_config.json` (`BertTokenizer`, `do_lower_case` from the run), so
  `AutoTokenizer.from_pretrained(OUT)` works too.

`transformers.AutoModelForSequenceClassification.from_pretrained(OUT)` (or `BertForPreTraining`)
then gives the same outputs as our model (tests/evaluation/test_glue.py checks logits to 1e-4). The folder is
also a valid `init=OUT` for configs/glue.py. A learned (`train:<n>`) pretraining vocabulary is
resolved through the data pipeline (it needs the corpus, as the run did).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from bert_vs_transformer.cli import ArgumentParser, report
from bert_vs_transformer.data import pretraining_pipeline, wordpiece
from bert_vs_transformer.models import convert
from bert_vs_transformer.models.model_config import ModelConfig
from bert_vs_transformer.training import members, run_loading

GLUE_LABELS = {
    "sst2": ("negative", "positive"),
    "cola": ("unacceptable", "acceptable"),
    "mrpc": ("not_equivalent", "equivalent"),
    "rte": ("entailment", "not_entailment"),
}


def architecture(params: dict) -> str:
    if "mlm" in params or "nsp" in params:
        return "BertForPreTraining"
    if "classifier" in params:
        return "BertForSequenceClassification"
    if "span" in params:
        return "BertForQuestionAnswering"
    return "BertModel"


def hf_config(config, cfg: ModelConfig, params: dict) -> dict[str, Any]:
    """config.json for the exported folder."""
    out = convert.config_to_hf(cfg)
    arch = architecture(params)
    out["architectures"] = [arch]
    if arch == "BertForSequenceClassification":
        n = int(np.shape(params["classifier"]["bias"])[-1])
        out["num_labels"] = n
        if n == 1:
            out["problem_type"] = "regression"
            names = ("score",)
        else:
            out["problem_type"] = "single_label_classification"
            task = config.get("glue_task", None) or config.data.get("dataset", None)
            names = GLUE_LABELS.get(task, tuple(f"LABEL_{i}" for i in range(n)))
            if len(names) != n:
                names = tuple(f"LABEL_{i}" for i in range(n))
        out["id2label"] = {str(i): name for i, name in enumerate(names)}
        out["label2id"] = {name: i for i, name in enumerate(names)}
    if config.get("glue_task", None):
        out["finetuning_task"] = config.glue_task
    return out


def vocab_file(config) -> str:
    """The run's vocab.txt."""
    d = config.data
    spec = str(d.get("vocab_path", None) or d.get("vocab", None) or "")
    if spec.startswith("train:"):
        return pretraining_pipeline.tokenizer(config).vocab_path
    if not spec:
        return wordpiece.default_vocab_path()
    return os.path.join(spec, "vocab.txt") if os.path.isdir(spec) else spec


def write_weights(state_dict: dict[str, np.ndarray], output: str, max_shard_mb: float = 0) -> list[str]:
    """OUT/model.safetensors, or with max_shard_mb > 0 Hugging Face's shards (model-0000k-of-0000n.safetensors,
    each at most that size unless one tensor is larger, and model.safetensors.index.json); -> files written.
    An earlier export's weight files in OUT are removed first."""
    from safetensors.numpy import save_file

    # an earlier export's weights in OUT (another layout or shard count) would be read instead of, or
    # mixed with, these: model.safetensors wins over shards in transformers and convert.load_hf_weights
    for old in [os.path.join(output, "model.safetensors"), os.path.join(output, convert.SHARD_INDEX),
                *glob.glob(os.path.join(output, "model-*-of-*.safetensors"))]:
        if os.path.isfile(old):
            os.remove(old)
    tensors = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    limit = int(max_shard_mb * 2**20)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, v in tensors.items():
        if limit and shards[-1] and size + v.nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = v
        size += v.nbytes
    if not limit or len(shards) == 1:
        save_file(tensors, os.path.join(output, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for f, shard in zip(files, shards):
        save_file(shard, os.path.join(output, f), metadata={"format": "pt"})
    index = {"metadata": {"total_size": int(sum(v.nbytes for v in tensors.values()))},
             "weight_map": {name: f for f, shard in zip(files, shards) for name in shard}}
    with open(os.path.join(output, convert.SHARD_INDEX), "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
    return files + [convert.SHARD_INDEX]


def export(config, params: Any, output: str, dtype: str = "float32", max_shard_mb: float = 0) -> dict[str, Any]:
    """Writes OUT/{model.safetensors (or shards), config.json, vocab.txt, tokenizer_config.json}; -> config.json
    dict. dtype float16 / bfloat16 halves the weights (their rounding: about 1e-3 of each value)."""

    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype={dtype!r} is not float32, float16 or bfloat16")
    cfg = ModelConfig.from_config(config)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(nn.unbox(params)))
    params = dict(params)
    state_dict = convert.bert_to_hf(cfg, params)
    hf = hf_config(config, cfg, params)
    if dtype != "float32":
        import ml_dtypes

        np_dtype = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
        state_dict = {k: v.astype(np_dtype) for k, v in state_dict.items()}
        hf["torch_dtype"] = hf["dtype"] = dtype
    os.makedirs(output, exist_ok=True)
    write_weights(state_dict, output, max_shard_mb)
    with open(os.path.join(output, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    vocab = vocab_file(config)
    shutil.copyfile(vocab, os.path.join(output, "vocab.txt"))
    lowercase = bool(config.data.get("lowercase", True))
    with open(os.path.join(output, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                   "model_max_length": int(cfg.max_len)}, f, indent=2)
    return hf


def export_run(workdir: str, output: str, step: int | None = None, member: int | None = None,
               dtype: str = "float32", max_shard_mb: float = 0) -> dict[str, Any]:
    """Loads the checkpoint (latest if step is None or 0) of `workdir` and exports it (export()); ->
    config.json dict plus 'step'. A member run (training/member_group.py) exports one member: `member` indexes them."""
    config, params, step = run_loading.load_run(workdir, step or None, device=jax.local_devices()[0])
    group = members.parse(config)
    if group:
        names = [f"{k}: {m.name}" for k, m in enumerate(group)]
        if member is None or not 0 <= member < len(group):
            raise ValueError(f"{workdir} is a member run: pass --member=K, one of {names}")
        params = jax.tree_util.tree_map(lambda x: x[member], params)
        config = members.member_config(config, group[member])
    elif member is not None:
        raise ValueError(f"--member={member}: {workdir} is a single run, not a member run")
    if "bert" not in params:
        raise ValueError(f"{workdir} holds a {config.get('task')!r} run without a BERT encoder (params['bert']); "
                         "export_hf writes BERT runs only (pretraining or GLUE fine-tuning)")
    hf = export(config, params, output, dtype, max_shard_mb)
    return dict(hf, step=step)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory of ours (checkpoints/)")
    parser.add_argument("--output", required=True, help="the Hugging Face folder to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default or 0: latest)")
    parser.add_argument("--member", type=int, default=None,
                        help="a member run (--config.member_seeds/member_lrs): which member to export")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="the stored weights' type (float16: half the bytes, rounding of about 1e-3 relative)")
    parser.add_argument("--max_shard_mb", type=float, default=0,
                        help=">0: Hugging Face shards of at most this many MiB (+ model.safetensors.index.json)")
    args = parser.parse_args(argv)
    level = logging.get_verbosity()
    if not args.verbose:
        logging.set_verbosity(logging.ERROR)  # orbax warns about read-only managers
    try:
        hf = export_run(args.workdir, args.output, args.step, args.member, args.dtype, args.max_shard_mb)
    except (FileNotFoundError, ValueError) as e:
        return report(e, show_traceback=args.verbose)
    finally:
        logging.set_verbosity(level)
    print(json.dumps({"output": os.path.abspath(args.output), "step": hf["step"],
                      "architectures": hf["architectures"], "num_labels": hf.get("num_labels")}))
    return 0


def run():
    """Console-script entry point (bvt-export-hf)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
