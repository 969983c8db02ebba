"""Cross-entropy variants shared by the tasks (sums, so callers choose the normaliser)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-position cross-entropy against label-smoothed targets (Vaswani 5.4, Szegedy et al.).

    The target puts 1 - eps on the label and eps / (V - 1) on every other class; the constant
    entropy of that target is subtracted, so a perfect prediction scores 0 (as tensor2tensor).
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if label_smoothing <= 0.0:
        return nll
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    smooth = -jnp.sum(log_probs, axis=-1)  # sum over all classes
    loss = confidence * nll + low * (smooth - nll)
    entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    return loss - entropy


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
