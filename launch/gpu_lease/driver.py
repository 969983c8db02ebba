"""Runs a prioritised job list concurrently on one leased GPU under a hard deadline.

    (on the device, from the repo root; see launch/gpu_lease/run.sh, which calls this)
    OUT=... DEADLINE=seconds [CONC=8] [JOBSET=issues5_6|sweep|levers|bert6|bench] [ONLY=name,name] [SMOKE=1] [TORCH_SEEDS=0,1,2 (bert6; default none)] [VMAP=0|1 FT_LRS=5e-5,1e-4,3e-4 PT_CORPUS=ptb,wikitext2,multi30k SCRATCH_EARLY=0|1 PT_WORKERS=8 PT_RATE=<steps/s> PT_HF=<HF folder> FT_TASKS=rte,mrpc,stsb,cola,sst2 (bert6)] [FT_XLA_FLAGS=...] python3 driver.py

At most CONC jobs run at once, started in list order. A job is a chain of commands; each gets
min(its own limit, time left - the reserve kept for the commands after it - GRACE), then SIGTERM
(main.py saves a checkpoint and stops) and SIGKILL GRACE (40) s later: so every process is gone by
DEADLINE (the lease's command limit would otherwise kill the driver first and leave its children,
in their own sessions, running into the next call). Logs and metrics (no checkpoints) go to
$OUT/results.tgz every 40 s and at the end, so a lease cut short still returns what finished.
SMOKE=1 shrinks every job to a few steps (checks the chain on a CPU). Default job set: issues 5
and 6 (Multi30k runs, MiniLM SST-2 side by side, CoLA/RTE); JOBSET=sweep: six Multi30k levers
(too many at once: they spent the lease compiling); JOBSET=levers: four full Multi30k schedules
with test BLEU, and the PyTorch half of the SST-2 side-by-side; JOBSET=bert6: that PyTorch half,
and a small BERT pretrained here then fine-tuned on the five tasks beside a random init of it
(jobs in NEEDS wait for a file before taking a slot, and give up at once when no job of the call
will make it: e.g. a second call on a fresh machine); JOBSET=bench: the small BERT's pretraining
step timed with and without XLA autotuning (lease 3 ran it at 5.95 steps/s with autotuning off), each
variant then profiled for 3 steps (bench_small/prof_<variant>/summary.md: the top kernels per step).
run.sh with PICK_FLAGS=1 runs pick_flags.py first: it times that step under each candidate XLA flag
set and exports the fastest's XLA_FLAGS and the PT_STEPS its rate fits in PT_S.
A run whose workdir already holds its final evaluation is skipped, so a second call on the warm
machine (same W) with ONLY=<the fine-tuning chains> goes on where the first call's chains stopped.
Seen on an H200 lease (2026-11-26): with 6-9 processes at once, XLA compilation (autotuning,
ptxas) took 2-4 minutes per process before the first step; budget for it or run fewer at once.
Seen on lease 4 (2026-11-27): processes sharing one GPU take turns on it (time-slicing, no MPS), and
the turns cost more than they fill. The small BERT's pretraining step, 12.5 ms of GPU work (79.8
steps/s alone in pick_flags' benchmark), ran at 12-14 steps/s beside five 9-member fine-tuning
programs, which ran at 1.1-2 steps/s each; one of them alone at the end ran at 21-67. So GPU-bound
jobs go one or two at a time (CONC=2: one compiles while the other trains).
"""
import fnmatch, json, os, shlex, signal, subprocess, sys, tarfile, threading, time

T0 = time.time()  # before the imports: DEADLINE counts from run.sh's launch of this script
sys.path.insert(0, os.getcwd())  # the repo root (run.sh runs this from there)
from bert_vs_transformer.cli import glue_grid  # noqa: E402  (no JAX work at import)
from bert_vs_transformer.training import checkpoints

DEADLINE = float(os.environ.get("DEADLINE", "470"))
CONC = int(os.environ.get("CONC", "8"))
SMOKE = os.environ.get("SMOKE") == "1"
OUT = os.environ["OUT"]
W = os.environ.get("W", "/tmp/w")
PY = sys.executable
os.makedirs(W, exist_ok=True)
m30 = "configs/transformer.py:multi30k"
glue = "configs/glue.py"

def left():
    return DEADLINE - (time.time() - T0)

def m30k_job(name, extra, train_s, test=True):
    """Train; with test, then beam-4 test BLEU of the last checkpoint and of the last-5 average."""
    wd = f"{W}/{name}"
    sm = ["--config.num_train_steps=40", "--config.eval_every_steps=20", "--config.checkpoint_every_steps=8",
          "--config.log_every_steps=10", "--config.evals.bleu.max_examples=16"] if SMOKE else []
    mx = ["--max_examples=16"] if SMOKE else []
    train = ([PY, "-m", "bert_vs_transformer.main", f"--config={m30}", f"--workdir={wd}"] + extra + sm,
             train_s, 80 if test else 0)
    if not test:
        return [train]
    return [
        train,
        ([PY, "-m", "bert_vs_transformer.cli.translate", f"--workdir={wd}", "--evaluate_split=test",
          "--beam_size=4", f"--output={wd}/test_last.de"] + mx, 90, 0),
        ([PY, "-m", "bert_vs_transformer.cli.average_checkpoints", f"--workdir={wd}", "--last=5"], 60, 0),
        ([PY, "-m", "bert_vs_transformer.cli.translate", f"--workdir={wd}/averaged", "--evaluate_split=test",
          "--beam_size=4", f"--output={wd}/test_avg.de"] + mx, 90, 0),
    ]

def glue_job(name, spec, train_s):
    wd = f"{W}/{name}"
    # (smoke: float32 compute and short rows of 4, since six members of the small BERT in bf16 (as
    # pretrain_job leaves it) crawl on a CPU core)
    sm = ["--config.num_train_steps=20", "--config.log_every_steps=10", "--config.evals.glue.max_examples=64",
          "--config.model.dtype=float32", "--config.data.batch_size=4", "--config.data.max_seq_len=32"] if SMOKE else []
    return [([PY, "-m", "bert_vs_transformer.main", f"--config={glue}:{spec}", f"--workdir={wd}"] + sm, train_s, 0)]

def torch_job(name, seed, lr, train_s):
    sm = ["--epochs=0.01", "--max_eval_examples=64"] if SMOKE else ["--epochs=3"]
    return [([PY, "-m", "experiments.glue_torch", f"--seed={seed}", f"--lr={lr}", "--batch_size=32",
              "--max_seq_len=128", "--threads=1", f"--output={W}/{name}/result.json"] + sm, train_s, 0)]

LR = os.environ.get("SST2_LR", "5e-5")
# bert6: the PyTorch SST-2 seeds to run here; all three ran on the CPU (2026-11-26), so none by default
TORCH_SEEDS = [k for k in os.environ.get("TORCH_SEEDS", "").split(",") if k]
# bert6: pretraining steps and the time limit of that run (SIGTERM at the limit saves a checkpoint)
PT_STEPS, PT_S = int(os.environ.get("PT_STEPS", "7000")), int(os.environ.get("PT_S", "240"))
PT_RATE = float(os.environ.get("PT_RATE", "0") or 0)  # steps/s measured by pick_flags (run.sh exports it)
PT_WORKERS = int(os.environ.get("PT_WORKERS", "2" if SMOKE else "8"))  # bert6: the pretraining's data worker processes

def pt_steps():
    """The pretraining's num_train_steps, decided when it starts: with a measured PT_RATE, what that rate
    fits in the time the run will really get (PT_S, or less when pick_flags and setup took more of the
    call; less 45 s of compilation, at 85% of the benchmark's rate), so its schedule ends rather than
    being cut; else PT_STEPS."""
    if not PT_RATE:
        return f"--config.num_train_steps={PT_STEPS}"
    budget = min(PT_S, left() - 60 - GRACE - 5)  # run_job's budget for the step (reserve 60)
    steps = max(100, int(0.85 * PT_RATE * max(budget - 45, 30)))
    log(f"pretraining: {PT_RATE:.2f} steps/s x {budget:.0f}s -> num_train_steps={steps}")
    return f"--config.num_train_steps={steps}"

def pretrain_job(name, variant, extra, train_s):
    """Pretrain on the local corpus (learned 8k WordPiece), then mark the workdir DONE for the
    fine-tuning jobs that need it (SIGTERM at the limit saves a checkpoint: it still counts)."""
    wd = f"{W}/{name}"
    sm = ["--config.num_train_steps=20", "--config.eval_every_steps=10", "--config.checkpoint_every_steps=10",
          "--config.log_every_steps=5", "--config.data.dupe_factor=1", "--config.data.batch_size=8"] if SMOKE else []
    if SMOKE and any(isinstance(a, str) and a.startswith("--config.profile_steps=") for a in extra):
        sm.append("--config.profile_start_step=5")  # the profile path runs in the smoke too
    return [([PY, "-m", "bert_vs_transformer.main", f"--config=configs/bert.py:{variant}", f"--workdir={wd}",
              "--config.data.vocab=train:8000", "--config.model.vocab_size=8000"] + extra + sm, train_s, 60),
            (["touch", f"{wd}/DONE"], 30, 0),
            # the checkpoint the fine-tunes read, back from the lease: a Hugging Face folder of float16
            # shards (<= 15 MiB each: $OUT's limit is 16); its small files travel in results.tgz, the
            # shards beside it (unpack results.tgz, move the shards into pt_small_hf/: init=that folder)
            ([PY, "-m", "bert_vs_transformer.cli.export_hf", f"--workdir={wd}", f"--output={wd}_hf", "--dtype=float16",
              "--max_shard_mb=15", lambda: f"--step={pretrained_step(wd)}"], 90, 0),
            (["sh", "-c", f"cp {wd}_hf/*.safetensors {OUT}/"], 20, 0)]

NEEDS = {}  # job name -> a file the job waits for before it takes a slot
PRODUCERS = {}  # such a file -> the job that makes it (a waiting job gives up once that one has ended)
FT_JOBS = set()  # fine-tuning jobs: run with FT_XLA_FLAGS
PT_PICK = os.environ.get("PT_PICK", "best")  # best | last: which pretraining checkpoint the fine-tunes read
_picked, _pick_lock = {}, threading.Lock()

def pretrained_step(wd):
    """0 (the latest checkpoint), or with PT_PICK=best the step where held-out MLM loss was lowest if
    it rose after that (a small corpus over-fitted: checkpoints.select_step). Decided once (the chains
    ask from their own threads), logged."""
    with _pick_lock:
        return _pretrained_step(wd)

def _pretrained_step(wd):
    if wd not in _picked:
        step, why = (None, "PT_PICK=last") if PT_PICK == "last" else checkpoints.select_step(wd)
        _picked[wd] = step or 0
        with open(f"{wd}/INIT_STEP.json", "w") as f:
            json.dump({"init_step": _picked[wd], "why": why}, f)
        log(f"fine-tunes of {wd} read checkpoint {'step ' + str(step) if step else 'latest'} ({why})")
    return _picked[wd]

VMAP = os.environ.get("VMAP", "1") == "1"  # bert6: each init's seeds x lrs as members of one program
FT_LRS = os.environ.get("FT_LRS", "5e-5,1e-4,3e-4")  # bert6 with VMAP=1: the members' learning rates

# bert6: SCRATCH_EARLY=1 starts the random inits beside the pretraining; lease 4 did, and all seven
# processes crawled (driver docstring): the default leaves the GPU to the pretraining
SCRATCH_EARLY = os.environ.get("SCRATCH_EARLY", "0") == "1"

# bert6: a pretrained model carried in the payload (a Hugging Face folder: prepare.sh with PT_HF=DIR;
# run.sh exports its path): the fine-tunes read it, and nothing is pretrained
PT_HF = os.environ.get("PT_HF", "")

def finetune_members(name, task, pt, lrs, seeds, recipe="", init="pt", max_s=260, min_s=60, extra=()):
    """GLUE fine-tuning of one init of pretraining job `pt` (init="pt": its checkpoint; "scratch": a
    random init of its architecture and vocab) as one process whose members (bert_vs_transformer/
    members.py) are every seed x lr. The pt job waits for the pretraining's DONE; the scratch job only
    for its vocab.txt (written when it starts) with SCRATCH_EARLY=1, so it runs beside the pretraining
    (sharing the GPU with it), else for DONE too. With PT_HF set, that folder stands for the
    pretraining (nothing waited for). Report (here or after the lease, from the unpacked
    results.tgz as W): python -m bert_vs_transformer.cli.glue_grid --task=TASK --init=W/pt_small,scratch
    --arch=W/pt_small --root=W --lrs=LRS --seeds=3 --vmap --report_only (PT_HF: --init=DIR,scratch
    --arch=DIR, DIR a local copy of that folder under the same name). A small model's step leaves
    the GPU idle between kernel launches; vmapped members fill it, and each init compiles once instead
    of once per run. A run cut at its limit saved a checkpoint: a second call resumes it."""
    src = PT_HF or f"{W}/{pt}"
    if not PT_HF:
        NEEDS[name] = f"{W}/{pt}/DONE" if init == "pt" or not SCRATCH_EARLY else f"{W}/{pt}/vocab.txt"
        PRODUCERS[NEEDS[name]] = pt
    grid = [f"--config.member_seeds={','.join(map(str, seeds))}", f"--config.member_lrs={','.join(lrs)}",
            # a checkpoint only at the end or at SIGTERM (9 members of the small BERT with Adam: ~1.9 GB each)
            "--config.checkpoint_every_steps=1000000",
            # two batch widths (64, 128) instead of five: each width compiles the train, loss and predict
            # programs again (lease 1: 2-4 min of compilation per process with 6-9 at once), while the
            # padding (masked: the same results) costs little on a GPU that small steps leave idle
            "--config.data.length_buckets=(64,)"]
    spec = f"task={task},lr={lrs[0]},seed={seeds[0]}," + (f"init={src}" if init == "pt" else f"init=scratch,arch={src}")
    spec += f",{recipe}" if recipe else ""
    # glue_grid --vmap's layout (W/<task>/<init name>/vmap), so its --report_only reads the results back
    points = glue_grid.grid_points(task, src if init == "pt" else "scratch", W, [float(x) for x in lrs],
                                   seeds, arch="" if init == "pt" else src, vmap=True)
    workdir = glue_grid.vmap_workdir(points)
    argv = glue_job(os.path.relpath(workdir, W), spec, 0)[0][0] + grid + list(extra)
    if init == "pt" and not PT_HF:  # resolved when the run starts, after the pretraining has ended
        argv = argv + [lambda: f"--config.init_step={pretrained_step(f'{W}/{pt}')}"]
    FT_JOBS.add(name)
    return [(argv, max_s, 0, min_s)]

def finetune_chain(name, task, pt, lrs, seeds, recipe="", first_s=170, next_s=100, min_s=45):
    """GLUE fine-tuning of both inits of pretraining job `pt` (init=its workdir, and init=scratch with
    its architecture and vocab), one process after another: for each seed, for each lr, pt then
    scratch. Both inits compile to the same programs, so the scratch run after a pt run reads XLA's
    persistent cache instead of compiling. Waits for the pretraining job's DONE; a run is skipped
    when fewer than min_s seconds are left."""
    NEEDS[name] = f"{W}/{pt}/DONE"
    PRODUCERS[NEEDS[name]] = pt
    FT_JOBS.add(name)
    steps = []
    for k in seeds:
        for lr in lrs:
            for init in ("pt", "scratch"):
                spec = f"task={task},lr={lr},seed={k}," + (f"init={W}/{pt}" if init == "pt" else f"init=scratch,arch={W}/{pt}")
                spec += f",{recipe}" if recipe else ""
                argv = glue_job(f"{name}/{init}_lr{lr}_s{k}", spec, 0)[0][0]
                if init == "pt":  # resolved when the run starts, after the pretraining has ended
                    argv = argv + [lambda: f"--config.init_step={pretrained_step(f'{W}/{pt}')}"]
                compiles = k == seeds[0] and init == "pt"  # the first run of each lr compiles its programs
                steps.append((argv, first_s if compiles else next_s, 0, min_s))
    return steps

# bert6: the fine-tuning tasks, in the order they take the GPU (FT_TASKS=sst2,cola: those two, SST-2 first)
FT_TASKS = tuple(t for t in os.environ.get("FT_TASKS", "rte,mrpc,stsb,cola,sst2").split(",") if t)
if set(FT_TASKS) - {"rte", "mrpc", "stsb", "cola", "sst2"}:
    sys.exit(f"FT_TASKS={','.join(FT_TASKS)}: choose from rte, mrpc, stsb, cola, sst2")

def _recipe(task):  # bert6: recipe B (4 epochs, batch 16) on the small tasks, 1 epoch at batch 32 on SST-2
    return "epochs=1" if task == "sst2" else "epochs=4,batch_size=16"

def _ft_jobs():
    """bert6 with VMAP=1: per task a random-init and a pretrained-init member program; the pretrained
    RTE one traces 5 steps (rte/init-pt_small/vmap/profile/summary.md: where a member step's time goes)."""
    lrs, seeds = tuple(FT_LRS.split(",")), (0, 1, 2)
    for t in FT_TASKS:
        min_s = 90 if t in ("sst2", "cola") else 60
        yield f"{t}_scratch", finetune_members(f"{t}_scratch", t, "pt_small", lrs, seeds, _recipe(t), init="scratch",
                                               max_s=400, min_s=min_s)
        prof = ("--config.profile_steps=5", f"--config.profile_start_step={5 if SMOKE else 100}") if t == "rte" else ()
        yield t, finetune_members(t, t, "pt_small", lrs, seeds, _recipe(t), init="pt", max_s=400, min_s=min_s, extra=prof)

def _ft_order(name):  # pairs by task (SCRATCH_EARLY=1: every random init first)
    task, scratch = name.removesuffix("_scratch"), name.endswith("_scratch")
    return (not scratch, FT_TASKS.index(task)) if SCRATCH_EARLY else (FT_TASKS.index(task), not scratch)

JOBSETS = {  # priority order; a job: name, [(argv, max seconds, reserve seconds kept for the steps after)]
    "issues5_6": [  # lease 1 of 2026-11-26
        ("m30k_a", m30k_job("m30k_a", [], 330)),
        ("sst2_ours_s0", glue_job("sst2_ours_s0", f"task=sst2,init=minilm,lr={LR},seed=0", 400)),
        ("sst2_torch_s0", torch_job("sst2_torch_s0", 0, LR, 400)),
        ("m30k_b", m30k_job("m30k_b", ["--config.num_train_steps=16000"], 330)),
        ("sst2_ours_s1", glue_job("sst2_ours_s1", f"task=sst2,init=minilm,lr={LR},seed=1", 400)),
        ("sst2_torch_s1", torch_job("sst2_torch_s1", 1, LR, 400)),
        ("sst2_ours_s2", glue_job("sst2_ours_s2", f"task=sst2,init=minilm,lr={LR},seed=2", 400)),
        ("sst2_torch_s2", torch_job("sst2_torch_s2", 2, LR, 400)),
        ("m30k_c", m30k_job("m30k_c", ["--config.model.d_model=256", "--config.model.d_ff=1024"], 330)),
        ("cola_minilm", glue_job("cola_minilm", "task=cola,init=minilm,lr=1e-4", 300)),
        ("rte_minilm", glue_job("rte_minilm", "task=rte,init=minilm,lr=1e-4", 300)),
        ("sst2_ours_2e-5_s0", glue_job("sst2_ours_2e-5_s0", "task=sst2,init=minilm,lr=2e-5,seed=0", 400)),
        ("sst2_ours_1e-4_s0", glue_job("sst2_ours_1e-4_s0", "task=sst2,init=minilm,lr=1e-4,seed=0", 400)),
    ],
    "sweep": [  # lease 2: which lever makes the small multi30k model learn faster
        (n, m30k_job(n, ["--config.checkpoint_every_steps=100000"] + extra, 400, test=False))
        for n, extra in [
            ("sw_base", []),
            ("sw_lr1", ["--config.optimizer.lr_scale=1.0"]),
            ("sw_lr05", ["--config.optimizer.lr_scale=0.5"]),
            ("sw_pre", ["--config.model.norm_position=pre"]),
            ("sw_drop01", ["--config.model.dropout_rate=0.1"]),
            ("sw_pre_lr1", ["--config.model.norm_position=pre", "--config.optimizer.lr_scale=1.0"]),
        ]
    ],
    "levers": [  # planned next: 4 full multi30k schedules + the PyTorch side-by-side half
        ("m30k_base", m30k_job("m30k_base", [], 420)),
        ("m30k_drop01", m30k_job("m30k_drop01", ["--config.model.dropout_rate=0.1"], 420)),
        ("m30k_b256", m30k_job("m30k_b256", ["--config.data.batch_size=256"], 420)),
        ("m30k_b256_drop01", m30k_job("m30k_b256_drop01", ["--config.data.batch_size=256",
                                                           "--config.model.dropout_rate=0.1"], 420)),
        ("sst2_torch_s0", torch_job("sst2_torch_s0", 0, LR, 420)),
        ("sst2_torch_s1", torch_job("sst2_torch_s1", 1, LR, 420)),
        ("sst2_torch_s2", torch_job("sst2_torch_s2", 2, LR, 420)),
    ],
    # Issue 6: the PyTorch half of the side-by-side (TORCH_SEEDS), and a small BERT (4/512) pretrained
    # here (PT_STEPS, PT_S), then both inits (ours / random, same architecture and vocab) on the five
    # tasks: recipe B (4 epochs, batch 16) on the small tasks, 1 epoch at batch 32 on SST-2 (as the
    # CPU cells), at lr 1e-4 and 3e-4 (the CPU runs' best lr differed by init), seeds 0, 1, 2 as time
    # allows. Lease 3 pretrained at 5.95 steps/s, lease 4 at 12-21: both beside many fine-tuning
    # processes taking turns on the GPU (alone: 79.8 steps/s; module docstring). Run with CONC=2.
    # VMAP=1 (default): per task and init one process training every seed x lr (FT_LRS) run as a
    # member (members.py); VMAP=0: lease 3's chain of single runs.
    "bert6": ([
        (f"sst2_torch_s{k}", torch_job(f"sst2_torch_s{k}", int(k), LR, 480)) for k in TORCH_SEEDS
    ] + ([] if PT_HF else [
        ("pt_small", pretrain_job("pt_small", "small", [
            "--config.model.dtype=bfloat16", pt_steps, "--config.optimizer.learning_rate=5e-4",
            "--config.optimizer.warmup_steps=500", "--config.data.dupe_factor=4", "--config.data.masking=dynamic",
            # grain worker processes mask the batches (one process: ~100 a second on the 2-core CPU, near the GPU's 80)
            f"--config.data.worker_count={PT_WORKERS}", "--config.data.num_threads=1",
            # ~12 ms steps: 8 dispatched ahead absorb ~0.1 s of host jitter and still read SIGTERM within
            # ~0.1 s (the default 2 suits CPU and large-model steps of seconds; GPU rate with 2 unmeasured)
            "--config.steps_in_flight=8",
            "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=1000",
            # 5 steps of the real run traced (pt_small/profile/summary.md): where its step time goes
            "--config.profile_steps=5", "--config.profile_start_step=50",
            "--config.keep_checkpoints=100"]  # every 1,000 steps kept: pretrained_step may go back
            # PT_CORPUS=ptb,wikitext2,multi30k: BERT's setting, no GLUE text (default: the whole corpus)
            + ([f"--config.data.corpus_sources={os.environ['PT_CORPUS']}"] if os.environ.get("PT_CORPUS") else []),
            PT_S)),
    ]) + [
        # one chain per task (lease 3 ran one per task and lr, ten processes at once: each then got
        # 10-40 steps/s of the shared GPU, so fewer processes, each running more)
        # 5e-5 (BERT's grid) beside lease 3's 1e-4 and 3e-4; FT_LRS=1e-4,3e-4 drops it
        # VMAP=1: two jobs per task, <task>_scratch (the random init) and <task> (the pretrained init),
        # listed as pairs, so that with CONC=2 a task's two inits run together and each finished pair
        # is a verdict cell (SCRATCH_EARLY=1: the random inits first, beside the pretraining)
        (n, j) for n, j in sorted(_ft_jobs(), key=lambda nj: _ft_order(nj[0]))
    ] if VMAP else [
        (t, finetune_chain(t, t, "pt_small", ("1e-4", "3e-4"), (0, 1, 2), _recipe(t), min_s=70 if t in ("sst2", "cola") else 45))
        for t in FT_TASKS
    ]),
    # Why lease 3's pretraining ran at 5.95 steps/s (lease 4: not the flag, 79.8 vs 78.0 steps/s;
    # the processes sharing the GPU): one process at a time (no contention), the small
    # BERT's pretraining step on a synthetic batch, with and without autotuning, bf16 and fp32.
    "bench": [
        ("bench_small", [(["env", f"XLA_FLAGS={flags}", PY, "-m", "bert_vs_transformer.cli.benchmark",
                           "--config=configs/bert.py:small", f"--config.model.dtype={dtype}",
                           "--config.model.vocab_size=8000", "--seq_len=128",
                           # 3 more steps traced: the kernel table (prof_<name>/summary.md) says where
                           # the step's time goes, so the next lease need not guess again
                           f"--profile_dir={W}/bench_small/prof_{name}", "--profile_steps=3"] +
                          (["--batch_size=8", "--steps=2", "--warmup=1"] if SMOKE else ["--batch_size=256", "--steps=50", "--warmup=3"]), 120, 0)
                         for name, flags, dtype in [
                             ("default_bf16", "", "bfloat16"),
                             ("autotune0_bf16", "--xla_gpu_autotune_level=0", "bfloat16"),
                             # no autotuning, GEMMs on cuBLAS's heuristics instead of a default Triton
                             # tiling: fast compilation without the slow kernels?
                             ("autotune0_notriton_bf16", "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false", "bfloat16"),
                             ("default_fp32", "", "float32")]]),
        # what member runs (members.py) buy on the GPU: the fine-tuning step of MiniLM's architecture,
        # one run against nine vmapped (bert6's 3 seeds x 3 lrs); steps_per_s is per member-step / 9
        ("bench_members", [([PY, "-m", "bert_vs_transformer.cli.benchmark", "--config=configs/glue.py:task=sst2,init=scratch",
                             f"--members={n}", "--seq_len=64"] +
                            (["--batch_size=4", "--steps=2", "--warmup=1"] if SMOKE else ["--batch_size=32", "--steps=50", "--warmup=3"]),
                            90, 0) for n in (1, 9)]),
    ],
}
JOBSET = os.environ.get("JOBSET", "issues5_6")
if PT_HF and not (JOBSET == "bert6" and VMAP):
    sys.exit(f"PT_HF (a carried pretrained model) is read by JOBSET=bert6 with VMAP=1 only, not JOBSET={JOBSET} VMAP={int(VMAP)}")
if JOBSET not in JOBSETS:
    sys.exit(f"unknown JOBSET={JOBSET!r}; choose from {sorted(JOBSETS)}")
JOBS = JOBSETS[JOBSET]
ONLY = os.environ.get("ONLY")
if ONLY:  # comma-separated names or shell patterns (ONLY='rte*,sst2*': both of a task's inits)
    JOBS = [j for j in JOBS if any(fnmatch.fnmatchcase(j[0], pat) for pat in ONLY.split(","))]
status = {}

def log(msg):
    line = f"[{time.time() - T0:7.1f}s] {msg}"
    print(line, flush=True)
    with open(f"{W}/driver.log", "a") as f:
        f.write(line + "\n")

GRACE = 40  # SIGTERM -> SIGKILL: main.py's checkpoint at SIGTERM (nine small-BERT members: ~1.9 GB)
# fine-tuning processes are many, short and compile-bound: XLA autotuning off for them (lease 3's setting),
# whatever pick_flags chose for the one long pretraining run
FT_XLA_FLAGS = os.environ.get("FT_XLA_FLAGS", " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_gpu_autotune_level")]
    + ([] if SMOKE else ["--xla_gpu_autotune_level=0"])))

def run_job(name, steps):
    os.makedirs(f"{W}/{name}", exist_ok=True)
    status[name] = "running"
    env = dict(os.environ, XLA_FLAGS=FT_XLA_FLAGS) if name in FT_JOBS else None
    for i, (argv, max_s, reserve, *opt) in enumerate(steps):
        if argv[0] == "touch":  # instant: always (a DONE mark must not be lost to the deadline)
            subprocess.call(argv)
            continue
        budget = min(max_s, left() - reserve - GRACE - 5)
        if budget < max([20, *opt]):  # opt: (min_s,), the least time worth starting this step with
            status[name] = f"skipped step {i} (no time)"
            log(f"{name}: step {i} skipped, {left():.0f}s left")
            return
        wd = next((a[len("--workdir="):] for a in argv if isinstance(a, str) and a.startswith("--workdir=")), None)
        trains = "bert_vs_transformer.main" in argv  # (export_hf etc. also take --workdir)
        if wd and trains and glue_grid.run_result(wd) is not None:  # a second call on the warm machine: done already
            log(f"{name}: step {i} finished in an earlier call, skipped ({wd})")
            continue
        argv = [a() if callable(a) else a for a in argv]  # late-bound arguments
        log(f"{name}: step {i} start (budget {budget:.0f}s): {shlex.join(argv[2:])}")
        t = time.time()
        with open(f"{W}/{name}/log.txt", "a") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
            try:
                rc = p.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGTERM)  # main.py saves a checkpoint on SIGTERM
                try:
                    rc = p.wait(timeout=GRACE)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    rc = p.wait()
                rc = f"timeout({rc})"
        log(f"{name}: step {i} rc={rc} in {time.time() - t:.0f}s")
        status[name] = f"step {i} rc={rc}"
        if i == 0 and rc != 0 and not str(rc).startswith("timeout"):
            return  # training failed: nothing to evaluate (later steps are independent of each other)
    status[name] = "done"

LIMIT = 15 * 2**20  # a file back from $OUT: at most 16 MiB

def _tar(tmp, strict):
    """W's logs and metrics (no checkpoints, no raw xplane traces: profile_summary's summary.md/json
    stand for them); strict: no raw traces or TensorBoard files at all."""
    with tarfile.open(tmp, "w:gz") as tf:
        for root, dirs, files in os.walk(W):
            dirs[:] = [d for d in dirs if d not in ("checkpoints",) and not d.startswith("ckpt")
                       and not (strict and d in ("plugins", "tensorboard"))]
            for f in files:
                p = os.path.join(root, f)
                size = os.path.getsize(p)
                if size >= 5_000_000 or f.endswith(".xplane.pb") or (f.endswith(".trace.json.gz") and size > 2_000_000):
                    continue
                tf.add(p, arcname=os.path.relpath(p, W))

def pack():
    tmp = f"{OUT}/results.tgz.tmp"
    _tar(tmp, strict=False)
    if os.path.getsize(tmp) > LIMIT:  # over $OUT's per-file limit it would not come back at all
        _tar(tmp, strict=True)
    os.replace(tmp, f"{OUT}/results.tgz")
    with open(f"{OUT}/status.json", "w") as f:
        json.dump({"elapsed": time.time() - T0, "status": status}, f, indent=1)

def packer():
    while True:
        time.sleep(40)
        try:
            pack()
        except Exception as e:  # keep going
            log(f"pack failed: {e}")

threading.Thread(target=packer, daemon=True).start()
JOB_NAMES, ENDED = {n for n, _ in JOBS}, set()
sem = threading.Semaphore(CONC)  # CPython wakes waiters in FIFO order: list order among ready jobs
threads = []
for name, steps in JOBS:
    def go(n=name, s=steps):
        need = NEEDS.get(n)
        maker = PRODUCERS.get(need)
        while need and not os.path.exists(need) and left() > 90:
            if maker not in JOB_NAMES or maker in ENDED:  # nothing of this call will make it
                status[n] = f"not started: {need} missing and {maker} " + (
                    "is not in this call's jobs" if maker not in JOB_NAMES else f"ended without it ({status.get(maker)})")
                log(f"{n}: {status[n]}")
                ENDED.add(n)
                return
            time.sleep(2)
        if need and os.path.exists(need):
            time.sleep(2)  # let the file's writer finish
        sem.acquire()
        try:
            if left() < 90:
                status[n] = "not started (no time)"
                return
            run_job(n, s)
        finally:
            ENDED.add(n)
            sem.release()
    th = threading.Thread(target=go)
    th.start()
    threads.append(th)
    time.sleep(0.2)  # keep the list order at the semaphore
for th in threads:
    th.join()
log("all done")
pack()
