"""Which sentence pairs did a pretraining run's NSP head learn? NSP accuracy and AUC on held-out pairs.

The pretraining corpus holds the STS-B, MRPC and RTE train pairs (without labels) as two-sentence
documents; their dev pairs are not in it. For each task's dev split, half the examples are IsNext
(sentence1, its own sentence2) and half NotNext (sentence1, the sentence2 of another pair of the
split); PTB valid, the corpus's held-out split, gives consecutive lines vs a line from elsewhere.
Prints one JSON line per set: NSP accuracy (argmax; label 0 = IsNext as in pretraining) and AUC of
logit(IsNext) - logit(NotNext) (0.5 = chance, robust to a biased head).

    BVT_DATA_DIR=../shared/data python -m experiments.nsp_probe --workdir=PT [--n=400]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bert_vs_transformer.training import run_loading


def make_pairs(firsts, seconds, n: int, seed: int = 0) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Up to n pairs: even i -> (firsts[i], seconds[i]) IsNext (label 0); odd i -> (firsts[i],
    seconds[j]) with j != i drawn from the rest, NotNext (label 1)."""
    m = min(n, len(firsts))
    if m < 2:
        raise ValueError(f"need at least 2 pairs, got {m}")
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for i in range(m):
        if i % 2 == 0:
            pairs.append((firsts[i], seconds[i]))
            labels.append(0)
        else:
            j = (i + int(rng.integers(1, len(seconds)))) % len(seconds)  # never i itself
            pairs.append((firsts[i], seconds[j]))
            labels.append(1)
    return pairs, np.asarray(labels, np.int32)


def auc(scores, labels) -> float:
    """P(score of a label-0 example > score of a label-1 example), ties counted half."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels)
    pos, neg = s[y == 0], s[y == 1]
    if not len(pos) or not len(neg):
        raise ValueError("auc needs examples of both labels")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def probe_sets(n: int, seed: int) -> dict[str, tuple[list[tuple[str, str]], np.ndarray]]:
    from bert_vs_transformer.data import builders, sources

    keys = ["glue/STS-B/dev.tsv", "glue/MRPC/msr_paraphrase_train.txt", "glue/RTE/val.jsonl", "ptb/ptb.valid.txt"]
    files = {k: sources.local_file(k) for k in keys}
    out = {}
    for task in ("stsb", "mrpc", "rte"):
        rows, _ = builders.glue_rows(task, "validation", files)
        out[f"{task}_dev"] = make_pairs([r[0] for _, r in rows], [r[1] for _, r in rows], n, seed)
    lines = [t for _, t in sources.read_lines(files["ptb/ptb.valid.txt"])[0]]
    out["ptb_valid"] = make_pairs(lines[:-1], lines[1:], n, seed)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a pretraining workdir of ours (holds vocab.txt)")
    parser.add_argument("--n", type=int, default=400, help="pairs per set (half IsNext, half NotNext)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import jax.numpy as jnp

    from bert_vs_transformer import tasks
    from bert_vs_transformer.models import bert
    from bert_vs_transformer.data import records, wordpiece

    config, params, step = run_loading.load_run(args.workdir, None)
    cfg = tasks.get_task(config).model_config
    tok = wordpiece.load_wordpiece(f"{args.workdir}/vocab.txt", lowercase=bool(config.data.lowercase))
    max_len = int(config.data.max_seq_len)
    for name, (pairs, labels) in probe_sets(args.n, args.seed).items():
        enc = [tok.encode_pair(a, b, max_len=max_len) for a, b in pairs]
        width = max(len(ids) for ids, _ in enc)
        ids = jnp.asarray(records.pad([e[0] for e in enc], width))
        types = jnp.asarray(records.pad([e[1] for e in enc], width))
        _, nsp = bert.pretraining_logits(cfg, params, ids, types, ids != 0)
        nsp = np.asarray(nsp, np.float64)
        print(json.dumps({"workdir": args.workdir, "step": step, "set": name, "pairs": len(pairs),
                          "nsp_accuracy": round(float((nsp.argmax(-1) == labels).mean()), 4),
                          "auc": round(auc(nsp[:, 0] - nsp[:, 1], labels), 4)}), flush=True)


if __name__ == "__main__":
    main()
