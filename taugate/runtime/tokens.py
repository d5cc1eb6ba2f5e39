"""Token inputs (Hugging Face text models): token ids and an attention mask -> int64
``[N, 2, L]``, the one tensor a tokens bundle's graphs take (docs/bundle-format.md).

Accepted: a dict ``{"input_ids": ids, "attention_mask": mask}`` (mask optional: all ones),
each ``[N, L]`` or one sample ``[L]``; or the packed ``[N, 2, L]`` / ``[2, L]`` array. Any
integer dtype (bool too for the mask) is converted to int64. Refused with :class:`InputError`,
naming what was received and what is accepted: floats, another length, an empty batch, ids
outside ``[0, vocab)`` (when the bundle records ``vocab``) and a mask other than 0/1.
"""

from __future__ import annotations

import numpy as np

from taugate.bundle.errors import InputError

_INT64 = np.dtype(np.int64)
IDS, MASK = "input_ids", "attention_mask"


class TokenInputChecker:
    """Validates and packs token inputs for a ``{"kind": "tokens"}`` input spec."""

    def __init__(self, length: int, vocab: int | None = None):
        self.length, self.vocab = int(length), vocab
        self.shape = (2, self.length)
        self.features = 2 * self.length
        ids = f"ids in [0, {vocab})" if vocab else "ids >= 0"
        self.accepted = (f"{{'{IDS}': [N, {length}], '{MASK}': [N, {length}] (optional)}} or "
                         f"int64 [N, 2, {length}] (ids, mask); integers, {ids}, mask 0/1")

    @classmethod
    def from_spec(cls, spec) -> TokenInputChecker:
        return cls(spec.layout["length"], spec.layout.get("vocab"))

    def _error(self, problem: str, got) -> InputError:
        return InputError(f"input: {problem} (received {got}); accepted: {self.accepted}")

    def _array(self, value, what: str) -> np.ndarray:
        a = np.asarray(value)
        if a.dtype.kind not in "iub":
            raise self._error(f"{what} must be integers", f"{what} dtype {a.dtype}")
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != self.length:
            raise self._error(f"{what} must be [N, {self.length}]", f"{what} shape {a.shape}")
        return a.astype(np.int64, copy=False)

    def coerce(self, x) -> np.ndarray:
        """Validated int64 ``[N, 2, L]``, C-contiguous."""
        if isinstance(x, dict):
            unknown = set(x) - {IDS, MASK}
            if IDS not in x or unknown:
                raise self._error(f"expected the keys {IDS!r} and optionally {MASK!r}",
                                  f"keys {sorted(map(str, x))}")
            ids = self._array(x[IDS], IDS)
            mask = self._array(x[MASK], MASK) if MASK in x else np.ones_like(ids)
            if mask.shape != ids.shape:
                raise self._error("ids and mask must have the same shape",
                                  f"{ids.shape} and {mask.shape}")
            packed = np.stack([ids, mask], axis=1)
        else:
            packed = np.asarray(x)
            if packed.dtype.kind not in "iu":
                raise self._error("token inputs must be integers", f"dtype {packed.dtype}")
            if packed.shape == self.shape:
                packed = packed[None]
            if packed.ndim != 3 or packed.shape[1:] != self.shape:
                raise self._error("unsupported shape", f"shape {packed.shape}")
        if packed.shape[0] == 0:
            raise self._error("empty batch", f"shape {packed.shape}")
        packed = np.ascontiguousarray(packed, dtype=_INT64)
        ids, mask = packed[:, 0], packed[:, 1]
        if ids.min() < 0 or (self.vocab and ids.max() >= self.vocab):
            raise self._error(f"token ids must lie in [0, {self.vocab or 'vocab'})",
                              f"min {int(ids.min())}, max {int(ids.max())}")
        if mask.min() < 0 or mask.max() > 1:
            raise self._error("the attention mask must be 0 or 1",
                              f"min {int(mask.min())}, max {int(mask.max())}")
        return packed

    def reshape_only(self, x) -> np.ndarray:
        """The ``validate=False`` path: packed int64 ``[N, 2, L]``, no value checks."""
        if isinstance(x, dict):
            return self.coerce(x)
        return np.ascontiguousarray(x, dtype=_INT64).reshape(-1, *self.shape)
