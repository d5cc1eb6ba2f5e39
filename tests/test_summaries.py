"""taugate/summaries.py: the one accuracy (logits and class ids), against numpy by hand."""

from __future__ import annotations

import numpy as np
import pytest

from taugate.summaries import hit_rate, top1

LOGITS = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)


@pytest.mark.parametrize("labels,expected", [
    ([1, 0, 1, 0], 1.0),
    ([1, 0, 0, 0], 0.75),
    ([0, 1, 0, 1], 0.0),
])
def test_top1_and_hit_rate_agree(labels, expected):
    labels = np.array(labels, np.int64)
    assert top1(LOGITS, labels) == expected
    assert hit_rate(LOGITS.argmax(axis=1), labels) == expected


def test_empty_and_mismatched():
    assert top1(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0
    assert hit_rate(np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0.0
    with pytest.raises(ValueError, match="4 rows of logits for 3 labels"):
        top1(LOGITS, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"predictions of shape \(4,\) for labels of shape \(3,\)"):
        hit_rate(np.zeros(4, np.int64), np.zeros(3, np.int64))
