"""Input validation and coercion: whatever an app hands us -> float32 [N, features], C-contiguous.

Accepted (for the MNIST bundles: features 784, image 28x28):

* float32 pixels in the manifest's range (``[0, 1]``), shaped ``[N, 784]``, ``[N, 28, 28]`` or
  ``[N, 1, 28, 28]``, or a single image ``[784]`` / ``[28, 28]``;
* float64 (cast to float32, same range);
* uint8, taken as 0-255 pixels and scaled by 1/255.

Refused with :class:`InputError` (naming the shape and dtype received and what is accepted):
any other dtype (ints, float16, bool, object), another shape, an empty batch, NaN/inf, and
floats outside the range -- in particular 0-255 *floats*, which would otherwise silently give
garbage: pass uint8 or divide by 255.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime.errors import InputError

_UNIT_MAX_BITS = 0x3F800000  # the bit pattern of float32 1.0, as a Python int
_NDARRAY = np.ndarray
_FLOAT32 = np.dtype(np.float32)
_FLOATS = (_FLOAT32, np.dtype(np.float64))
_UINT8 = np.dtype(np.uint8)
_UINT32 = np.dtype(np.uint32)


class InputSpecChecker:
    """Validates and coerces input batches for one model input (features, image shape, range)."""

    def __init__(self, features: int, image_shape: tuple[int, int] | None = None,
                 value_range: tuple[float, float] = (0.0, 1.0)):
        self.features = int(features)
        self.image_shape = tuple(image_shape) if image_shape else None
        self.low, self.high = float(value_range[0]), float(value_range[1])
        self._unit = (self.low, self.high) == (0.0, 1.0)
        shapes = [f"[N, {self.features}]"]
        if self.image_shape:
            h, w = self.image_shape
            shapes += [f"[N, {h}, {w}]", f"[N, 1, {h}, {w}]"]
        single = f"[{self.features}]" + (f" or [{h}, {w}]" if self.image_shape else "")
        self.accepted = (f"float32/float64 values in [{self.low:g}, {self.high:g}] or uint8 0-255, "
                         f"shaped {', '.join(shapes)} (N >= 1) or a single image {single}")

    def _error(self, x: np.ndarray, problem: str) -> InputError:
        return InputError(f"input: {problem} (received shape {tuple(x.shape)}, dtype {x.dtype}); "
                          f"accepted: {self.accepted}")

    def _batch_view(self, x: np.ndarray) -> np.ndarray | None:
        """``x`` reshaped to [N, features] when its shape is accepted, else None."""
        f, shape = self.features, x.shape
        if x.ndim == 2 and shape[1] == f and shape != self.image_shape:
            return x
        if self.image_shape is not None:
            img = self.image_shape
            if shape == img:
                return x.reshape(1, f)
            if (x.ndim == 3 and shape[1:] == img) or (x.ndim == 4 and shape[1:] == (1, *img)):
                return x.reshape(shape[0], f)
        if x.ndim == 1 and shape[0] == f:
            return x.reshape(1, f)
        return None

    def coerce(self, x) -> np.ndarray:
        """Validated float32 [N, features] C-contiguous array (a view of ``x`` when possible)."""
        # The common case -- float32 [N, features], C-contiguous, in [0, 1] -- is decided with
        # as few Python-level operations as possible: it is the whole per-call cost of
        # validation at batch 1 (see docs/runtime.md, "Measured overhead").
        if type(x) is _NDARRAY and x.dtype is _FLOAT32 and x.flags.c_contiguous:
            shape = x.shape
            if len(shape) == 2 and shape[1] == self.features and shape[0]:
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
        if dtype not in _FLOATS and dtype != _UINT8:
            raise self._error(x, f"unsupported dtype {dtype}")
        batch = self._batch_view(x)
        if batch is None:
            raise self._error(x, "unsupported shape")
        if batch.shape[0] == 0:
            raise self._error(x, "empty batch")
        if dtype == _UINT8:
            # Every uint8 is a valid pixel; scaling lands in [0, 1] for the unit range.
            out = np.multiply(batch, np.float32(1.0 / 255.0), dtype=np.float32, order="C")
            return out if self._unit else self._check_range(out, x)
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
        if lo >= self.low and hi <= self.high:  # False for NaN as well
            return out
        if not np.isfinite(lo) or not np.isfinite(hi) or np.isnan(out).any():
            raise self._error(original, "values must be finite (found NaN or inf)")
        hint = "; for 0-255 pixels pass uint8 or divide by 255" if hi > 1.5 else ""
        raise self._error(original, f"values must lie in [{self.low:g}, {self.high:g}], got min "
                          f"{float(lo):g}, max {float(hi):g}{hint}")

    def reshape_only(self, x) -> np.ndarray:
        """The ``validate=False`` path: float32 C-contiguous [N, features], no checks.

        The caller promises float32-compatible values already in range (uint8 is *not* scaled).
        A float32 C-contiguous [N, features] array is returned as is (no call into numpy).
        """
        if type(x) is _NDARRAY and x.dtype is _FLOAT32 and x.flags.c_contiguous:
            shape = x.shape
            if len(shape) == 2 and shape[1] == self.features:
                return x
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.features)
