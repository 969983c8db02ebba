"""The interface the training loop drives."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax

from bert_vs_transformer.models import flops
from bert_vs_transformer.models.model_config import ModelConfig

Batch = Mapping[str, jax.Array]


class Task:
    """One objective over one model family."""

    name = "task"
    supports_members = False  # member runs (training/members.py): seeds x learning rates in one program

    def __init__(self, config):
        self.config = config
        self.model_config = ModelConfig.from_config(config)

    def model(self, deterministic: bool) -> nn.Module:
        raise NotImplementedError

    def dummy_batch(self, batch_size: int) -> dict[str, Any]:
        """Zeros with the batch's shapes and dtypes (for init, abstract shapes, the benchmark)."""
        raise NotImplementedError

    def init_args(self, batch: Batch) -> tuple:
        """Positional model inputs for model.init."""
        raise NotImplementedError

    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        raise NotImplementedError

    def loss(self, params, batch: Batch, normalizers, rng, deterministic: bool):
        raise NotImplementedError

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Metric sums over a batch or an evaluation split -> reported metrics."""
        raise NotImplementedError

    def tokens(self, batch: Batch) -> jax.Array:
        """Real tokens processed (for tokens/s)."""
        raise NotImplementedError

    def lengths(self) -> dict[str, Any]:
        """The sequence lengths of the task's batches, from config.data (for FLOPs and benchmarks)."""
        raise NotImplementedError

    def forward_flops(self, batch_size: int) -> dict[str, int]:
        """Model forward FLOPs by component for a global batch of `batch_size` rows (models/flops.py)."""
        raise NotImplementedError

    def step_flops(self, batch_size: int) -> int:
        """Model FLOPs of one training step (forward + backward) on `batch_size` rows."""
        return flops.total(self.forward_flops(batch_size))
