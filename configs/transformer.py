"""The Transformer (Vaswani et al. 2017). Variants: tiny (CPU, seconds), base and big (Table 3's
models, on Multi30k), wmt14_base and wmt14_big (Table 2: the paper's data, batches, steps and
checkpoint averaging; a TPU slice or 8 GPUs, docs/wmt14.md), and multi30k (sized for the 29k-pair
Multi30k en-de task).

Usage: --config=configs/transformer.py:base  (or :variant=big). Every model field is a
`bert_vs_transformer.models.model_config.ModelConfig` field; compare with configs/bert.py.
"""

import ml_collections

from bert_vs_transformer import config_args

# Table 3 of the paper: N, d_model, d_ff, h, P_drop. (d_k = d_v = d_model / h.)
VARIANTS = {
    "tiny": dict(num_layers=2, d_model=64, d_ff=256, num_heads=4, dropout=0.1, vocab_size=4000),
    "base": dict(num_layers=6, d_model=512, d_ff=2048, num_heads=8, dropout=0.1, vocab_size=37000),
    "big": dict(num_layers=6, d_model=1024, d_ff=4096, num_heads=16, dropout=0.3, vocab_size=37000),
    # Multi30k has 29k short pairs (~13 words): base (65M) overfits it. This is the small model
    # Wu et al. (ACL 2021, "Good for misconceived reasons") found best on it (4 layers, d 128,
    # ff 256, 4 heads; ~41 BLEU on test2016 en-de) with dropout 0.1 instead of their 0.3, by
    # measurement: with 0.3 it learns slowly (val PPL 40.7 at step 1000, 23.3 at 2500; test lc
    # BLEU 10.8 at 2500), with 0.1 val PPL is 19.7 at 1000 and flat near 6.0 from step 5000
    # (training loss still falling: it starts to overfit there), test lc BLEU 38.9 at step 8000
    # and 40.1 for the last-5 average (3.4 h on a 2-core CPU; docs/results.md). 0.2 is not measured.
    "multi30k": dict(num_layers=4, d_model=128, d_ff=256, num_heads=4, dropout=0.1, vocab_size=8000),
}
VARIANTS["wmt14_base"], VARIANTS["wmt14_big"] = VARIANTS["base"], VARIANTS["big"]
STEPS = {"tiny": 100, "base": 100_000, "big": 300_000, "multi30k": 8_000, "wmt14_base": 100_000, "wmt14_big": 300_000}
# Sec. 6.1 averages the last 5 (base) / 20 (big) checkpoints, written at 10-minute intervals; at
# Sec. 5.2's step times (0.4 s base, 1.0 s big on 8 P100s) that is every 1,500 / 600 steps.
WMT14_CHECKPOINTS = {"wmt14_base": (1_500, 5), "wmt14_big": (600, 20)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, {"variant": "base"})
    if args["variant"] not in VARIANTS:
        raise ValueError(f"unknown transformer variant {args['variant']!r}; choose from {sorted(VARIANTS)}")
    v = VARIANTS[args["variant"]]

    config = ml_collections.ConfigDict()
    config.task = "translation"  # objective: translation | pretraining | classification
    config.model_family = "transformer"  # which model class the config builds
    config.variant = args["variant"]
    config.seed = 0  # parameter init, dropout and data order
    small = args["variant"] in ("tiny", "multi30k")
    wmt14 = args["variant"] in WMT14_CHECKPOINTS
    config.num_train_steps = STEPS[args["variant"]]  # base/big: Sec. 5.2
    config.log_every_steps = 10 if args["variant"] == "tiny" else 100
    config.eval_every_steps = 50 if args["variant"] == "tiny" else (500 if small else 5_000)
    config.checkpoint_every_steps = 50 if args["variant"] == "tiny" else (500 if small else 5_000)
    config.label_smoothing = 0.1  # epsilon_ls (Sec. 5.4)
    config.keep_checkpoints = 5  # the last 5 are averaged for the final model (Sec. 6.1)
    if wmt14:
        config.checkpoint_every_steps, config.keep_checkpoints = WMT14_CHECKPOINTS[args["variant"]]
    config.stop_at_step = 0  # >0: stop (evaluate, checkpoint) at this step of the num_train_steps schedule
    config.steps_in_flight = 2  # most steps dispatched ahead of the device (0 = wait on each): bounds SIGTERM latency
    config.profile_steps = 0  # >0: trace this many steps with jax.profiler into WORKDIR/profile
    config.profile_start_step = 10  # ...starting this many steps into the run (after compilation)
    # Evaluators (bert_vs_transformer/evaluation): split "" = data.eval_split; every_steps -1 =
    # eval_every_steps, 0 = off (--config.evals.bleu.every_steps=0 skips decoding)
    config.evals = ml_collections.ConfigDict({
        "validation": {"type": "loss", "split": "", "every_steps": -1},  # eval_nll, eval_perplexity, ...
        "bleu": {  # sacreBLEU of the decoded split: eval_bleu, eval_bleu_lowercase, eval_chrf
            # tiny: decode once, after the last step (decoding the split costs about as much as its 100 steps)
            "type": "bleu", "split": "", "every_steps": STEPS["tiny"] if args["variant"] == "tiny" else -1,
            "beam_size": 0,  # 0 = greedy during training; the final test score uses beam 4
            "alpha": 0.6,  # length penalty (Sec. 6.1)
            "max_examples": 0,  # 0 = the whole split
            "batch_size": 0,  # 0 = data.eval_batch_size or batch_size
        },
    })
    if wmt14:  # Table 3's dev BLEU: beam 4, no checkpoint averaging
        config.evals.bleu.beam_size = 4
    config.grad_accum_steps = 1  # microbatches per step (the same update as the full batch)
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1 fills the devices

    config.model = m = ml_collections.ConfigDict()
    m.vocab_size = v["vocab_size"]  # one shared source/target BPE vocabulary (Sec. 5.1)
    m.d_model = v["d_model"]  # model width
    m.num_heads = v["num_heads"]  # h
    m.head_dim = ml_collections.FieldReference(None, field_type=int)  # d_k = d_v; None = d_model / h
    m.d_ff = v["d_ff"]  # FFN inner width
    m.num_encoder_layers = v["num_layers"]  # N
    m.num_decoder_layers = v["num_layers"]  # N
    m.activation = "relu"  # FFN(x) = max(0, xW1 + b1)W2 + b2 (Sec. 3.3)
    m.positional = "sinusoidal"  # Sec. 3.5; "learned" is Table 3 row (E)
    m.max_len = 512  # longest position (used by learned positions)
    m.type_vocab_size = 0  # no segment embeddings
    m.embed_scale = True  # embeddings multiplied by sqrt(d_model) (Sec. 3.4)
    m.embed_layernorm = False
    m.layernorm_eps = 1e-6
    m.dropout_rate = v["dropout"]  # P_drop on sublayer outputs and embedding sums (Sec. 5.4)
    m.attention_dropout_rate = 0.0  # the paper names none
    m.norm_position = "post"  # LayerNorm(x + Sublayer(x)) (Sec. 3.1)
    m.use_bias = True
    m.share_embeddings = True  # source, target and pre-softmax share one matrix (Sec. 3.4)
    m.initializer = "xavier"
    m.pooler = False
    m.pooling = "first"  # pooler input: first token ([CLS]), "last" real token (causal LTR), or "mean" of real tokens
    m.causal = False  # causal encoder self-attention (BERT Table 5 "LTR")
    m.dtype = "bfloat16" if wmt14 else "float32"  # compute dtype; "bfloat16" on accelerators
    m.param_dtype = "float32"  # master weights
    m.attention_kernel = "xla"  # "cudnn": flash attention on NVIDIA GPUs
    # big: recompute the attention scores in the backward pass (8.4 -> 5.4 GB of temporaries at
    # 24 x 128 in bf16, +1% FLOPs; docs/performance.md)
    m.remat_policy = "dots_no_batch" if args["variant"] in ("big", "wmt14_big") else "none"
    m.scan_layers = False

    config.optimizer = o = ml_collections.ConfigDict()
    o.name = "adam"
    o.b1 = 0.9  # Sec. 5.3
    o.b2 = 0.98
    o.eps = 1e-9
    o.schedule = "rsqrt"  # lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    o.warmup_steps = {"tiny": 100, "multi30k": 2000}.get(args["variant"], 4000)
    # Multiplies the rsqrt schedule; multi30k peaks at 0.005 (Wu et al. 2021), base/big as the paper.
    o.lr_scale = 2.5 if args["variant"] == "multi30k" else 1.0
    o.grad_clip_norm = 0.0  # 0 disables

    config.data = d = ml_collections.ConfigDict()
    d.dataset = "multi30k"  # a bert_vs_transformer.data.builders.REGISTRY name
    d.source_lang = "en"  # inputs (encoder side)
    d.target_lang = "de"  # targets (decoder side)
    d.max_len = 128  # tokens per side
    d.batch_size = 32 if args["variant"] == "tiny" else 128  # sentence pairs per step (rows when packed)
    # >0: batches by padded tokens instead (rows x width of the larger side, at most this many, one
    # [rows, width] shape per length bucket; fairseq's --max-tokens); the paper's ~25,000 is per side
    d.tokens_per_batch = 0
    d.eval_batch_size = 0  # sentence pairs per eval batch; 0 = batch_size
    d.length_buckets = (32, 48, 64)  # pad each batch to the first of these >= its longest row, else max_len
    d.overlong = "truncate"  # pairs longer than max_len: "truncate" (EOS kept) or "drop" (training only)
    if wmt14:  # Sec. 5.1: WMT14 en-de, shared ~37k BPE, ~25,000 source + ~25,000 target tokens a batch
        d.dataset, d.eval_split = "wmt14", "validation"  # validation = newstest2013, test = newstest2014
        d.tokens_per_batch = 25_000
        # 15 [rows, width] shapes: on WMT-like lengths 7% of the larger side is padding (16% with 8;
        # docs/data.md); each shape compiles once
        d.max_len, d.overlong = 256, "drop"
        d.length_buckets = (12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 128)
    d.pack = False  # T5-style packing of several pairs per max_len row (+ *_segmentation, *_positions)
    d.tfds_data_dir = ""  # generated tfds datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    d.cache_dir = ""  # trained tokenizers; "" = $BVT_CACHE_DIR or <tfds data dir>/bvt_cache
    d.num_threads = 2  # grain threads preparing batches ahead (0 = in the training thread)
    return config
