"""How much the sentence summaries of a BERT vary across CoLA dev sentences: a pretraining workdir
against a random init of its architecture.

For each of [CLS]'s hidden state, the pooled [CLS] (tanh dense), the mean of the real tokens' hidden
states, the pooler on that mean (`pooling=mean`) and every real token's hidden state, prints
spread = sqrt(mean over dims of the across-sentence variance) / RMS of the vectors:
0 when every sentence gets the same vector, 1 when the vectors are centred at 0.

    BVT_DATA_DIR=../shared/data python -m experiments.cls_spread --workdir=PT
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from bert_vs_transformer.training import run_loading


def spread(x) -> float:
    """sqrt(mean_d var_n x[n, d]) / sqrt(mean x^2); rows are examples."""
    x = np.asarray(x, np.float64)
    return float(np.sqrt(x.var(axis=0).mean()) / np.sqrt((x ** 2).mean()))


def summaries(cfg, params, ids, mask) -> dict[str, float]:
    """Spread of each summary of `ids` [n, L] (mask: real tokens) under (cfg, params)."""
    from bert_vs_transformer.models import bert

    hidden, pooled = bert.encode(cfg, params, ids, None, mask)
    _, mean_pooled = bert.encode(cfg.replace(pooling="mean"), params, ids, None, mask)
    hidden, m = np.asarray(hidden, np.float64), np.asarray(mask, bool)
    mean_hidden = (hidden * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    return {"cls_hidden": spread(hidden[:, 0]), "cls_pooled": spread(pooled),
            "mean_hidden": spread(mean_hidden), "mean_pooled": spread(mean_pooled),
            "all_tokens": spread(hidden[m])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a pretraining workdir of ours (holds vocab.txt)")
    parser.add_argument("--n", type=int, default=512, help="CoLA dev sentences (in-domain, in file order)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random init")
    args = parser.parse_args(argv)

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bert_vs_transformer import tasks
    from bert_vs_transformer.models import bert
    from bert_vs_transformer.data import records, sources, wordpiece

    config, params, step = run_loading.load_run(args.workdir, None)
    cfg = tasks.get_task(config).model_config
    tok = wordpiece.load_wordpiece(f"{args.workdir}/vocab.txt", lowercase=bool(config.data.lowercase))
    path = sources.local_file("glue/CoLA/in_domain_dev.tsv")
    rows, _ = sources.read_lines(path)
    sentences = [line.split("\t")[3] for _, line in rows][: args.n]
    encoded = [tok.encode_pair(s)[0] for s in sentences]
    ids = jnp.asarray(records.pad(encoded, max(map(len, encoded))))
    mask = ids != 0
    random = nn.unbox(bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(args.seed), ids[:2], None, mask[:2])["params"])
    for name, p in ((f"{args.workdir} step {step}", params), (f"random init (seed {args.seed})", random)):
        print(json.dumps({"init": name, "sentences": len(sentences),
                          **{k: round(v, 4) for k, v in summaries(cfg, p, ids, mask).items()}}))


if __name__ == "__main__":
    main()
