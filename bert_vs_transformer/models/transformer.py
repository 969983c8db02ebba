"""The Transformer of Vaswani et al. (2017): encoder-decoder over the shared blocks in layers.py."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_vs_transformer.models import layers
from bert_vs_transformer.models.model_config import ModelConfig


class EncoderDecoder(nn.Module):
    """Encoder, decoder and one embedding matrix shared by source, target and the pre-softmax
    projection (Vaswani 3.4; share_embeddings=False gives separate tables and output layer)."""

    config: ModelConfig
    deterministic: bool = True
    decode: bool = False
    decode_len: int | None = None  # decode=True: target positions the caches hold

    def setup(self):
        cfg = self.config
        if cfg.num_decoder_layers <= 0:
            raise ValueError("EncoderDecoder needs model.num_decoder_layers > 0")
        self.token_embed = layers.TokenEmbed(cfg, name="token_embed")
        target_embed = self.token_embed
        if not cfg.share_embeddings:
            target_embed = layers.TokenEmbed(cfg, name="target_embed")
            self.output_projection = layers.DenseGeneral(
                (cfg.d_model,), (cfg.vocab_size,), ("embed", "vocab"), cfg, name="output_projection"
            )
        self.encoder = layers.Encoder(cfg, self.token_embed, self.deterministic, name="encoder")
        self.decoder = layers.Decoder(
            cfg, target_embed, self.deterministic, self.decode, self.decode_len, name="decoder"
        )

    def encode(self, inputs, inputs_padding=None, inputs_positions=None, inputs_segmentation=None):
        """Source ids [b, s] -> encoder memory [b, s, d]."""
        return self.encoder(
            inputs, padding_mask=inputs_padding, positions=inputs_positions, segmentation=inputs_segmentation
        )

    def decode_logits(
        self, targets_in, memory, inputs_valid, targets_padding=None, targets_positions=None,
        targets_segmentation=None, inputs_segmentation=None,
    ):
        """Decoder input ids [b, t] (targets shifted right) -> logits [b, t, vocab] (fp32).

        When decoding, `memory` is needed only by the first (cache-filling) call."""
        y = self.decoder(
            targets_in, memory, inputs_valid, padding_mask=targets_padding, positions=targets_positions,
            segmentation=targets_segmentation, memory_segmentation=inputs_segmentation,
        )
        if self.config.share_embeddings:
            logits = self.token_embed.attend(y)
        else:
            logits = self.output_projection(y, preferred_element_type=jnp.float32)
        return layers.constrain(logits, ("batch", "length", "vocab")).astype(jnp.float32)

    def __call__(
        self, inputs, targets_in, inputs_padding=None, targets_padding=None, inputs_positions=None,
        targets_positions=None, inputs_segmentation=None, targets_segmentation=None,
    ):
        """Teacher-forced forward: logits for every target position."""
        memory = self.encode(inputs, inputs_padding, inputs_positions, inputs_segmentation)
        inputs_valid = layers.default_padding(inputs, inputs_padding, inputs_segmentation)
        return self.decode_logits(
            targets_in, memory, inputs_valid, targets_padding, targets_positions,
            targets_segmentation, inputs_segmentation,
        )


def shift_right(targets: jax.Array, segmentation: jax.Array | None = None, bos_id: int = 0) -> jax.Array:
    """Decoder inputs for teacher forcing: targets shifted one step right, bos_id at the start of
    every sequence (and of every packed segment when segmentation is given)."""
    shifted = jnp.pad(targets, [(0, 0), (1, 0)], constant_values=bos_id)[:, :-1]
    if segmentation is not None:
        prev = jnp.pad(segmentation, [(0, 0), (1, 0)])[:, :-1]
        shifted = jnp.where(segmentation != prev, bos_id, shifted)
    return shifted
