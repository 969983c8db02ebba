"""BERT (Devlin et al. 2018) and the small BERTs of Turc et al. (2019).

Variants: tiny 2/128, mini 4/256, small 4/512, medium 8/512 (L/H, A = H/64, ff = 4H), base
12/768/12, large 24/1024/16. Usage: --config=configs/bert.py:base. The model fields are the same
`ModelConfig` fields as configs/transformer.py: the diff between the two files is the relation.

Phases (BERT A.2): `base` runs every step at seq 128 (phase 0); the paper's two-phase schedule is
`base,phase=1` (900k steps at 128) into W, then `phase=2,init=W` (100k steps at 512, 80 masked
positions, model and vocabulary from W's config.json, every parameter from W's last checkpoint).
"""

import json
import os

import ml_collections

from bert_vs_transformer import config_args

# L (layers), H (hidden), A (heads); ff = 4H throughout.
VARIANTS = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def _phase_one(init: str) -> tuple[dict, str]:
    """(config.json, absolute path) of a phase-1 pretraining workdir (phase 2 continues its model and vocabulary)."""
    workdir = os.path.abspath(os.path.expanduser(init))
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"phase=2 needs init=<a phase-1 pretraining workdir of ours>; {path} not found")
    with open(path) as f:
        src = json.load(f)
    if src.get("task") != "pretraining":
        raise ValueError(f"phase=2: {init!r} is a {src.get('task')!r} run, not a pretraining workdir")
    return src, workdir


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, {"variant": "base", "phase": 0, "init": ""})
    if args["variant"] not in VARIANTS:
        raise ValueError(f"unknown bert variant {args['variant']!r}; choose from {sorted(VARIANTS)}")
    if args["phase"] not in (0, 1, 2):
        raise ValueError(f"phase={args['phase']!r}: 0 (one phase at seq 128), 1 (90% of the steps at 128) or "
                         "2 (the last 10% at 512, from init=<phase-1 workdir>)")
    if bool(args["init"]) != (args["phase"] == 2):
        raise ValueError("init=<phase-1 workdir> goes with phase=2 (and only with it)")
    num_layers, hidden, heads = VARIANTS[args["variant"]]
    small = args["variant"] == "tiny"

    config = ml_collections.ConfigDict()
    config.task = "pretraining"  # objective: translation | pretraining | classification
    config.model_family = "bert"
    config.variant = args["variant"]
    config.seed = 0
    config.num_train_steps = 300 if small else 1_000_000  # BERT A.2: 1M steps
    config.log_every_steps = 10 if small else 100
    config.eval_every_steps = 150 if small else 10_000
    config.checkpoint_every_steps = 100 if small else 10_000
    config.keep_checkpoints = 3  # the latest K checkpoints are kept
    # Evaluators (bert_vs_transformer/evaluation): eval_mlm_loss, eval_mlm_accuracy, eval_nsp_accuracy, ...
    config.evals = ml_collections.ConfigDict({"validation": {"type": "loss", "split": "", "every_steps": -1}})
    config.stop_at_step = 0  # >0: stop (evaluate, checkpoint) at this step of the num_train_steps schedule
    config.steps_in_flight = 2  # most steps dispatched ahead of the device (0 = wait on each): bounds SIGTERM latency
    config.nsp_weight = 1.0  # weight of the NSP loss; 0 = "No NSP" (Table 5)
    config.lm_objective = "mlm"  # "mlm", or "ltr": left-to-right LM on unmasked text (Table 5)
    config.grad_accum_steps = 1  # microbatches per step (the same update as the full batch)
    config.profile_steps = 0  # >0: trace this many steps with jax.profiler into WORKDIR/profile
    config.profile_start_step = 10  # ...starting this many steps into the run (after compilation)
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    config.model = m = ml_collections.ConfigDict()
    m.vocab_size = 30522  # uncased WordPiece
    m.d_model = hidden  # H
    m.num_heads = heads  # A
    m.head_dim = ml_collections.FieldReference(None, field_type=int)  # H / A = 64
    m.d_ff = 4 * hidden  # 4H
    m.num_encoder_layers = num_layers  # L
    m.num_decoder_layers = 0  # encoder only
    m.activation = "gelu"  # exact erf GELU
    m.positional = "learned"  # learned absolute positions
    m.max_len = 512
    m.type_vocab_size = 2  # sentence A / B segment embeddings
    m.embed_scale = False
    m.embed_layernorm = True  # LayerNorm after the embedding sum
    m.layernorm_eps = 1e-12
    m.dropout_rate = 0.1  # hidden dropout
    m.attention_dropout_rate = 0.1  # dropout on attention probabilities
    m.norm_position = "post"
    m.use_bias = True
    m.share_embeddings = True  # MLM decoder tied to the word embeddings
    m.initializer = "bert"  # truncated normal(0.02)
    m.pooler = True  # tanh dense on [CLS] for NSP / classification
    m.pooling = "first"  # pooler input: first token ([CLS]), "last" real token (causal LTR), or "mean" of real tokens
    m.causal = False  # causal encoder self-attention (BERT Table 5 "LTR")
    m.dtype = "float32"
    m.param_dtype = "float32"
    m.attention_kernel = "xla"
    m.remat_policy = "none"
    m.scan_layers = False

    config.optimizer = o = ml_collections.ConfigDict()
    o.name = "adamw"  # A.2: Adam with L2 weight decay 0.01, not on LayerNorm or biases
    o.learning_rate = 1e-3 if small else 1e-4  # tiny: a CPU demo, learns little at 1e-4 in 300 steps
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-6
    o.weight_decay = 0.01
    o.schedule = "warmup_linear_decay"
    o.warmup_steps = 30 if small else 10_000
    o.grad_clip_norm = 1.0

    config.data = d = ml_collections.ConfigDict()
    d.dataset = "pretraining_corpus"  # documents of bvt_pretraining_corpus (raw files from $BVT_DATA_DIR)
    d.vocab = ""  # vocab.txt; "" = BERT uncased (30,522); "train:<n>" = learn one (model.vocab_size = its size)
    d.lowercase = True  # uncased
    d.unk_marker = "<unk>"  # the corpus' unknown-word marker (PTB, WikiText-2) becomes [UNK]; "" = tokenize it as text
    d.max_seq_len = 64 if small else 128  # 90% of steps at 128, the rest at 512 (A.2); tiny: 64 for CPU speed
    d.max_predictions_per_seq = 10 if small else 20  # ~ masked_lm_prob * max_seq_len (20 at 128, 80 at 512)
    d.masked_lm_prob = 0.15  # fraction of tokens predicted (80% [MASK], 10% random, 10% kept)
    d.masking = "static"  # "static": one masking fixed by the seed (Devlin); "dynamic": re-masked every epoch (RoBERTa)
    d.whole_word_mask = False  # mask all WordPieces of a word together
    d.short_seq_prob = 0.1  # chunks with a shorter random target length (A.2: 10%)
    d.dupe_factor = 1 if small else 10  # passes over the documents creating instances (Google's script: 10)
    d.batch_size = 32 if small else 256  # sequences
    d.train_split = "train"  # documents to pretrain on (and to learn a "train:<size>" vocab from)
    d.corpus_sources = ""  # "" = every training document; else the sources kept, e.g. "ptb,wikitext2,multi30k":
    # without the GLUE train sentences (glue/<task>), BERT's setting of pretraining text unrelated to the tasks
    d.eval_split = "validation"  # held-out documents (PTB valid)
    d.eval_batch_size = 0  # sequences per eval batch; 0 = batch_size
    d.eval_seed = 0  # eval instances and masking, fixed whatever the run's seed
    d.tfds_data_dir = ""  # generated tfds datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    d.cache_dir = ""  # trained vocabs and created instances; "" = $BVT_CACHE_DIR or <tfds data dir>/bvt_cache
    d.num_threads = 2  # grain threads preparing batches ahead (0 = in the training thread)
    # grain worker processes (spawned) preparing batches, the same stream in the same order (one
    # process masks ~100 batches of 256 x 128 a second on a 2-core CPU; the small BERT trains at
    # ~80 steps/s alone on an H200); a resume needs the same count
    d.worker_count = 0

    # BERT A.2's two phases: 90% of the steps at seq 128, then 10% at 512 "to learn the positional
    # embeddings". As in Google's run_pretraining.py (init_checkpoint restores the trainable
    # variables only), phase 2 is its own run: every parameter (encoder and MLM/NSP heads) from the
    # phase-1 workdir, fresh Adam moments, its own warmup and linear decay.
    config.phase = args["phase"]  # 0: one phase, every step at max_seq_len 128; 1 / 2: the two phases
    config.init = ""  # phase 2: the phase-1 workdir (init_from.py)
    config.init_heads = False  # phase 2: the pretraining heads come from init too, not only params['bert']
    if args["phase"] == 1:
        config.num_train_steps = 270 if small else 900_000
    elif args["phase"] == 2:
        src, workdir = _phase_one(args["init"])
        small = src.get("variant") == "tiny"
        config.variant = src.get("variant", config.variant)
        config.model = ml_collections.ConfigDict(src["model"])  # phase 1's architecture and vocabulary
        for key in ("dataset", "vocab", "lowercase", "unk_marker"):
            if key in src.get("data", {}):
                d[key] = src["data"][key]
        learned = os.path.join(workdir, "vocab.txt")
        if str(d.vocab).startswith("train:") and os.path.isfile(learned):
            d.vocab = learned  # the vocabulary phase 1 learned (data.save_vocab)
        config.init = workdir
        config.init_heads = True
        if config.variant == "large":
            # At 512 the attention scores dominate the saved activations: recompute them (and keep the
            # weight matmuls' outputs), 12.6 -> 4.2 GB of temporaries at 4 x 512 (docs/performance.md).
            config.model.remat_policy = "dots_no_batch"
        d.max_seq_len = 2 * int(src["data"]["max_seq_len"]) if small else 512
        d.max_predictions_per_seq = 2 * int(src["data"]["max_predictions_per_seq"]) if small else 80
        config.num_train_steps = 30 if small else 100_000
        o.warmup_steps = 3 if small else 10_000  # A.2's 10,000 warmup steps again (the paper gives none for phase 2)
        config.eval_every_steps = 10 if small else 10_000
        config.checkpoint_every_steps = 10 if small else 10_000
    return config
