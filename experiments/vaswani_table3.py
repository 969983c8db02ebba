"""Vaswani et al. (2017), Table 3: variations on the Transformer base, rows (A)-(E), at Multi30k
scale, or with `data=wmt14` on the paper's own data and scale.

The paper changes one thing at a time from its base (N=6, d_model=512, d_ff=2048, h=8, d_k=d_v=64,
P_drop=0.1, eps_ls=0.1; 100K steps) and reports newstest2013 (dev) perplexity and BLEU. Here each
row changes the same thing, by the same ratio, from configs/transformer.py:multi30k, read when the
sweep is expanded (so the rows follow that config):

  (A) heads at constant compute: h x d_k = d_model; h scaled by the paper's ratio to its base
      (1/8 -> at least 1 head, 1/2, 2, 4); d_k = d_model / h (head_dim left unset).
  (B) smaller keys, h kept: head_dim = base d_k x 1/4 and x 1/2.
  (C) depth N (encoder and decoder) x 1/3, 2/3, 4/3 (rounded, >= 1); d_model x 1/2 and x 2 with h
      kept (so d_k scales with it, as in the paper's rows); d_ff x 1/2 and x 2.
  (D) dropout 0 and base + 0.1 (the paper's 0.2 is its base 0.1 + 0.1); label smoothing 0.0 and 0.2
      (the same base 0.1 in both).
  (E) learned positional embeddings instead of sinusoids.

The paper's numbers are per-wordpiece perplexity and beam-4 BLEU on newstest2013; ours are
per-token perplexity and sacreBLEU on Multi30k's validation split (beam 4, as the paper's rows,
without checkpoint averaging). Compare each row's difference to the base, not absolute values.

`data=wmt14` runs the rows from configs/transformer.py:wmt14_base, which is the paper's base, so
every row's change is the paper's own; it reports newstest2013 perplexity and beam-4 BLEU, both
tokenized and compound-split (the paper's convention) and sacreBLEU (docs/results.md). Each row
is a 100K-step WMT14 run: a TPU slice or 8 GPUs per row (docs/wmt14.md).
"""

from __future__ import annotations

from bert_vs_transformer import config_args
from experiments.sweep import Metric, Row, Run, Sweep

CONFIG = "configs/transformer.py:multi30k"
CONFIGS = {"multi30k": CONFIG, "wmt14": "configs/transformer.py:wmt14_base"}

# The paper's base and Table 3 (newstest2013 dev): (group, row name, setting, changes from the
# base in the paper's terms, PPL, BLEU).
PAPER_BASE = dict(N=6, d_model=512, d_ff=2048, h=8, d_k=64, P_drop=0.1, eps_ls=0.1)
PAPER_ROWS = [
    ("", "base", "N=6, d_model=512, d_ff=2048, h=8, d_k=d_v=64, P_drop=0.1, eps_ls=0.1", {}, 4.92, 25.8),
    ("(A)", "A_h1", "h=1, d_k=d_v=512", dict(h=1, d_k=512), 5.29, 24.9),
    ("(A)", "A_h4", "h=4, d_k=d_v=128", dict(h=4, d_k=128), 5.00, 25.5),
    ("(A)", "A_h16", "h=16, d_k=d_v=32", dict(h=16, d_k=32), 4.91, 25.8),
    ("(A)", "A_h32", "h=32, d_k=d_v=16", dict(h=32, d_k=16), 5.01, 25.4),
    ("(B)", "B_dk16", "d_k=16", dict(d_k=16), 5.16, 25.1),
    ("(B)", "B_dk32", "d_k=32", dict(d_k=32), 5.01, 25.4),
    ("(C)", "C_N2", "N=2", dict(N=2), 6.11, 23.7),
    ("(C)", "C_N4", "N=4", dict(N=4), 5.19, 25.3),
    ("(C)", "C_N8", "N=8", dict(N=8), 4.88, 25.5),
    ("(C)", "C_d256", "d_model=256, d_k=d_v=32", dict(d_model=256, d_k=32), 5.75, 24.5),
    ("(C)", "C_d1024", "d_model=1024, d_k=d_v=128", dict(d_model=1024, d_k=128), 4.66, 26.0),
    ("(C)", "C_ff1024", "d_ff=1024", dict(d_ff=1024), 5.12, 25.4),
    ("(C)", "C_ff4096", "d_ff=4096", dict(d_ff=4096), 4.75, 26.2),
    ("(D)", "D_drop0.0", "P_drop=0.0", dict(P_drop=0.0), 5.77, 24.6),
    ("(D)", "D_drop0.2", "P_drop=0.2", dict(P_drop=0.2), 4.95, 25.5),
    ("(D)", "D_ls0.0", "eps_ls=0.0", dict(eps_ls=0.0), 4.67, 25.3),
    ("(D)", "D_ls0.2", "eps_ls=0.2", dict(eps_ls=0.2), 5.47, 25.7),
    ("(E)", "E_learned", "positional embedding instead of sinusoids", dict(positional="learned"), 4.92, 25.7),
]


def scaled_overrides(change: dict, base) -> dict:
    """The paper's change from its base, as config overrides relative to our base config."""
    m = base.model
    p = PAPER_BASE
    d_k = m.head_dim or m.d_model // m.num_heads
    out: dict = {}
    if "h" in change:  # (A): h x d_k = d_model kept, so d_k = d_model / h follows from head_dim unset
        out["model.num_heads"] = max(1, round(m.num_heads * change["h"] / p["h"]))
    elif "d_model" in change:  # (C): width with h kept; d_k = d_model / h scales with it
        out["model.d_model"] = round(m.d_model * change["d_model"] / p["d_model"])
    elif "d_k" in change:  # (B): smaller keys, h kept
        out["model.head_dim"] = max(1, round(d_k * change["d_k"] / p["d_k"]))
    if "N" in change:
        n = max(1, round(m.num_encoder_layers * change["N"] / p["N"]))
        out["model.num_encoder_layers"] = n
        out["model.num_decoder_layers"] = n
    if "d_ff" in change:
        out["model.d_ff"] = round(m.d_ff * change["d_ff"] / p["d_ff"])
    if "P_drop" in change:  # none stays none; otherwise the same step from the base
        out["model.dropout_rate"] = _shift(m.dropout_rate, change["P_drop"], p["P_drop"])
    if "eps_ls" in change:
        out["label_smoothing"] = _shift(base.label_smoothing, change["eps_ls"], p["eps_ls"])
    if "positional" in change:
        out["model.positional"] = change["positional"]
    return out


def _shift(ours: float, paper: float, paper_base: float) -> float:
    return 0.0 if paper == 0 else round(max(0.0, ours + paper - paper_base), 4)


def _ours(overrides: dict, base) -> str:
    m = base.model
    if not overrides:
        d_k = m.head_dim or m.d_model // m.num_heads
        return (f"N={m.num_encoder_layers}, d_model={m.d_model}, d_ff={m.d_ff}, h={m.num_heads}, d_k={d_k}, "
                f"P_drop={m.dropout_rate}, eps_ls={base.label_smoothing}")
    parts = [f"{_PAPER_NAMES[k]}={v}" for k, v in overrides.items() if k in _PAPER_NAMES]
    h = overrides.get("model.num_heads", m.num_heads)
    width = overrides.get("model.d_model", m.d_model)
    if "model.num_heads" in overrides or "model.d_model" in overrides:
        parts.append(f"d_k={width // h}")
    return ", ".join(parts)


# Config fields in the paper's notation (for the report's "ours" column).
_PAPER_NAMES = {"model.num_heads": "h", "model.head_dim": "d_k", "model.num_encoder_layers": "N",
                "model.d_model": "d_model", "model.d_ff": "d_ff", "model.dropout_rate": "P_drop",
                "label_smoothing": "eps_ls", "model.positional": "positional"}


def get_sweep(arg: str | None = None) -> Sweep:
    """arg: `data=multi30k|wmt14` (which config the rows start from, CONFIGS), `config=<spec>` (another
    base config) and `p_drop=<rate>`: the base row's dropout for every run (rows (D) step from it),
    e.g. p_drop=0.3, the multi30k config's value when the committed CPU run was made; -1 = the
    config's own."""
    args = config_args.parse(arg, {"data": "multi30k", "config": "", "p_drop": -1.0})
    if args["data"] not in CONFIGS:
        raise ValueError(f"data={args['data']!r}: choose from {sorted(CONFIGS)}")
    wmt14 = args["data"] == "wmt14"
    args["config"] = args["config"] or CONFIGS[args["data"]]
    base = config_args.load(args["config"])
    pinned = {}
    if args["p_drop"] >= 0:
        base.model.dropout_rate = pinned["model.dropout_rate"] = args["p_drop"]
    if base.model.head_dim:
        raise ValueError("rows (A)/(C) assume the base config leaves model.head_dim unset (d_model / h)")
    runs, rows = [], []
    for group, name, setting, change, ppl, bleu in PAPER_ROWS:
        overrides = scaled_overrides(change, base)
        runs.append(Run(name, overrides, tags={"group": group or "base"}))
        rows.append(Row(name, group=group, setting=setting, ours=_ours(overrides, base),
                        paper={"ppl": ppl, "bleu": bleu}))
    return Sweep(
        name="vaswani_table3_wmt14" if wmt14 else "vaswani_table3",
        config=args["config"],
        runs=runs,
        rows=rows,
        # The paper's Table 3 BLEU is beam search (beam 4, alpha 0.6) without checkpoint averaging.
        overrides={"evals.bleu.beam_size": 4, **pinned},
        metrics=[
            Metric("PPL (dev)", ("eval_perplexity",), paper="ppl", fmt=".2f", higher_is_better=False),
            *([Metric("BLEU (dev, tokenized, compound-split)", ("eval_bleu_compound_split",), paper="bleu", fmt=".1f"),
               Metric("sacreBLEU (dev)", ("eval_bleu",), fmt=".1f")] if wmt14 else
              [Metric("BLEU (dev)", ("eval_bleu",), paper="bleu", fmt=".1f")]),
        ],
        curves=[("loss", "training loss"), ("eval_perplexity", "dev perplexity"), ("eval_bleu", "dev BLEU")],
        baseline="base",
        title="Vaswani et al. (2017) Table 3 on WMT14" if wmt14 else "Vaswani et al. (2017) Table 3 at Multi30k scale",
        notes=(
            "Paper: newstest2013 (dev) per-wordpiece perplexity and BLEU, 100K steps. Ours: the same split, "
            "per-BPE-token perplexity, and beam-4 BLEU tokenized and compound-split as the paper counts it, "
            f"and sacreBLEU, from `{args['config']}` with each row's change (see experiments/vaswani_table3.py)."
        ) if wmt14 else (
            "Paper: newstest2013 (dev) per-wordpiece perplexity and BLEU, 100K steps, base N=6, "
            "d_model=512. Ours: Multi30k en-de validation per-token perplexity and sacreBLEU (beam 4), "
            f"`{args['config']}` with each row's change scaled to it (see experiments/vaswani_table3.py). "
            "Compare the differences to the base row."
        ),
    )
