"""experiments/nsp_probe.py: its pairs and its AUC, checked by hand."""

import numpy as np
import pytest

from experiments import nsp_probe


def test_pairs_alternate_own_and_other_partner():
    firsts = ["a0", "a1", "a2", "a3", "a4"]
    seconds = ["b0", "b1", "b2", "b3", "b4"]
    pairs, labels = nsp_probe.make_pairs(firsts, seconds, n=5, seed=3)
    assert labels.tolist() == [0, 1, 0, 1, 0]
    for i, ((a, b), y) in enumerate(zip(pairs, labels)):
        assert a == firsts[i]
        assert (b == seconds[i]) == (y == 0)  # NotNext never pairs a sentence with its own partner
    assert len(nsp_probe.make_pairs(firsts, seconds, n=100)[0]) == 5  # capped at the data
    with pytest.raises(ValueError, match="at least 2"):
        nsp_probe.make_pairs(["a"], ["b"], n=5)


def test_auc_by_hand():
    # label-0 scores {3, 1}, label-1 scores {2, 0}: pairs (3>2, 3>0, 1<2, 1>0) -> 3 of 4
    assert nsp_probe.auc([3, 2, 1, 0], [0, 1, 0, 1]) == pytest.approx(0.75)
    assert nsp_probe.auc([1, 1], [0, 1]) == pytest.approx(0.5)  # a tie counts half
    assert nsp_probe.auc(np.arange(4), [1, 1, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both labels"):
        nsp_probe.auc([1, 2], [0, 0])
