"""The results tables of experiments/results/<experiment>/, rendered from the per-run files beside them.

Each folder holds `runs.jsonl` (one JSON object a run: `run`, its path in the layout the run was made
in, e.g. `cola/init-pt_small_hf/lr0.0001-seed0`; `hardware`; `config`, the run's config.json; and
`metrics`, its metrics.jsonl records: every evaluation, the training record before each and the last
one, plus up to 40 more for curve plots), sometimes further small files (decoder scores, probe
outputs), a hand-written README.md and the rendered `tables.md`. Nothing here trains or evaluates a
model: the tables are pure functions of those files.

    python -m experiments.report --all            # rewrite every tables.md
    python -m experiments.report --all --check    # exit 1 if a committed tables.md differs
    python -m experiments.report --all --plots    # also the PNG curves (matplotlib)
    python -m experiments.report --unpack=small_bert_pretraining --out=DIR
        # each run back as DIR/<run>/{config.json,metrics.jsonl}, e.g. for
        # `bvt-glue-grid --report_only --root=DIR ...` or `sst2_side_by_side --ours_workdirs=...`
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence

from experiments.result_runs import (  # noqa: F401  (RESULTS, unpack: used by report and tests)
    GENERATED,
    RESULTS,
    TABLES,
    TASK_ORDER,
    Run,
    cfg,
    compare_inits,
    eval_history_table,
    finetune_table,
    folder,
    glue_runs,
    load_runs,
    num,
    pct,
    pretraining_runs_table,
    pretraining_table,
    read_jsonl,
    run_summary_table,
    table,
    unpack,
)

# --- the experiments -----------------------------------------------------------------------------


def _doc(title: str, *parts: str) -> str:
    return "\n\n".join([GENERATED, f"# {title}", *[p.strip() for p in parts if p]]) + "\n"


def render_multi30k(results: str) -> str:
    runs = load_runs("multi30k", results)
    order = ["dropout_0.1", "dropout_0.3", "dropout_0.3_16k_schedule", "dropout_0.3_d256", "lr_scale_1.0"]
    summary = run_summary_table([runs[n] for n in order], [
        ("dropout", cfg("model.dropout_rate")), ("d_model / d_ff", lambda r: f"{cfg('model.d_model')(r)} / {cfg('model.d_ff')(r)}"),
        ("lr_scale", cfg("optimizer.lr_scale")), ("schedule (steps)", lambda r: f"{r.total:,}"),
        ("trained to step", lambda r: f"{r.last_step:,}"), ("batch", cfg("data.batch_size")),
        ("final training loss", lambda r: num(r.last_train and r.last_train["loss"], ".3f")),
        ("hardware", lambda r: r.hardware)])
    decodes = read_jsonl(os.path.join(folder("multi30k", results), "decodes.jsonl"))

    def dkey(d):
        return (order.index(d["run"]), d["split"] != "test", "average" in d["checkpoint"], d["alpha"], d["step"])

    drows = [[f"`{d['run']}`", d["checkpoint"], d["split"], f"{d['alpha']:g}", f"{d['bleu']:.2f}",
              f"{d['bleu_lowercase']:.2f}", f"{d['chrf']:.2f}", f"{d['decode_seconds']:.0f}"] for d in sorted(decodes, key=dkey)]
    dec = table(["run", "checkpoint", "split", "α", "BLEU", "BLEU (lc)", "chrF", "decode s"], drows, "llllrrrr")
    sig = sorted({(d["bleu_signature"], d["chrf_signature"]) for d in decodes})
    steps = sorted({e["step"] for n in order for e in runs[n].evals})
    vrows = []
    for s in steps:
        row = [f"{s:,}"]
        for n in order:
            e = next((e for e in runs[n].evals if e["step"] == s), None)
            row.append(f"{e['eval_perplexity']:.1f} / {e['eval_bleu_lowercase']:.1f}" if e else "")
        vrows.append(row)
    val = table(["step"] + [f"`{n}`" for n in order], vrows, "l" + "r" * len(order))
    return _doc("Multi30k en→de: the Transformer's runs",
                "## The runs\n\n" + summary,
                "## Beam search (beam 4), test_2016_flickr and validation\n\n" + dec + "\n\nSignatures: "
                + "; ".join(f"BLEU `{b}`, chrF `{c}`" for b, c in sig) + " (lc: `case:lc`).",
                "## Validation during training (greedy): perplexity / lowercased BLEU\n\n" + val)


def render_vaswani_table3(results: str) -> str:
    from experiments import report
    from experiments import status as status_lib
    from experiments.sweep import load_sweep, parse_set

    path = folder("vaswani_table3", results)
    records = {d["run"]: d for d in read_jsonl(os.path.join(path, "runs.jsonl"))}
    sweep = load_sweep("experiments/vaswani_table3.py:p_drop=0.3")
    extra = dict(parse_set(s) for s in VASWANI_SET)
    jobs = sweep.expand(os.path.join(path, "workdirs"), extra)
    res = {}
    for j in jobs:
        recs = records[j.name]["metrics"]
        step = max(r["step"] for r in recs)
        res[j.name] = report.RunResult(j, status_lib.Status(status_lib.FINISHED, step, step, j.num_train_steps), recs)
    pngs = [p for p in vaswani_pngs(sweep) if os.path.exists(os.path.join(path, p))]
    return GENERATED + "\n\n" + report.render(sweep, res, pngs, extra)


VASWANI_SET = ["num_train_steps=500", "data.batch_size=64", "optimizer.warmup_steps=125", "optimizer.lr_scale=0.45",
               "eval_every_steps=500", "log_every_steps=25", "checkpoint_every_steps=250"]


def vaswani_pngs(sweep) -> list[str]:
    from experiments import report

    return ([f"{sweep.name}_curve_{report._slug(k)}.png" for k, _ in sweep.curves]
            + [f"{sweep.name}_bars_{report._slug(m.title)}.png" for m in sweep.metrics])


def render_glue_minilm(results: str) -> str:
    import types

    from experiments import sst2_side_by_side

    runs = load_runs("glue_minilm", results)
    rs = glue_runs(runs)
    ours = {r.seed: r.final["eval_accuracy"] for r in rs if r.task == "sst2" and r.init_name == "minilm"}
    torch = {d["seed"]: d["eval_accuracy"] for d in read_jsonl(os.path.join(folder("glue_minilm", results), "pytorch_sst2.jsonl"))}
    args = types.SimpleNamespace(seeds=3, lr=5e-5, batch_size=32, epochs=3.0, max_seq_len=128)
    side, _ = sst2_side_by_side.report({"ours": ours, "torch": torch}, args)
    trows = [[d["seed"], pct(d["eval_accuracy"]), f"{d['steps']:,}", f"{d['train_seconds'] / 60:.0f}", d["trainer"]]
             for d in sorted(read_jsonl(os.path.join(folder("glue_minilm", results), "pytorch_sst2.jsonl")), key=lambda d: d["seed"])]
    return _doc("GLUE dev from MiniLM (all-MiniLM-L6-v2) and from a random init of its architecture",
                "## Fine-tuning runs\n\n" + finetune_table(rs),
                "## SST-2 dev accuracy by evaluation (MiniLM, 3 epochs)\n\n"
                + eval_history_table([r for r in sorted(rs, key=lambda r: r.seed) if r.task == "sst2" and r.init_name == "minilm"]),
                "## SST-2: ours beside PyTorch/transformers (same recipe, 3 seeds each)\n\n" + side
                + "\n\n" + table(["PyTorch seed", "dev accuracy (%)", "steps", "training minutes", "trainer"], trows, "rrrrl"))


def render_small_bert(results: str) -> str:
    runs = load_runs("small_bert_pretraining", results)
    pt = runs["pretraining"]
    rs = glue_runs(runs)
    with open(os.path.join(folder("small_bert_pretraining", results), "step_speed.json")) as f:
        speed = json.load(f)
    srows = [[f"`{c['flags'] or '(none: autotuning on)'}`", f"{c['steps_per_s']:.2f}", f"{c['compile_and_warmup_s']:.0f}",
              f"{100 * c['mfu']:.1f}", f"{c['achieved_tflops_per_s']:.0f}", f"{c['profile']['busy_ms_per_step']:.1f}"]
             for c in speed["candidates"]]
    tasks = ["sst2", "cola", "mrpc", "rte", "stsb"]
    inits = ["init-pt_small_hf", "scratch-pt_small_hf"]
    cola = [r for r in rs if r.task == "cola" and r.init_name == "init-pt_small_hf" and r.lr == 1e-4]
    return _doc("Small BERT (4/512) pretrained for 3,269 steps, against its random init",
                "## Pretraining (held-out PTB valid)\n\n" + pretraining_table([pt]) + "\n\n" + pretraining_runs_table([pt]),
                "## The pretraining step alone (benchmark, bf16, batch 256 x 128, one process on the GPU)\n\n"
                + table(["XLA flags", "steps/s", "compile + warmup s", "MFU (%)", "TFLOP/s", "GPU busy ms/step"], srows, "lrrrrr"),
                "## Pretrained against random init at lr 1e-4 (GLUE dev, task score x100)\n\n"
                + compare_inits(rs, inits, tasks, lrs=[1e-4]),
                "## Every fine-tuning run\n\n" + finetune_table(rs),
                "## CoLA by epoch (pretrained, lr 1e-4)\n\n" + eval_history_table(sorted(cola, key=lambda r: r.seed)))


def render_small_bert_1195(results: str) -> str:
    runs = load_runs("small_bert_pretraining_1195_steps", results)
    pt = runs["pretraining"]
    rs = glue_runs(runs)
    return _doc("Small BERT (4/512) pretrained for 1,195 steps, against its random init",
                "## Pretraining (held-out PTB valid)\n\n" + pretraining_table([pt]) + "\n\n" + pretraining_runs_table([pt]),
                "## Pretrained against random init, seed 0, best of lr 1e-4 / 3e-4 (GLUE dev, task score x100)\n\n"
                + compare_inits(rs, ["init-pt_small", "scratch-pt_small"], ["stsb", "rte", "sst2", "cola", "mrpc"],
                                lrs=[1e-4, 3e-4], seeds=[0]),
                "## Every fine-tuning run\n\n" + finetune_table(rs))


def render_tiny_bert_glue(results: str) -> str:
    runs = load_runs("tiny_bert_glue", results)
    pts = [runs["pt1/pretraining"], runs["pt2/pretraining"]]
    rs = glue_runs(runs)
    pt1 = [r for r in rs if r.root.startswith("pt1/")]
    pt2 = [r for r in rs if r.root.startswith("pt2/")]
    torch = read_jsonl(os.path.join(folder("tiny_bert_glue", results), "pretraining_torch.jsonl"))
    ours = {r["step"]: r["loss"] for r in runs["pt1/pretraining"].metrics if "loss" in r}
    trows = [[t["step"], f"{ours[t['step']]:.4f}", f"{t['loss']:.4f}"] for t in torch]
    spread = read_jsonl(os.path.join(folder("tiny_bert_glue", results), "cls_spread.jsonl"))
    crow = [[s["init"], s["sentences"], s["cls_hidden"], s["cls_pooled"], s["mean_hidden"], s["mean_pooled"], s["all_tokens"]]
            for s in spread]
    inits = ["init-pt_tiny", "scratch-pt_tiny"]
    g16 = {"sst2": "pt2/g32", "cola": "pt2/g16", "stsb": "pt2/g16", "mrpc": "pt2/g16", "rte": "pt2/g16"}
    return _doc("Tiny BERT (2/128) pretrained for 3,000 steps, against its random init",
                "## Pretraining (held-out PTB valid)\n\n" + pretraining_table(pts, ["pt1", "pt2"]) + "\n\n"
                + pretraining_runs_table(pts),
                "## pt1's training loss beside transformers' BertForPreTraining on the same batches\n\n"
                + table(["step", "ours (mean of 100 steps)", "PyTorch / transformers"], trows, "rrr"),
                "## pt1 against its random init: recipe B (4 epochs, batch 16), lr 1e-4\n\n"
                + compare_inits(pt1, inits, ["cola", "stsb", "mrpc", "rte"], lrs=[1e-4], roots="pt1/g16"),
                "## pt2 against its random init, best of lr 1e-4 / 3e-4 (SST-2: 1 epoch, batch 32; the rest recipe B)\n\n"
                + compare_inits(pt2, inits, list(TASK_ORDER), lrs=[1e-4, 3e-4], roots=g16),
                "## pt2 against its random init, best of lr 3e-5 / 5e-5 / 1e-4 / 3e-4 (SST-2 and CoLA)\n\n"
                + compare_inits(pt2, inits, ["sst2", "cola"], roots=g16),
                "## pt2, SST-2 for 3 epochs (each init at its best 1-epoch lr)\n\n"
                + compare_inits(pt2, inits, ["sst2"], roots="pt2/g32e3"),
                "## pt2, CoLA with mean pooling, lr 3e-4\n\n" + compare_inits(pt2, inits, ["cola"], roots="pt2/g16mean"),
                "## [CLS] spread on 512 CoLA dev sentences (across-sentence std / RMS; 0 = one vector for all)\n\n"
                + table(["model", "sentences", "[CLS] hidden", "[CLS] pooled", "mean hidden", "mean pooled", "all tokens"], crow, "lrrrrrr"),
                "## Every fine-tuning run\n\n" + finetune_table(rs, show_root=True))


def _scratch_pt2(results: str) -> list[Run]:
    return [r for r in glue_runs(load_runs("tiny_bert_glue", results)) if r.root.startswith("pt2/")
            and r.init_name == "scratch-pt_tiny" and r.root in ("pt2/g16", "pt2/g32")]


def render_tiny_long(results: str) -> str:
    runs = load_runs("tiny_bert_long_pretraining", results)
    rs = glue_runs(runs)
    both = rs + _scratch_pt2(results)
    inits = ["init-pt_long6k", "scratch-pt_tiny"]
    return _doc("Tiny BERT (2/128) pretrained for 6,000 steps, against its random init",
                "## Pretraining (held-out PTB valid)\n\n" + pretraining_table([runs["pretraining"]]) + "\n\n"
                + pretraining_runs_table([runs["pretraining"]]),
                "## Against the random init (tiny_bert_glue's pt2 random-init runs: the same architecture and "
                "vocabulary), best of every lr each side ran\n\n"
                + compare_inits(both, inits, ["rte", "mrpc", "stsb", "cola", "sst2"],
                                roots={("sst2", "scratch-pt_tiny"): "pt2/g32", "scratch-pt_tiny": "pt2/g16"}),
                "## Every fine-tuning run of the 6,000-step model\n\n" + finetune_table(rs))


def _probe_table(rows: list[dict], labels: dict[str, str]) -> str:
    sets = ["stsb_dev", "mrpc_dev", "rte_dev", "ptb_valid"]
    out = []
    for s in sets:
        row = [s.replace("_", " ")]
        for wd in labels:
            r = next((x for x in rows if x["workdir"] == wd and x["set"] == s), None)
            row.append(f"{100 * r['nsp_accuracy']:.1f}% / {r['auc']:.2f} ({r['pairs']})" if r else "–")
        out.append(row)
    return table(["held-out pairs"] + [f"{v}: accuracy / AUC (pairs)" for v in labels.values()], out, "l" + "r" * len(labels))


def render_tiny_no_nsp(results: str) -> str:
    runs = load_runs("tiny_bert_no_nsp", results)
    rs = glue_runs(runs)
    both = rs + _scratch_pt2(results)
    roots = {("sst2", "scratch-pt_tiny"): "pt2/g32", "scratch-pt_tiny": "pt2/g16"}
    probe = read_jsonl(os.path.join(folder("tiny_bert_no_nsp", results), "nsp_probe.jsonl"))
    return _doc("Tiny BERT (2/128) pretrained without NSP, against its random init",
                "## Pretraining (held-out PTB valid)\n\n"
                + pretraining_table([runs["pretraining_seed0"], runs["pretraining_seed1"]]) + "\n\n"
                + pretraining_runs_table([runs["pretraining_seed0"], runs["pretraining_seed1"]]),
                "## No-NSP model (seed 0) against the random init (tiny_bert_glue's pt2 random init), best of lr 1e-4 / 3e-4\n\n"
                + compare_inits(both, ["init-pt_nonsp_std", "scratch-pt_tiny"], list(TASK_ORDER), lrs=[1e-4, 3e-4], roots=roots),
                "## The second no-NSP pretraining run (seed 1), on the cells where seed 0 won or came close "
                "(its one lr against the random init's best of 1e-4 / 3e-4)\n\n"
                + compare_inits(both, ["init-pt_nonsp_std_s1", "scratch-pt_tiny"], ["rte", "sst2", "cola"],
                                lrs={("rte", "init-pt_nonsp_std_s1"): [1e-4], ("sst2", "init-pt_nonsp_std_s1"): [3e-4],
                                     ("cola", "init-pt_nonsp_std_s1"): [3e-4], "scratch-pt_tiny": [1e-4, 3e-4]},
                                roots=roots),
                "## What the NSP head learned: held-out pairs, own partner vs another example's sentence\n\n"
                + _probe_table(probe, {"workdirs/pt_tiny": "NSP model (tiny_bert_glue pt2)",
                                       "workdirs/pt_nonsp_std": "no-NSP model (head untrained)"}),
                "## Every fine-tuning run\n\n" + finetune_table(rs, show_root=True))


def render_tiny_clean(results: str) -> str:
    runs = load_runs("tiny_bert_clean_corpus", results)
    rs = glue_runs(runs)
    probe = (read_jsonl(os.path.join(folder("tiny_bert_clean_corpus", results), "nsp_probe.jsonl"))
             + read_jsonl(os.path.join(folder("tiny_bert_no_nsp", results), "nsp_probe.jsonl")))
    return _doc("Tiny BERT (2/128) pretrained without the GLUE text, against its random init",
                "## Pretraining (held-out PTB valid)\n\n" + pretraining_table([runs["pretraining"]]) + "\n\n"
                + pretraining_runs_table([runs["pretraining"]]),
                "## Against its random init (the same architecture and vocabulary), lr 1e-4\n\n"
                + compare_inits(rs, ["init-pt_clean", "scratch-pt_clean"], ["stsb", "mrpc", "rte", "sst2", "cola"], lrs=[1e-4]),
                "## NSP probe: held-out pairs, own partner vs another example's sentence\n\n"
                + _probe_table(probe, {"workdirs/pt_clean": "without the GLUE text",
                                       "workdirs/pt_tiny": "whole corpus (tiny_bert_glue pt2)"}),
                "## Every fine-tuning run\n\n" + finetune_table(rs))


def render_tiny_levers(results: str) -> str:
    runs = load_runs("tiny_bert_pretraining_levers", results)
    base = load_runs("tiny_bert_glue", results)
    pts = [base["pt1/pretraining"]] + [r for n, r in runs.items() if n.startswith("pretraining/")]
    rs = glue_runs(runs)
    pt1 = [r for r in glue_runs(base) if r.root in ("pt1/g16", "pt1/g32")]
    both = rs + pt1
    roots = {"init-pt_tiny": "pt1/g16", ("sst2", "scratch-pt_tiny"): "pt1/g32", "scratch-pt_tiny": "pt1/g16"}
    steps = sorted({e["step"] for r in pts for e in r.evals})
    mrows = []
    for r in pts:
        row = [f"`{r.name}`"]
        for s in steps:
            e = next((e for e in r.evals if e["step"] == s), None)
            row.append(pct(e["eval_mlm_accuracy"]) if e else "")
        mrows.append(row)
    return _doc("Tiny BERT (2/128): pretraining levers on the unigram plateau",
                "## Held-out MLM accuracy (%) by step\n\n" + table(["run"] + [f"{s:,}" for s in steps], mrows, "l" + "r" * len(steps)),
                "## Every evaluation\n\n" + pretraining_table(pts) + "\n\n" + pretraining_runs_table(pts),
                "## The fast no-NSP model (`pt_nonsp`: lr 5e-3, no dropout, no NSP) against the random init of "
                "tiny_bert_glue's pt1 architecture, lr 1e-4 (CoLA: best of 1e-4 / 3e-4)\n\n"
                + compare_inits(both, ["init-pt_nonsp", "scratch-pt_tiny"], ["sst2", "cola", "stsb", "mrpc", "rte"],
                                lrs={"cola": [1e-4, 3e-4], "sst2": [1e-4], "stsb": [1e-4], "mrpc": [1e-4], "rte": [1e-4]},
                                roots={**roots, "init-pt_nonsp": None}),
                "## The fast NSP model (`pt_nsp_fast`: lr 5e-3, no dropout) against the same random init, lr 3e-4\n\n"
                + compare_inits(both, ["init-pt_nsp_fast", "scratch-pt_tiny"], ["cola", "stsb"], lrs=[3e-4],
                                roots={**roots, "init-pt_nsp_fast": None}),
                "## Every fine-tuning run\n\n" + finetune_table(rs))


def render_member_check(results: str) -> str:
    runs = load_runs("member_runs_check", results)
    group = runs["members/rte/init-pt_tiny/vmap"]
    rows = []
    for k in range(3):
        m = runs[f"members/rte/init-pt_tiny/vmap/members/lr0.0001-seed{k}"]
        s = runs[f"single/rte/init-pt_tiny/lr0.0001-seed{k}"]
        ml = {r["step"]: r["loss"] for r in m.metrics if "loss" in r}
        sl = {r["step"]: r["loss"] for r in s.metrics if "loss" in r}
        common = sorted(set(ml) & set(sl))
        rows.append([k, pct(m.final["eval_accuracy"]), pct(s.final["eval_accuracy"]), f"{ml[50]:.8f} / {sl[50]:.8f}",
                     f"{max(abs(ml[t] - sl[t]) for t in common):.4f}", len(common)])
    rates = [r["steps_per_s"] for r in group.metrics if "steps_per_s" in r]
    single_rate = [r["steps_per_s"] for k in range(3) for r in runs[f"single/rte/init-pt_tiny/lr0.0001-seed{k}"].metrics
                   if "steps_per_s" in r]
    return _doc("Member runs against single runs: tiny BERT on RTE, 3 seeds",
                table(["seed", "member: dev accuracy (%)", "single run: dev accuracy (%)", "training loss at step 50, member / single",
                       "largest loss difference over the logged steps", "logged steps"], rows, "rrrrrr"),
                f"Steps/s over the logged windows: the three-member program {min(rates):.2f}–{max(rates):.2f}; "
                f"the single runs {min(single_rate):.2f}–{max(single_rate):.2f} (one pinned core each).")


EXPERIMENTS: dict[str, Callable[[str], str]] = {
    "multi30k": render_multi30k,
    "vaswani_table3": render_vaswani_table3,
    "glue_minilm": render_glue_minilm,
    "small_bert_pretraining": render_small_bert,
    "small_bert_pretraining_1195_steps": render_small_bert_1195,
    "tiny_bert_glue": render_tiny_bert_glue,
    "tiny_bert_long_pretraining": render_tiny_long,
    "tiny_bert_no_nsp": render_tiny_no_nsp,
    "tiny_bert_clean_corpus": render_tiny_clean,
    "tiny_bert_pretraining_levers": render_tiny_levers,
    "member_runs_check": render_member_check,
}


def render_all(results: str = RESULTS, only: Sequence[str] = ()) -> dict[str, str]:
    """{path of tables.md: its rendered text} for every experiment (or those in `only`)."""
    return {os.path.join(folder(n, results), TABLES): fn(results) for n, fn in EXPERIMENTS.items()
            if not only or n in only}


def check(results: str = RESULTS, only: Sequence[str] = ()) -> list[str]:
    """The tables.md files that differ from what their folder's files render (empty: all match)."""
    bad = []
    for path, text in render_all(results, only).items():
        if not os.path.exists(path):
            bad.append(path)
            continue
        with open(path) as f:
            if f.read() != text:
                bad.append(path)
    return bad


# --- plots (optional: matplotlib) ---------------------------------------------------------------


def plot_all(results: str = RESULTS, only: Sequence[str] = ()) -> list[str]:
    """Learning curves where a folder's runs have them: Multi30k validation, the pretraining runs'
    held-out MLM accuracy. Vaswani Table 3's PNGs come from `experiments.report` on the sweep's workdirs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name, png):
        path = os.path.join(folder(name, results), png)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    if not only or "multi30k" in only:
        runs = load_runs("multi30k", results)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for n, r in runs.items():
            steps = [e["step"] for e in r.evals]
            axes[0].plot(steps, [e["eval_perplexity"] for e in r.evals], marker=".", label=n)
            axes[1].plot(steps, [e["eval_bleu_lowercase"] for e in r.evals], marker=".", label=n)
        axes[0].set_yscale("log")
        for ax, t in zip(axes, ("validation perplexity", "validation BLEU (lc, greedy)")):
            ax.set_xlabel("step")
            ax.set_title(t)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        save(fig, "multi30k", "validation_curves.png")
    pretrain = {"small_bert_pretraining": ["pretraining"], "tiny_bert_glue": ["pt1/pretraining", "pt2/pretraining"],
                "tiny_bert_pretraining_levers": None, "tiny_bert_long_pretraining": ["pretraining"],
                "tiny_bert_no_nsp": ["pretraining_seed0", "pretraining_seed1"], "tiny_bert_clean_corpus": ["pretraining"]}
    for name, keys in pretrain.items():
        if only and name not in only:
            continue
        runs = load_runs(name, results)
        sel = [r for n, r in runs.items() if (keys is None and n.startswith("pretraining/")) or (keys and n in keys)]
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in sel:
            pts = [(x["step"], x["loss"]) for x in r.metrics if "loss" in x and not any(k.startswith("eval_") for k in x)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=r.name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (MLM + NSP)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, name, "pretraining_loss.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.result_tables", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--plots", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated experiment folders")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--unpack", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    return run(args.results, [x for x in args.only.split(",") if x], args.check, args.plots, args.unpack, args.out)


def run(results: str, only: Sequence[str], check_only: bool, plots: bool, unpack_name: str = "", out: str = "") -> int:
    if unpack_name:
        if not out:
            print("error: --unpack needs --out=DIR")
            return 2
        for wd in unpack(unpack_name, out, results):
            print(wd)
        return 0
    unknown = [n for n in only if n not in EXPERIMENTS]
    if unknown:
        print(f"error: unknown experiment(s) {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}")
        return 2
    if check_only:
        bad = check(results, only)
        for path in bad:
            print(f"differs from its files: {os.path.relpath(path)} (python -m experiments.report --all rewrites it)")
        if not bad:
            print(f"all {len(only) or len(EXPERIMENTS)} tables.md match their files")
        return 1 if bad else 0
    for path, text in render_all(results, only).items():
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path)}")
    if plots:
        for path in plot_all(results, only):
            print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
