"""Build a weightless mode graph's initializers from the shared backbone (format 2).

Each :class:`~taugate.bundle.manifest.MaterializeStep` takes a tensor of the backbone (or of
the mode's own file), gathers kept indices along axes (``take``), multiplies by a vector along
one axis, or by several in order (``scale``) and adds a tensor (``add``), all in numpy; the runtime hands the results to
onnxruntime with ``SessionOptions.add_external_initializers`` (docs/bundle-v2.md, section 4).
An index tensor is a list of
integers (int16/int32/int64) or, as uint8, a packed bit mask over the axis (``np.packbits``,
big-endian bit order; its set bits are the kept indices, in order). Every index is range-checked and every result must have the dtype and shape the manifest
declares, or the mode is refused.
"""

from __future__ import annotations

import numpy as np

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.lowrank import apply_lowrank
from taugate.bundle.schema import scale_pairs

_INDEX_KINDS = "iu"  # signed / unsigned integer index tensors


def _tensor(tensors: dict, name: str, where: str, what: str) -> np.ndarray:
    arr = tensors.get(name)
    if arr is None:
        shown = ", ".join(sorted(tensors)[:10])
        raise BundleIntegrityError(f"{where}: {what} {name!r} is not in the file (it has: "
                                   f"{shown}{', ...' if len(tensors) > 10 else ''})")
    return arr


def _take(arr: np.ndarray, axis: int, idx: np.ndarray, where: str) -> np.ndarray:
    if idx.ndim != 1 or idx.dtype.kind not in _INDEX_KINDS:
        raise BundleIntegrityError(f"{where}: take: index tensor must be 1-D integers, got "
                                   f"{idx.dtype} {idx.shape}")
    if axis >= arr.ndim:
        raise BundleIntegrityError(f"{where}: take: axis {axis} out of range for a tensor of "
                                   f"shape {arr.shape}")
    n = arr.shape[axis]
    if idx.dtype == np.uint8:  # a packed bit mask over the axis (np.packbits, big-endian bits)
        if idx.shape != ((n + 7) // 8,):
            raise BundleIntegrityError(f"{where}: take: a uint8 bit mask over an axis of {n} "
                                       f"needs {(n + 7) // 8} bytes, got {idx.shape[0]}")
        idx = np.flatnonzero(np.unpackbits(idx, count=n))
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise BundleIntegrityError(f"{where}: take: indices must lie in [0, {n}) along axis "
                                   f"{axis}, got min {int(idx.min())}, max {int(idx.max())}")
    return np.take(arr, idx.astype(np.intp, copy=False), axis=axis)


def build_initializer(step, backbone: dict, mode: dict, where: str) -> np.ndarray:
    """The array ``step`` describes (C-contiguous), or :class:`BundleIntegrityError`."""
    where = f"{where}: initializer {step.name!r}"
    source = backbone if step.source == "backbone" else mode
    arr = _tensor(source, step.tensor, where, f"{step.source} tensor")
    owned = False  # arr is a fresh array of ours: scale and add write into it (no new buffer)
    for axis, index_name in step.take:
        arr = _take(arr, axis, _tensor(mode, index_name, where, "index tensor"), where)
        owned = True
    lowranked = apply_lowrank(step, arr, mode, where)  # after take, before scale (lowrank.py)
    owned = owned or lowranked is not arr  # a low-rank update is a fresh copy (lowrank.merge)
    arr = lowranked
    for axis, vec_name in scale_pairs(step.scale):  # in order: each rounds once, as written
        vec = _tensor(mode, vec_name, where, "scale vector")
        if axis >= arr.ndim or vec.shape != (arr.shape[axis],) or vec.dtype != arr.dtype:
            raise BundleIntegrityError(f"{where}: scale: expected a {arr.dtype} vector of "
                                       f"length arr.shape[{axis}] for shape {arr.shape}, got "
                                       f"{vec.dtype} {vec.shape}")
        shape = [1] * arr.ndim
        shape[axis] = -1
        if owned:
            np.multiply(arr, vec.reshape(shape), out=arr)
        else:
            arr, owned = arr * vec.reshape(shape), True
    if step.add is not None:
        extra = _tensor(mode, step.add, where, "add tensor")
        if extra.shape != arr.shape or extra.dtype != arr.dtype:
            raise BundleIntegrityError(f"{where}: add: expected {arr.dtype} {arr.shape}, got "
                                       f"{extra.dtype} {extra.shape}")
        if owned:
            np.add(arr, extra, out=arr)
        else:
            arr = arr + extra
    if str(arr.dtype) != step.dtype or tuple(arr.shape) != step.shape:
        raise BundleIntegrityError(f"{where}: built {arr.dtype} {list(arr.shape)}, the manifest "
                                   f"declares {step.dtype} {list(step.shape)}")
    # aligned + C-contiguous: onnxruntime wraps this buffer without a copy
    return np.require(arr, requirements=("C", "A"))


def build_initializers(steps, backbone: dict, mode: dict, where: str) -> dict:
    """name -> array for every step of a mode entry."""
    return {step.name: build_initializer(step, backbone, mode, where) for step in steps}
