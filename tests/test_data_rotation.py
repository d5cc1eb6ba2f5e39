"""Which way a mode rotates (docs/cli.md, "Adding a mode": positive angles turn counter-clockwise, as torchvision's
``rotate`` does, with the image shown the usual way: row 0 at the top)."""

from __future__ import annotations

import pytest
import torch

from taugate.training.sources.mnist import rotate


@pytest.mark.parametrize("angle, want", [(90.0, (4, 14)), (-90.0, (24, 14)), (180.0, (14, 4))])
def test_positive_angle_turns_counter_clockwise(angle, want):
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 14, 24] = 255  # right of the centre
    out = rotate(img, angle).reshape(1, 28, 28)[0]
    row, col = divmod(int(out.argmax()), 28)
    assert abs(row - want[0]) <= 1 and abs(col - want[1]) <= 1, (row, col)
