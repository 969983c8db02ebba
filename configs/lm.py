"""Causal language model over the encoder stack (task "lm", tasks/lm.py): BERT's encoder blocks with
model.causal=True and the tied MLM head predicting the next token, on PTB or WikiText-2.

Variants: tiny (2 layers, d 128: a CPU run of seconds to minutes) and small (4 layers, d 256).
Arguments: dataset=ptb (default; train/valid/test all in ../shared/data) or dataset=wikitext2
(its train split is downloaded by the builder, so only with internet; valid/test are staged).
Usage: --config=configs/lm.py:tiny  or  :variant=small,dataset=wikitext2.

Tokens: a SentencePiece BPE (model.vocab_size pieces at most) trained on the dataset's train split,
as configs/transformer.py does, each line ending in EOS. eval_perplexity is per token of that BPE,
so it is not comparable with the word-level PTB / WikiText-2 perplexities of the literature.
"""

import ml_collections

from bert_vs_transformer import config_args

DATASETS = ("ptb", "wikitext2")
# layers, d_model, heads, BPE vocabulary, block length, batch (blocks), steps, peak learning rate
VARIANTS = {
    "tiny": dict(layers=2, d_model=128, heads=2, vocab_size=4000, seq=64, batch=32, steps=200, lr=2e-3),
    "small": dict(layers=4, d_model=256, heads=4, vocab_size=8000, seq=128, batch=64, steps=20_000, lr=1e-3),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = config_args.parse(arg, {"variant": "tiny", "dataset": "ptb"})
    if args["variant"] not in VARIANTS:
        raise ValueError(f"unknown lm variant {args['variant']!r}; choose from {sorted(VARIANTS)}")
    if args["dataset"] not in DATASETS:
        raise ValueError(f"lm config argument dataset={args['dataset']!r} is not one of {list(DATASETS)}")
    v = VARIANTS[args["variant"]]
    tiny = args["variant"] == "tiny"

    config = ml_collections.ConfigDict()
    config.task = "lm"
    config.model_family = "bert"  # the encoder stack of configs/bert.py
    config.variant = args["variant"]
    config.seed = 0
    config.num_train_steps = v["steps"]
    config.log_every_steps = 10 if tiny else 100
    config.eval_every_steps = 100 if tiny else 2_000
    config.checkpoint_every_steps = 100 if tiny else 2_000
    config.keep_checkpoints = 3
    # Evaluators: eval_loss (mean nll per BPE token), eval_perplexity, eval_accuracy on data.eval_split
    config.evals = ml_collections.ConfigDict({"validation": {"type": "loss", "split": "", "every_steps": -1}})
    config.stop_at_step = 0  # >0: stop (evaluate, checkpoint) at this step of the num_train_steps schedule
    config.steps_in_flight = 2
    config.grad_accum_steps = 1
    config.profile_steps = 0
    config.profile_start_step = 10
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    config.model = m = ml_collections.ConfigDict()
    m.vocab_size = v["vocab_size"]  # upper bound of the BPE's pieces
    m.d_model = v["d_model"]
    m.num_heads = v["heads"]
    m.head_dim = ml_collections.FieldReference(None, field_type=int)
    m.d_ff = 4 * v["d_model"]
    m.num_encoder_layers = v["layers"]
    m.num_decoder_layers = 0  # encoder only
    m.activation = "gelu"
    m.positional = "learned"
    m.max_len = v["seq"]  # positions: one block
    m.type_vocab_size = 0  # one segment
    m.embed_scale = False
    m.embed_layernorm = True
    m.layernorm_eps = 1e-12
    m.dropout_rate = 0.1
    m.attention_dropout_rate = 0.1
    m.norm_position = "post"
    m.use_bias = True
    m.share_embeddings = True  # the output projection is the token embedding (tied)
    m.initializer = "bert"
    m.pooler = False  # no [CLS] summary: every position predicts
    m.pooling = "first"
    m.causal = True  # left-to-right self-attention (BERT Table 5's LTR); the lm task requires it
    m.dtype = "float32"
    m.param_dtype = "float32"
    m.attention_kernel = "xla"
    m.remat_policy = "none"
    m.scan_layers = False

    config.optimizer = o = ml_collections.ConfigDict()
    o.name = "adamw"
    o.learning_rate = v["lr"]
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-6
    o.weight_decay = 0.01
    o.schedule = "warmup_linear_decay"
    o.warmup_steps = 20 if tiny else 1_000
    o.grad_clip_norm = 1.0

    config.data = d = ml_collections.ConfigDict()
    d.dataset = args["dataset"]  # ptb | wikitext2 (builders.BvtLmText) | synthetic
    d.max_seq_len = v["seq"]  # tokens per block
    d.batch_size = v["batch"]  # blocks per step
    d.eval_batch_size = 0  # blocks per eval batch; 0 = batch_size
    d.train_split = "train"
    d.eval_split = "validation"  # or "test"
    d.tfds_data_dir = ""  # generated tfds datasets; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    d.cache_dir = ""  # trained tokenizers; "" = $BVT_CACHE_DIR or <tfds data dir>/bvt_cache
    d.num_threads = 2  # grain threads preparing batches ahead (0 = in the training thread)
    d.worker_count = 0  # grain worker processes (a resume needs the same count)
    return config
