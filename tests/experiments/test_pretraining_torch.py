"""experiments/pretraining_torch.py: our pretraining batch as `transformers`' BertForPreTraining labels."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from experiments import pretraining_torch  # noqa: E402


def test_labels_only_at_weighted_masked_positions():
    """Hand example: row 0 predicts ids 7 and 9 at positions 2 and 4; its third slot is padding
    (position 0, weight 0) and must not label the [CLS] position; row 1 predicts nothing."""
    batch = {
        "input_ids": np.array([[2, 5, 4, 6, 4, 3], [2, 8, 3, 0, 0, 0]], np.int32),
        "token_type_ids": np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], np.int32),
        "attention_mask": np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int32),
        "masked_lm_positions": np.array([[2, 4, 0], [0, 0, 0]], np.int32),
        "masked_lm_ids": np.array([[7, 9, 0], [0, 0, 0]], np.int32),
        "masked_lm_weights": np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32),
        "next_sentence_labels": np.array([1, 0], np.int32),
    }
    t = pretraining_torch.torch_batch(batch, torch)
    expected = np.full((2, 6), -100)
    expected[0, 2], expected[0, 4] = 7, 9
    np.testing.assert_array_equal(t["labels"].numpy(), expected)
    np.testing.assert_array_equal(t["input_ids"].numpy(), batch["input_ids"])
    np.testing.assert_array_equal(t["token_type_ids"].numpy(), batch["token_type_ids"])
    np.testing.assert_array_equal(t["next_sentence_label"].numpy(), [1, 0])
    assert t["labels"].dtype == torch.int64
