"""experiments/cls_spread.py's measure, on hand-computed examples."""

import numpy as np
import pytest

from experiments.cls_spread import spread


def test_spread_by_hand():
    assert spread(np.tile([[0.3, -2.0, 5.0]], (4, 1))) == 0.0  # the same vector for every example
    # Centred rows: variance per dim (1, 0), mean 0.5; mean square 0.5 -> spread 1.
    assert spread([[1.0, 0.0], [-1.0, 0.0]]) == pytest.approx(1.0)
    # Offset by a constant c: variance (1, 0) unchanged, mean square (1 + c^2 + c^2) / 2 -> 1/sqrt(1 + 2c^2).
    c = 3.0
    assert spread([[1.0 + c, c], [-1.0 + c, c]]) == pytest.approx(1 / np.sqrt(1 + 2 * c * c))
