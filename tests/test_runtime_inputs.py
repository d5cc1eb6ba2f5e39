"""Input validation and coercion (taugate.runtime.inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from taugate.runtime import InputError
from taugate.runtime.inputs import InputSpecChecker

CHECK = InputSpecChecker(784, (28, 28), (0.0, 1.0))
RNG = np.random.default_rng(0)
BATCH = RNG.random((3, 784), dtype=np.float32)

ACCEPTED = [
    ("flat", BATCH, BATCH),
    ("images", BATCH.reshape(3, 28, 28), BATCH),
    ("channels", BATCH.reshape(3, 1, 28, 28), BATCH),
    ("single-flat", BATCH[0], BATCH[:1]),
    ("single-image", BATCH[0].reshape(28, 28), BATCH[:1]),
    ("float64", BATCH.astype(np.float64), BATCH),
    ("uint8", np.full((2, 784), 255, np.uint8), np.ones((2, 784), np.float32)),
    ("non-contiguous", np.asfortranarray(BATCH), BATCH),
    ("list", BATCH.tolist(), BATCH),
    ("negative-zero", np.full((1, 784), -0.0, np.float32), np.zeros((1, 784), np.float32)),
]


@pytest.mark.parametrize("x,expected", [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepts(x, expected):
    out = CHECK.coerce(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_float32_batch_is_not_copied():
    assert np.shares_memory(CHECK.coerce(BATCH), BATCH)


def _with(value):
    x = BATCH.copy()
    x[1, 5] = value
    return x


REFUSED = [
    ("int64", np.zeros((1, 784), np.int64), "unsupported dtype int64"),
    ("float16", np.zeros((1, 784), np.float16), "unsupported dtype float16"),
    ("bool", np.zeros((1, 784), bool), "unsupported dtype bool"),
    ("object", np.array([None, 1]), "unsupported dtype object"),
    ("wrong-width", np.zeros((2, 783), np.float32), "unsupported shape"),
    ("wrong-image", np.zeros((2, 27, 28), np.float32), "unsupported shape"),
    ("channels-3", np.zeros((2, 3, 28, 28), np.float32), "unsupported shape"),
    ("empty", np.zeros((0, 784), np.float32), "empty batch"),
    ("nan", _with(np.nan), "finite"),
    ("inf", _with(np.inf), "finite"),
    ("above-one", _with(1.5), "[0, 1]"),
    ("negative", _with(-0.1), "[0, 1]"),
    ("0-255-floats", BATCH * 255, "pass uint8 or divide by 255"),
    ("ragged", [[0.0, 1.0], [0.0]], "cannot convert"),
]


@pytest.mark.parametrize("x,needle", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refuses(x, needle):
    with pytest.raises(InputError) as info:
        CHECK.coerce(x)
    msg = str(info.value)
    assert needle in msg and "accepted:" in msg
    if isinstance(x, np.ndarray):  # says what it received
        assert str(tuple(x.shape)) in msg and str(x.dtype) in msg


def test_reshape_only_skips_checks():
    out = CHECK.reshape_only(BATCH.reshape(3, 28, 28) * 255)  # would be refused by coerce
    assert out.shape == (3, 784) and out.dtype == np.float32 and out.max() > 1


def test_other_ranges():
    check = InputSpecChecker(4, None, (-1.0, 1.0))
    np.testing.assert_array_equal(check.coerce([-1.0, 0.0, 0.5, 1.0]), [[-1.0, 0.0, 0.5, 1.0]])
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        check.coerce([-2.0, 0.0, 0.5, 1.0])


# The fast path of coerce (float32 C-contiguous [N, features]) decides NaN, inf and the range
# with one integer argmax over the bit patterns; these pin it against a plain min/max check.
EDGE_VALUES = [0.0, -0.0, 1.0, np.nextafter(np.float32(1), np.float32(2)),
               np.nextafter(np.float32(0), np.float32(-1)), np.float32(1e-45), np.nan, -np.nan,
               np.inf, -np.inf, 0.5, 2.0, -1.0, np.finfo(np.float32).max]


@pytest.mark.parametrize("value", EDGE_VALUES, ids=[repr(float(v)) for v in EDGE_VALUES])
@pytest.mark.parametrize("where", [0, 783, 2 * 784 - 1], ids=["first", "row-end", "last"])
def test_fast_path_agrees_with_min_max(value, where):
    x = np.full((2, 784), 0.25, np.float32)
    x.reshape(-1)[where] = value
    lo, hi = x.min(), x.max()
    ok = bool(lo >= 0 and hi <= 1)  # NaN makes both comparisons False
    if ok:
        assert CHECK.coerce(x) is x
    else:
        with pytest.raises(InputError, match="finite" if not np.isfinite(value) else r"\[0, 1\]"):
            CHECK.coerce(x)


def test_fast_path_does_not_copy_and_slow_paths_still_checked():
    assert CHECK.coerce(BATCH) is BATCH
    assert CHECK.reshape_only(BATCH) is BATCH  # validate=False: no numpy call at all
    sliced = np.asfortranarray(_with(np.nan))  # not C-contiguous: the general path
    with pytest.raises(InputError, match="finite"):
        CHECK.coerce(sliced)
    out = CHECK.reshape_only(BATCH[:, ::-1])  # non-contiguous: copied, still [N, 784]
    assert out.flags.c_contiguous and out.shape == (3, 784)
    np.testing.assert_array_equal(out, BATCH[:, ::-1])


# Format 2 input specs: whatever shape, range and layout the manifest says, and nothing else.
TABULAR = InputSpecChecker((5,), None, None, uint8_pixels=False)  # range null: any finite value
TOKENS = InputSpecChecker((3, 4), None, None, uint8_pixels=False)
IMAGE_CHW = InputSpecChecker((1, 6, 6), (6, 6), (0.0, 1.0), channels=1, uint8_pixels=True)
NEG = -RNG.random((2, 5), dtype=np.float32) * 100
TOK = RNG.standard_normal((2, 3, 4)).astype(np.float32)
IMG = RNG.random((2, 1, 6, 6), dtype=np.float32)

GENERIC_ACCEPTED = [
    ("tabular-negative", TABULAR, NEG, NEG),
    ("tabular-single", TABULAR, NEG[0], NEG[:1]),
    ("tokens", TOKENS, TOK, TOK),
    ("tokens-single", TOKENS, TOK[0], TOK[:1]),
    ("image-nchw", IMAGE_CHW, IMG, IMG),
    ("image-nhw", IMAGE_CHW, IMG.reshape(2, 6, 6), IMG),
    ("image-flat", IMAGE_CHW, IMG.reshape(2, 36), IMG),
    ("image-uint8", IMAGE_CHW, np.full((1, 6, 6), 255, np.uint8), np.ones((1, 1, 6, 6))),
]


@pytest.mark.parametrize("check,x,expected", [a[1:] for a in GENERIC_ACCEPTED],
                         ids=[a[0] for a in GENERIC_ACCEPTED])
def test_generic_specs_accept(check, x, expected):
    out = check.coerce(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6)


GENERIC_REFUSED = [
    ("tabular-784", TABULAR, BATCH, "unsupported shape"),
    ("tabular-uint8", TABULAR, np.zeros((2, 5), np.uint8), "unsupported dtype uint8"),
    ("tabular-nan", TABULAR, np.full((1, 5), np.nan, np.float32), "finite"),
    ("tokens-flat", TOKENS, TOK.reshape(2, 12), "unsupported shape"),
    ("image-range", IMAGE_CHW, IMG * 255, r"\[0, 1\].*uint8"),
    ("image-28", IMAGE_CHW, BATCH.reshape(3, 28, 28), "unsupported shape"),
]


@pytest.mark.parametrize("check,x,needle", [a[1:] for a in GENERIC_REFUSED],
                         ids=[a[0] for a in GENERIC_REFUSED])
def test_generic_specs_refuse(check, x, needle):
    with pytest.raises(InputError, match=needle) as info:
        check.coerce(x)
    assert "accepted:" in str(info.value)


def test_generic_accepted_message_names_the_spec():
    assert TABULAR.accepted.startswith("any finite float32/float64 values, shaped [N, 5]")
    assert "[N, 3, 4]" in TOKENS.accepted and "uint8" not in TOKENS.accepted
