"""A materialize step's ``lowrank`` part: add ``U @ V`` to the rows a step took (docs/bundle-v2.md,
section 4), so a mode with a low-rank first-layer correction stores its factors (kilobytes)
instead of the merged weight (a kept-rows x inputs matrix).

``{"u": name, "v": name, "pool": k}``: U ``[rows, r]`` and V ``[r, cells]`` are float32 tensors of
the mode file. ``pool`` 1: V has one column per input. ``pool`` k > 1: the input is a flattened
square ``side x side`` image and V has one column per ``k x k`` patch (``(side/k)^2`` cells); each
cell's weight is spread over its patch's pixels divided by ``k^2`` (the correction reads the
average-pooled input: training/methods/lora.py's ``PooledCorrection``).

The sum is taken one rank at a time, ``W += U[:, i] * V[i]`` in float32, so every row of the
result depends on that row of W and U alone: taking rows before or after merging gives the same
bits, which is what lets the exporter compare the rebuilt tensor with the standalone graph's bit
for bit. numpy only (the runtime never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.fields import fail, get_field, is_int
from taugate.bundle.schema import MaterializeStep

MAX_RANK = 256  # bounds the work a manifest can ask for: at most this many passes over W
MAX_POOL = 64
_KEYS = {"u", "v", "pool"}


@dataclass(frozen=True)
class LowRank:
    """The factors' tensor names in the mode file and the pooling of V's columns."""

    u: str
    v: str
    pool: int = 1

    def to_json(self) -> dict:
        return {"u": self.u, "v": self.v, "pool": self.pool}


@dataclass(frozen=True)
class LowRankStep(MaterializeStep):
    """A :class:`MaterializeStep` whose taken rows get ``U @ V`` added before any ``scale``."""

    __slots__ = ("lowrank",)
    lowrank: LowRank


def parse_lowrank(d, where: str) -> LowRank:
    """The manifest's ``lowrank`` object, checked (BundleFormatError naming what was received)."""
    where = f"{where}.lowrank"
    if not isinstance(d, dict) or set(d) != _KEYS:
        raise fail(where, f"an object with exactly the keys {sorted(_KEYS)}", d)
    u = get_field(d, "u", where, str, "a tensor name in the mode file")
    v = get_field(d, "v", where, str, "a tensor name in the mode file")
    pool = d["pool"]
    if not is_int(pool, 1) or pool > MAX_POOL:
        raise fail(f"{where}.pool", f"an integer in [1, {MAX_POOL}]", pool)
    return LowRank(u, v, pool)


def with_lowrank(step: MaterializeStep, lowrank: LowRank) -> LowRankStep:
    """``step`` with a ``lowrank`` part."""
    return LowRankStep(*(getattr(step, k) for k in MaterializeStep.__slots__), lowrank)


def expand(v: np.ndarray, pool: int, columns: int, where: str) -> np.ndarray:
    """V ``[r, cells]`` on the input grid: ``[r, columns]`` (each cell over its ``pool x pool``
    patch, divided by ``pool^2``); BundleIntegrityError when the shapes do not fit."""
    r, cells = v.shape
    if pool == 1:
        if cells != columns:
            raise BundleIntegrityError(f"{where}: lowrank: V needs {columns} columns (one per "
                                       f"input), got {cells}")
        return v
    c = int(round(cells ** 0.5))
    if c * c != cells or (c * pool) ** 2 != columns:
        raise BundleIntegrityError(
            f"{where}: lowrank: pool {pool} over {columns} inputs needs V with "
            f"(side/{pool})^2 columns of a square side x side image, got {cells}")
    grid = v.reshape(r, c, 1, c, 1)
    full = np.broadcast_to(grid, (r, c, pool, c, pool)).reshape(r, columns)
    return full / np.asarray(pool * pool, v.dtype)


def merge(w: np.ndarray, u: np.ndarray, vx: np.ndarray) -> np.ndarray:
    """``w + u @ vx`` one rank at a time (row by row the same bits whatever rows ``w`` has)."""
    out = np.array(w, copy=True)
    for i in range(u.shape[1]):
        out += u[:, i:i + 1] * vx[i:i + 1, :]
    return out


def apply_lowrank(step, arr: np.ndarray, mode: dict, where: str) -> np.ndarray:
    """``arr`` plus the step's ``U @ V`` (``arr`` itself for a step without one)."""
    lr = getattr(step, "lowrank", None)
    if lr is None:
        return arr
    u, v = mode.get(lr.u), mode.get(lr.v)
    if u is None or v is None:
        missing = [n for n, t in ((lr.u, u), (lr.v, v)) if t is None]
        raise BundleIntegrityError(f"{where}: lowrank: tensors {missing} are not in the file")
    if arr.ndim != 2:
        raise BundleIntegrityError(f"{where}: lowrank: adds to a 2-D weight, got shape "
                                   f"{arr.shape}")
    rows, columns = arr.shape
    ok = (u.ndim == 2 and v.ndim == 2 and u.shape[0] == rows and u.shape[1] == v.shape[0]
          and u.dtype == arr.dtype and v.dtype == arr.dtype)
    if not ok:
        raise BundleIntegrityError(
            f"{where}: lowrank: expected {arr.dtype} U [{rows}, r] and V [r, cells], got U "
            f"{u.dtype} {list(u.shape)} and V {v.dtype} {list(v.shape)}")
    rank = u.shape[1]
    if not 1 <= rank <= min(MAX_RANK, v.shape[1]):
        raise BundleIntegrityError(f"{where}: lowrank: rank must lie in [1, "
                                   f"{min(MAX_RANK, v.shape[1])}] (V's columns, at most "
                                   f"{MAX_RANK}), got {rank}")
    return merge(arr, u, expand(v, lr.pool, columns, where))
