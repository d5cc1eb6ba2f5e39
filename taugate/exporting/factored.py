"""Low-rank overrides through export's folds: a mode's factored override (``GatedSpec.factors``,
a first-layer correction) must stay the exact merge of the exported backbone tensor and its
factors, so that a shared bundle can store the factors and the runtime rebuild the standalone
graph's weight bit for bit (taugate/bundle/lowrank.py).

A family's export fold (``for_export``: the MLP folds ``(x - mean) / std`` into its first layer)
changes the backbone tensor and the override alike. It is linear in the weight, so the factors
are folded by applying it to U; the merge of the folded backbone tensor and folded factors is
then checked against the folded override and replaces it. Where that check fails (a fold that is
not a row scaling), the factors are dropped and the mode stores its merged override as before.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from taugate.spec import GatedSpec, LowRankFactors
from taugate.training.corrections import merged

log = logging.getLogger(__name__)
RTOL, ATOL = 1e-4, 1e-6  # the folded merge vs the fold of torch's merge: float32 rounding only


def _folded(key: str, f: LowRankFactors, fold, state: dict, override: np.ndarray
            ) -> tuple[LowRankFactors, np.ndarray] | None:
    try:
        u = np.ascontiguousarray(fold({key: f.u})[key], np.float32)
    except (ValueError, RuntimeError, TypeError, IndexError):
        return None
    if u.shape != f.u.shape:
        return None
    out = LowRankFactors(u, f.v, f.pool)
    try:
        weight = merged(np.asarray(state[key], np.float32), out)
    except ValueError:  # BundleIntegrityError: the factors do not fit the tensor
        return None
    if weight.shape != override.shape or not np.allclose(weight, override, RTOL, ATOL):
        return None
    return out, weight


def fold_spec(spec: GatedSpec, fold, state: dict) -> GatedSpec:
    """``spec`` with ``fold`` applied to its overrides (and factors) against the exported
    backbone ``state``: every factored override is then exactly its factors' merge."""
    overrides = dict(fold(spec.overrides))
    factors = {}
    for key, f in spec.factors.items():
        if key not in overrides or key not in state:
            continue
        got = _folded(key, f, fold, state, np.asarray(overrides[key]))
        if got is None:
            log.info("%s: the export fold does not keep its low-rank form; the mode stores the "
                     "merged tensor", key)
            continue
        factors[key], overrides[key] = got
    return replace(spec, overrides=overrides, factors=factors)
