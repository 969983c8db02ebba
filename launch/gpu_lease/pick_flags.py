"""Picks a lease's XLA flags by timing the small BERT's pretraining step under each candidate.

    (on the device, from the repo root; run.sh calls it when PICK_FLAGS=1)
    eval "$(W=/tmp/w PT_S=330 python3 launch/gpu_lease/pick_flags.py)"   # exports XLA_FLAGS, PT_RATE, PT_STEPS

Each candidate runs `bert_vs_transformer.cli.benchmark` on `configs/bert.py:small` as bert6 pretrains it
(bf16, 8k vocabulary, batch 256 x 128), one process at a time, with a 3-step kernel profile
(W/pick_flags/prof_<name>/summary.md). The fastest candidate's flags are printed as shell exports;
PT_STEPS is what its rate fits in PT_S seconds of pretraining (less compilation, evaluation and
checkpoint time). Lease 3 pretrained at 5.95 steps/s under `--xla_gpu_autotune_level=0` without
knowing why. Lease 4 ran this: 79.82 steps/s with the default flags and 77.96 with that one, so the
flag was not the cause (processes sharing the GPU were). PT_RATE=<steps/s> without PICK_FLAGS now
saves its ~55 s. Logs go to stderr and
W/pick_flags/choice.json; the exports also go to W/pick_flags/exports.sh, which run.sh reads in a later
call on the same machine. SMOKE=1 runs tiny batches (a CPU check of the plumbing).
"""
import json, os, shlex, subprocess, sys, time

CANDIDATES = [
    ("default", ""),
    ("autotune0", "--xla_gpu_autotune_level=0"),  # lease 3's flag: fast compilation, slow steps?
]
W = os.environ.get("W", "/tmp/w")
SMOKE = os.environ.get("SMOKE") == "1"
LIMIT_S = int(os.environ.get("PICK_S", "110"))  # per candidate, compilation included
PT_S = int(os.environ.get("PT_S", "240"))
OUT = os.path.join(W, "pick_flags")


def log(msg):
    print(f"pick_flags: {msg}", file=sys.stderr, flush=True)


def bench(name, flags):
    size = ["--batch_size=8", "--steps=2", "--warmup=1"] if SMOKE else ["--batch_size=256", "--steps=40", "--warmup=3"]
    argv = [sys.executable, "-m", "bert_vs_transformer.cli.benchmark", "--config=configs/bert.py:small",
            "--config.model.dtype=bfloat16", "--config.model.vocab_size=8000", "--seq_len=128",
            f"--profile_dir={OUT}/prof_{name}", "--profile_steps=3", *size]
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    t = time.time()
    with open(f"{OUT}/{name}.log", "w") as err:
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            log(f"{name}: no result in {LIMIT_S}s")
            return {"name": name, "flags": flags, "error": f"timeout {LIMIT_S}s"}
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        log(f"{name}: rc={p.returncode}, see {OUT}/{name}.log")
        return {"name": name, "flags": flags, "error": f"rc={p.returncode}"}
    rec = json.loads(lines[-1])
    keep = ("steps_per_s", "step_time_s", "mfu", "compile_and_warmup_s", "achieved_tflops_per_s", "device_kind", "profile")
    out = {"name": name, "flags": flags, "wall_s": round(time.time() - t, 1), **{k: rec.get(k) for k in keep}}
    log(f"{name} ({flags or 'no flags'}): {out['steps_per_s']:.2f} steps/s, compile+warmup "
        f"{out['compile_and_warmup_s']:.0f}s, wall {out['wall_s']}s")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    results = [bench(name, flags) for name, flags in CANDIDATES]
    ok = [r for r in results if "error" not in r]
    choice = max(ok, key=lambda r: r["steps_per_s"]) if ok else None
    rate = choice["steps_per_s"] if choice else None
    # the training loop also feeds real batches, evaluates and checkpoints: budget 85% of the
    # benchmark's rate over PT_S less 45 s of compilation
    steps = max(100, int(0.85 * rate * max(PT_S - 45, 30))) if rate else None
    with open(f"{OUT}/choice.json", "w") as f:
        json.dump({"candidates": results, "choice": choice and choice["name"], "pt_steps": steps}, f, indent=1)
    if choice is None:
        log("every candidate failed: keeping the environment's XLA_FLAGS and PT_STEPS")
        return 0
    flags = (os.environ.get("XLA_FLAGS", "") + " " + choice["flags"]).strip()
    log(f"choice: {choice['name']}, {rate:.2f} steps/s -> PT_STEPS={steps} for PT_S={PT_S}")
    exports = f"export XLA_FLAGS={shlex.quote(flags)} PT_RATE={rate:.3f} PT_STEPS={steps}"
    with open(f"{OUT}/exports.sh", "w") as f:  # a later call on the same machine reads it (run.sh)
        f.write(exports + "\n")
    print(exports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
