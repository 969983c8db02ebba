r"""Our training step against its PyTorch peer at identical shapes: one markdown row per workload.

    python -m bert_vs_transformer.cli.compare_speed --workload=bert_large_128 [--steps=20 --warmup=3]
    python -m bert_vs_transformer.cli.compare_speed --all [--json] [--dry_run]

Each workload runs `bert_vs_transformer.cli.benchmark` (JAX) and then `bert_vs_transformer.cli.peer_benchmark`
(PyTorch) in two separate subprocesses, one after the other, with the same model variant, batch
and sequence length (JAX preallocates most of the GPU's memory, so the two never share a process).
Both print one JSON line; the row shows tokens/s, sequences/s and MFU (both by OUR models/flops.py
formula) of each, and ours / peer tokens/s (> 1: ours is faster).

Workloads (the peer runs eager or torch.compile as listed, unless
`--peer_compile=true|false`):

| workload | ours | peer |
|---|---|---|
| bert_large_128 | configs/bert.py:large, batch 128 x 128 | HF BertForPreTraining, eager |
| bert_large_512 | configs/bert.py:large, batch 32 x 512 | HF BertForPreTraining, eager |
| bert_base_128 | configs/bert.py:base, batch 256 x 128 | HF BertForPreTraining + torch.compile |
| transformer_base | configs/transformer.py:base, batch 128 x (128 + 128) | nn.Transformer + torch.compile |
| transformer_big | configs/transformer.py:big, batch 64 x (128 + 128) | nn.Transformer, eager |

On CUDA ours runs bf16 compute (fp32 parameters) with the cuDNN flash-attention kernel, which has
no attention dropout, so both sides run with attention dropout 0 (`--config.model.attention_dropout_rate=0.0`
/ `--attention_dropout=0.0`); the peer runs under bf16 autocast with SDPA. On CPU both run fp32 (ours
the XLA einsum kernel) with the config's dropouts. `--variant`, `--batch_size`, `--seq_len` and
`--num_layers` override the workload's shapes on both sides (for tests and quick checks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Workload:
    model: str  # bert | transformer (peer_benchmark --model)
    variant: str  # of configs/<model>.py
    batch_size: int
    seq_len: int  # BERT: sequence; Transformer: source and target each
    peer_compile: bool  # the workloads table's peer: torch.compile or eager

    @property
    def label(self) -> str:
        return {"bert": "BERT", "transformer": "Transformer"}[self.model] + "-" + self.variant


WORKLOADS: dict[str, Workload] = {
    "bert_large_128": Workload("bert", "large", 128, 128, False),
    "bert_large_512": Workload("bert", "large", 32, 512, False),
    "bert_base_128": Workload("bert", "base", 256, 128, True),
    "transformer_base": Workload("transformer", "base", 128, 128, True),
    "transformer_big": Workload("transformer", "big", 64, 128, False),
}
CONFIG_FILES = {"bert": "configs/bert.py", "transformer": "configs/transformer.py"}


def define_flags() -> None:
    flags.DEFINE_multi_enum("workload", [], sorted(WORKLOADS), "Workload(s) to run (repeatable).")
    flags.DEFINE_bool("all", False, "Run every workload, in the table's order.")
    flags.DEFINE_integer("steps", 20, "Timed steps on each side.")
    flags.DEFINE_integer("warmup", 3, "Untimed steps on each side (the first compiles).")
    flags.DEFINE_enum("peer_compile", "auto", ["auto", "true", "false"], "auto: as the workloads table says.")
    flags.DEFINE_enum("device", "auto", ["auto", "cuda", "cpu"], "auto: cuda when nvidia-smi lists a GPU.")
    flags.DEFINE_string("variant", None, "Override the workload's variant on both sides (e.g. tiny).")
    flags.DEFINE_integer("batch_size", None, "Override the workload's batch on both sides.")
    flags.DEFINE_integer("seq_len", None, "Override the workload's sequence length on both sides.")
    flags.DEFINE_integer("num_layers", None, "Override encoder (and decoder) layers on both sides.")
    flags.DEFINE_string("our_flags", "", "Extra flags for benchmark.py, e.g. '--config.model.remat_policy=dots'.")
    flags.DEFINE_string("peer_flags", "", "Extra flags for peer_benchmark.py, e.g. '--nopadding_masks'.")
    flags.DEFINE_integer("timeout", 1800, "Seconds allowed to each subprocess.")
    flags.DEFINE_bool("dry_run", False, "Print the two commands of each workload; run nothing.")
    flags.DEFINE_bool("json", False, "One JSON object per workload instead of the markdown table.")


def detect_device() -> str:
    """'cuda' when nvidia-smi lists a GPU, else 'cpu' (without importing torch or jax here)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "cpu"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "cpu"
    return "cuda" if "GPU" in out else "cpu"


def resolve(name: str, variant=None, batch_size=None, seq_len=None, peer_compile: str = "auto") -> Workload:
    """The workload with the overrides applied."""
    w = WORKLOADS[name]
    compile_ = w.peer_compile if peer_compile == "auto" else peer_compile == "true"
    return dataclasses.replace(
        w, variant=variant or w.variant, batch_size=int(batch_size or w.batch_size),
        seq_len=int(seq_len or w.seq_len), peer_compile=compile_,
    )


def commands(w: Workload, device: str, steps: int, warmup: int, num_layers: int | None = None,
             our_flags: str = "", peer_flags: str = "") -> dict[str, Any]:
    """argv and environment of our benchmark and of the peer for one workload."""
    ours = [
        "-m", "bert_vs_transformer.cli.benchmark", f"--config={CONFIG_FILES[w.model]}:{w.variant}",
        f"--batch_size={w.batch_size}", f"--seq_len={w.seq_len}", f"--steps={steps}", f"--warmup={warmup}",
    ]
    peer = [
        "-m", "bert_vs_transformer.cli.peer_benchmark", f"--model={w.model}", f"--variant={w.variant}",
        f"--batch_size={w.batch_size}", f"--seq_len={w.seq_len}", f"--steps={steps}", f"--warmup={warmup}",
        f"--device={device}", "--compile" if w.peer_compile else "--nocompile",
    ]
    if num_layers:
        ours.append(f"--config.model.num_encoder_layers={num_layers}")
        if w.model == "transformer":
            ours.append(f"--config.model.num_decoder_layers={num_layers}")
        peer.append(f"--num_layers={num_layers}")
    if device == "cuda":
        # bf16 compute, fp32 master weights; cuDNN flash attention, which has no attention dropout.
        ours += ["--config.model.dtype=bfloat16", "--config.model.attention_kernel=cudnn",
                 "--config.model.attention_dropout_rate=0.0"]
        peer += ["--dtype=bf16", "--attention_dropout=0.0"]
        our_env, peer_env = {}, {}
    else:
        peer += ["--dtype=fp32"]
        our_env, peer_env = {"JAX_PLATFORMS": "cpu"}, {}
    ours += shlex.split(our_flags)
    peer += shlex.split(peer_flags)
    return {"ours": ours, "peer": peer, "our_env": our_env, "peer_env": peer_env}


def shown(argv: list[str], env: dict[str, str]) -> str:
    """The command as one would type it in the repository root."""
    prefix = [f"{k}={v}" for k, v in env.items()]
    return shlex.join([*prefix, "python", *argv])


def run_json(argv: list[str], env: dict[str, str], timeout: int) -> dict[str, Any]:
    """Runs `python argv` in the repository root; returns its last JSON line, or {'error': ...}."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, *argv], cwd=repo, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    tail = " | ".join(l for l in proc.stderr.strip().splitlines()[-3:])
    return {"error": f"exit {proc.returncode}: {tail[-600:]}"}


def shape_text(w: Workload, record: dict | None = None) -> str:
    if w.model == "transformer":
        return f"{w.batch_size} x ({w.seq_len} + {w.seq_len})"
    masked = (record or {}).get("num_masked")
    return f"{w.batch_size} x {w.seq_len}" + (f", {masked} masked" if masked else "")


def peer_text(w: Workload) -> str:
    name = "HF BertForPreTraining" if w.model == "bert" else "nn.Transformer"
    return name + (" + torch.compile" if w.peer_compile else " eager")


def compare(name: str, w: Workload, cmds: dict, device: str, timeout: int) -> dict[str, Any]:
    """Runs ours, then the peer; the result object of one workload."""
    ours = run_json(cmds["ours"], cmds["our_env"], timeout)
    peer = run_json(cmds["peer"], cmds["peer_env"], timeout)
    ratio = None
    if "error" not in ours and "error" not in peer and peer.get("tokens_per_s"):
        ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
    return {
        "workload": name, "model": w.label, "variant": w.variant, "shape": shape_text(w, ours),
        "batch_size": w.batch_size, "seq_len": w.seq_len, "peer": peer_text(w), "device": device,
        "device_kind": ours.get("device_kind") or peer.get("device_kind"),
        "ratio_tokens_per_s": ratio,
        "our_command": shown(cmds["ours"], cmds["our_env"]), "peer_command": shown(cmds["peer"], cmds["peer_env"]),
        "ours": {k: v for k, v in ours.items() if k != "config"}, "peer_result": peer,
    }


HEADER = (
    "| workload | model | batch x length | ours tok/s | ours seq/s | ours MFU | peer | peer tok/s | peer seq/s "
    "| peer MFU | ours / peer | device | our command | peer command |\n"
    "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|"
)


def _num(x, fmt="{:,.1f}"):
    return "n/a" if x is None else fmt.format(x)


def row(result: dict[str, Any]) -> str:
    ours, peer = result["ours"], result["peer_result"]

    def side(rec):
        if "error" in rec:
            err = rec["error"].replace("|", "/")
            return [f"error: {err[:200]}", "", ""]
        return [_num(rec["tokens_per_s"]), _num(rec["seq_per_s"]), _num(rec.get("mfu"), "{:.1%}")]

    ratio = _num(result["ratio_tokens_per_s"], "{:.2f}x")
    cells = [
        result["workload"], result["model"], result["shape"], *side(ours), result["peer"], *side(peer), ratio,
        result["device_kind"] or result["device"], f"`{result['our_command']}`", f"`{result['peer_command']}`",
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    names = list(WORKLOADS) if FLAGS.all else list(dict.fromkeys(FLAGS.workload))
    if not names:
        raise app.UsageError(f"give --workload=NAME (one of {sorted(WORKLOADS)}) or --all")
    device = detect_device() if FLAGS.device == "auto" else FLAGS.device
    plans = []
    for name in names:
        w = resolve(name, FLAGS.variant, FLAGS.batch_size, FLAGS.seq_len, FLAGS.peer_compile)
        cmds = commands(w, device, FLAGS.steps, FLAGS.warmup, FLAGS.num_layers, FLAGS.our_flags, FLAGS.peer_flags)
        plans.append((name, w, cmds))
    if FLAGS.dry_run:
        for name, w, cmds in plans:
            if FLAGS.json:
                print(json.dumps({"workload": name, "device": device, "our_command": shown(cmds["ours"], cmds["our_env"]),
                                  "peer_command": shown(cmds["peer"], cmds["peer_env"])}), flush=True)
            else:
                print(f"# {name}: {w.label} {shape_text(w)} vs {peer_text(w)} ({device})")
                print(shown(cmds["ours"], cmds["our_env"]))
                print(shown(cmds["peer"], cmds["peer_env"]), flush=True)
        return 0
    if not FLAGS.json:
        print(HEADER, flush=True)
    failed = False
    for name, w, cmds in plans:
        result = compare(name, w, cmds, device, FLAGS.timeout)
        failed |= result["ratio_tokens_per_s"] is None
        print(json.dumps(result, default=str) if FLAGS.json else row(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
