"""Materialization steps (taugate.bundle.materialize): take / scale / add, checked."""

from __future__ import annotations

import numpy as np
import pytest

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.manifest import MaterializeStep
from taugate.bundle.materialize import build_initializer

W = np.arange(20, dtype=np.float32).reshape(4, 5)
BACKBONE = {"w": W}
MODE = {"rows": np.array([3, 1], np.int16), "cols": np.array([0, 4], np.int64),
        "bits": np.packbits(np.array([1, 0, 1, 1, 0], np.uint8)),
        "g": np.array([2.0, -1.0], np.float32), "plus": np.ones((2, 2), np.float32),
        "bad": np.array([0, 9], np.int32), "neg": np.array([-1], np.int64),
        "f": np.array([0.0], np.float32), "bits2": np.zeros(2, np.uint8),
        "r": np.array([1 / 3, 7.0], np.float32)}


def step(take=(), scale=None, add=None, shape=None, dtype="float32", tensor="w",
         source="backbone"):
    return MaterializeStep("x", source, tensor, tuple(take), scale, add, dtype,
                           tuple(shape if shape is not None else W.shape))


GOOD = [
    ("identity", step(), W),
    ("rows", step([(0, "rows")], shape=(2, 5)), W[[3, 1]]),
    ("rows-cols-scale-add", step([(0, "rows"), (1, "cols")], (1, "g"), "plus", shape=(2, 2)),
     W[[3, 1]][:, [0, 4]] * np.array([2.0, -1.0], np.float32) + 1),
    ("bit-mask", step([(1, "bits")], shape=(4, 3)), W[:, [0, 2, 3]]),
    # a column then a row scale, each rounding once in that order (the fp32 gate lowering)
    ("two-scales", step([(0, "rows"), (1, "cols")], ((1, "g"), (0, "r")), shape=(2, 2)),
     (W[[3, 1]][:, [0, 4]] * np.array([2.0, -1.0], np.float32)) *
     np.array([[1 / 3], [7.0]], np.float32)),
]


@pytest.mark.parametrize("s,want", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_builds(s, want):
    got = build_initializer(s, BACKBONE, MODE, "m")
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


BAD = [
    ("index-range", step([(1, "bad")], shape=(4, 2)), r"\[0, 5\).*max 9"),
    ("negative-index", step([(0, "neg")], shape=(1, 5)), "min -1"),
    ("float-index", step([(0, "f")], shape=(1, 5)), "1-D integers"),
    ("axis", step([(2, "rows")]), "axis 2 out of range"),
    ("bit-mask-length", step([(0, "bits2")]), "bit mask over an axis of 4 needs 1 bytes, got 2"),
    ("declared-shape", step(shape=(5, 4)), "declares float32 \\[5, 4\\]"),
    ("declared-dtype", step(dtype="float16"), "declares float16"),
    ("missing", step(tensor="nope"), "'nope' is not in the file"),
    ("scale-length", step(scale=(1, "g")), "scale"),
    ("add-shape", step(add="plus"), "add"),
]


@pytest.mark.parametrize("s,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_refuses(s, needle):
    with pytest.raises(BundleIntegrityError, match=needle):
        build_initializer(s, BACKBONE, MODE, "m")
