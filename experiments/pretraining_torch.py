r"""An independent pretraining curve: `transformers`' BertForPreTraining (PyTorch) on our exact batches.

    BVT_DATA_DIR=../shared/data python -m experiments.pretraining_torch --config_json=PT/config.json \
        --steps=300 --output=/tmp/torch_pt.jsonl [--eval_every=500 --threads=1]

PT is a pretraining workdir of ours (its config.json: architecture, vocabulary, data and optimiser).
The batches come from this project's pipeline (`pretraining_pipeline.train_iterator`, the same seed,
order and masks as PT's run); everything else is PyTorch's: HF's BERT with its own init (normal 0.02),
AdamW with weight decay except biases and LayerNorm, linear warmup then linear decay to 0 at
config.num_train_steps, global-norm clipping at 1.0. Logged `loss` is MLM + NSP averaged over the last
`--log_every` steps, as our metrics.jsonl logs it, so the two curves compare line by line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def torch_batch(b, torch):
    """Our batch -> HF kwargs (labels -100 except at the weighted masked positions)."""
    ids = torch.from_numpy(b["input_ids"].astype(np.int64))
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    rows, cols = np.nonzero(b["masked_lm_weights"] > 0)
    labels[rows, b["masked_lm_positions"][rows, cols]] = b["masked_lm_ids"][rows, cols]
    return dict(input_ids=ids, token_type_ids=torch.from_numpy(b["token_type_ids"].astype(np.int64)),
                attention_mask=torch.from_numpy(b["attention_mask"].astype(np.int64)),
                labels=torch.from_numpy(labels),
                next_sentence_label=torch.from_numpy(b["next_sentence_labels"].astype(np.int64)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_json", required=True, help="a pretraining workdir's config.json")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", required=True, help="JSONL of training (and eval) metrics")
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--eval_every", type=int, default=0, help="0 = no held-out eval")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="torch seed (model init, dropout)")
    args = parser.parse_args(argv)

    import ml_collections
    import torch
    from transformers import BertConfig, BertForPreTraining

    from bert_vs_transformer.data import pretraining_pipeline
    from experiments import glue_torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with open(args.config_json) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    if cfg.task != "pretraining":
        raise SystemExit(f"{args.config_json} is a {cfg.task!r} run, not a pretraining one")
    m, o = cfg.model, cfg.optimizer
    if m.positional != "learned" or m.norm_position != "post":
        raise SystemExit("HF's BERT has learned positions and post-LN; this config has "
                         f"positional={m.positional!r}, norm_position={m.norm_position!r}")
    model = BertForPreTraining(BertConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.num_encoder_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.d_ff, hidden_act="gelu",
        hidden_dropout_prob=m.dropout_rate, attention_probs_dropout_prob=m.attention_dropout_rate,
        max_position_embeddings=m.max_len, type_vocab_size=m.type_vocab_size, layer_norm_eps=m.layernorm_eps))
    opt = torch.optim.AdamW(glue_torch.adamw_groups(model, o.weight_decay),
                            lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
    warmup, total = int(o.warmup_steps), int(cfg.num_train_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: glue_torch.lr_factor(s, warmup, total))
    nsp_weight = float(cfg.get("nsp_weight", 1.0))

    def evaluate() -> dict:
        model.eval()
        n = correct = loss = 0.0
        with torch.no_grad():
            for b in pretraining_pipeline.eval_batches(cfg, cfg.data.eval_split):
                real = b["example_weights"] > 0
                t = torch_batch({k: v[real] for k, v in b.items()}, torch)
                out = model(input_ids=t["input_ids"], token_type_ids=t["token_type_ids"],
                            attention_mask=t["attention_mask"])
                sel = t["labels"] != -100
                logits, target = out.prediction_logits[sel], t["labels"][sel]
                loss += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
                correct += (logits.argmax(-1) == target).sum().item()
                n += sel.sum().item()
        model.train()
        return {"eval_mlm_loss": loss / n, "eval_mlm_accuracy": correct / n}

    it = pretraining_pipeline.train_iterator(cfg)
    model.train()
    losses, start = [], time.time()
    with open(args.output, "w") as out_f:
        for step in range(1, args.steps + 1):
            t = torch_batch(next(it), torch)
            out = model(input_ids=t["input_ids"], token_type_ids=t["token_type_ids"],
                        attention_mask=t["attention_mask"])
            mlm = torch.nn.functional.cross_entropy(
                out.prediction_logits.reshape(-1, m.vocab_size), t["labels"].reshape(-1), ignore_index=-100)
            nsp = torch.nn.functional.cross_entropy(out.seq_relationship_logits, t["next_sentence_label"])
            loss = mlm + nsp_weight * nsp
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
            opt.step()
            sched.step()
            losses.append(loss.item())
            rows = []
            if step % args.log_every == 0:
                rows.append({"step": step, "loss": float(np.mean(losses[-args.log_every:])),
                             "learning_rate": sched.get_last_lr()[0], "steps_per_s": step / (time.time() - start)})
            if args.eval_every and step % args.eval_every == 0:
                rows.append({"step": step, **evaluate()})
            for r in rows:
                print(json.dumps(r), flush=True)
                out_f.write(json.dumps(r) + "\n")
                out_f.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
