"""Input validation and coercion: whatever an app hands us -> float32 [N, *shape], C-contiguous.

The manifest's input spec decides (``taugate.bundle.manifest.InputSpec``): a per-sample
``shape``, an optional value ``range`` and an optional image ``layout``. Accepted:

* float32 (or float64, cast) shaped ``[N, *shape]`` or one sample ``shape``;
* with an image layout (C, H, W) also ``[N, C*H*W]`` / ``[C*H*W]`` flat, ``[N, C, H, W]`` /
  ``[C, H, W]`` and, for one channel, ``[N, H, W]`` / ``[H, W]``; for the MNIST bundles that is
  ``[N, 784]``, ``[N, 28, 28]``, ``[N, 1, 28, 28]`` or one image;
* uint8, taken as 0-255 pixels and scaled by 1/255, only for image inputs in [0, 1] (and every
  format 1 bundle).

Refused with :class:`InputError` (naming the shape and dtype received and what is accepted):
any other dtype (ints, float16, bool, object), another shape, an empty batch, NaN/inf, and,
when the manifest gives a range, values outside it -- in particular 0-255 *floats* for a [0, 1]
image, which would otherwise silently give garbage: pass uint8 or divide by 255. Without a
range (``null``) any finite value passes, negative ones included.
"""

from __future__ import annotations

import numpy as np

from taugate.bundle.errors import InputError

_UNIT_MAX_BITS = 0x3F800000  # the bit pattern of float32 1.0, as a Python int
_NDARRAY = np.ndarray
_FLOAT32 = np.dtype(np.float32)
_FLOATS = (_FLOAT32, np.dtype(np.float64))
_UINT8 = np.dtype(np.uint8)
_UINT32 = np.dtype(np.uint32)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class InputSpecChecker:
    """Validates and coerces input batches for one model input.

    ``shape``: the per-sample shape (an int means ``(shape,)``); ``image_shape`` (H, W) and
    ``channels``: an image layout, or None; ``value_range``: (low, high) or None (no range
    check); ``uint8_pixels``: accept uint8 as 0-255 pixels (scaled by 1/255).
    """

    def __init__(self, shape, image_shape: tuple[int, int] | None = None,
                 value_range: tuple[float, float] | None = (0.0, 1.0), *, channels: int = 1,
                 uint8_pixels: bool = True):
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        self.features = int(np.prod(self.shape))
        self.image_shape = tuple(image_shape) if image_shape else None
        self.channels = int(channels)
        self.range = None if value_range is None else (float(value_range[0]),
                                                       float(value_range[1]))
        self.low, self.high = self.range or (None, None)
        self._unit = self.range == (0.0, 1.0)
        self.uint8_pixels = bool(uint8_pixels)
        self._forms = {self.shape: True}  # accepted shape (without N) -> True
        singles = [_fmt(self.shape)]
        if self.image_shape:
            h, w = self.image_shape
            forms = [(self.features,), (self.channels, h, w)] + ([(h, w)] if self.channels == 1
                                                                 else [])
            for form in forms:
                if form not in self._forms:
                    self._forms[form] = True
                    singles.append(_fmt(form))
        batches = ", ".join("[N, " + f[1:] for f in singles)
        values = ("any finite float32/float64 values" if self.range is None else
                  f"float32/float64 values in [{self.low:g}, {self.high:g}]")
        if self.uint8_pixels:
            values += " or uint8 0-255"
        self.accepted = f"{values}, shaped {batches} (N >= 1) or one sample {' or '.join(singles)}"

    @classmethod
    def from_spec(cls, spec) -> InputSpecChecker:
        """The checker for a manifest ``InputSpec`` (a tokens input: runtime/tokens.py)."""
        if spec.layout and spec.layout.get("kind") == "tokens":
            from taugate.runtime.tokens import TokenInputChecker

            return TokenInputChecker.from_spec(spec)
        return cls(spec.shape, spec.image_shape, spec.range, channels=spec.channels or 1,
                   uint8_pixels=spec.uint8_pixels)

    def _error(self, x: np.ndarray, problem: str) -> InputError:
        return InputError(f"input: {problem} (received shape {tuple(x.shape)}, dtype {x.dtype}); "
                          f"accepted: {self.accepted}")

    def _batch_view(self, x: np.ndarray) -> np.ndarray | None:
        """``x`` reshaped to [N, *shape] when its shape is accepted, else None."""
        shape = x.shape
        if shape in self._forms:  # one sample
            return x.reshape(1, *self.shape)
        if x.ndim >= 1 and shape[1:] in self._forms:
            return x.reshape(shape[0], *self.shape)
        return None

    def coerce(self, x) -> np.ndarray:
        """Validated float32 [N, *shape] C-contiguous array (a view of ``x`` when possible)."""
        # The common case -- float32 [N, *shape], C-contiguous, in [0, 1] -- is decided with
        # as few Python-level operations as possible: it is the whole per-call cost of
        # validation at batch 1 (see docs/runtime.md, "Measured overhead").
        if type(x) is _NDARRAY and x.dtype is _FLOAT32 and x.flags.c_contiguous:
            shape = x.shape
            if shape[1:] == self.shape and shape[0]:
                if self._unit:
                    # See _check_range: one integer argmax decides NaN, inf and the range.
                    bits = x.view(_UINT32)
                    if bits.item(bits.argmax()) <= _UNIT_MAX_BITS:
                        return x
                return self._check_range(x, x)
        return self._coerce_any(x)

    def _coerce_any(self, x) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except (ValueError, TypeError) as exc:
                raise InputError(f"input: cannot convert {type(x).__name__} to an array ({exc}); "
                                 f"accepted: {self.accepted}") from exc
        dtype = x.dtype
        if dtype not in _FLOATS and not (dtype == _UINT8 and self.uint8_pixels):
            raise self._error(x, f"unsupported dtype {dtype}")
        batch = self._batch_view(x)
        if batch is None:
            raise self._error(x, "unsupported shape")
        if batch.shape[0] == 0:
            raise self._error(x, "empty batch")
        if dtype == _UINT8:
            # Every uint8 is a valid pixel; scaling lands in [0, 1] for the unit range.
            out = np.multiply(batch, np.float32(1.0 / 255.0), dtype=np.float32, order="C")
            return out if self._unit or self.range is None else self._check_range(out, x)
        out = np.ascontiguousarray(batch, dtype=np.float32)
        return self._check_range(out, x)

    def _check_range(self, out: np.ndarray, original: np.ndarray) -> np.ndarray:
        if self._unit:
            # One integer reduction instead of two float ones: as uint32, every float32 in
            # [+0, 1] is <= the bits of 1.0, while negatives (sign bit), >1, inf and NaN are all
            # above it (-0.0 too: it is rechecked below). argmax + index has a far smaller fixed
            # cost than max() on small arrays, which matters at batch 1.
            # Measured against lo/hi = min()/max() (which also catch NaN): argmax alone is
            # ~0.3 us vs ~2.4 us at batch 1 and ~10 us vs ~22 us at batch 256; min/max only
            # run below, to diagnose a failure or for other ranges.
            bits = out.view(_UINT32)  # argmax() flattens; item() takes the flat index
            if bits.item(bits.argmax()) <= _UNIT_MAX_BITS:
                return out
        lo, hi = out.min(), out.max()
        if self.range is None:
            if np.isfinite(lo) and np.isfinite(hi):  # NaN propagates through min/max
                return out
        elif lo >= self.low and hi <= self.high:  # False for NaN as well
            return out
        if not np.isfinite(lo) or not np.isfinite(hi) or np.isnan(out).any():
            raise self._error(original, "values must be finite (found NaN or inf)")
        hint = ("; for 0-255 pixels pass uint8 or divide by 255"
                if self._unit and self.uint8_pixels and hi > 1.5 else "")
        raise self._error(original, f"values must lie in [{self.low:g}, {self.high:g}], got min "
                          f"{float(lo):g}, max {float(hi):g}{hint}")

    def reshape_only(self, x) -> np.ndarray:
        """The ``validate=False`` path: float32 C-contiguous [N, *shape], no checks.

        The caller promises float32-compatible values already in range (uint8 is *not* scaled).
        A float32 C-contiguous [N, *shape] array is returned as is (no call into numpy).
        """
        if (type(x) is _NDARRAY and x.dtype is _FLOAT32 and x.flags.c_contiguous
                and x.shape[1:] == self.shape):
            return x
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, *self.shape)
