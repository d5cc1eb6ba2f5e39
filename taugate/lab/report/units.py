"""Which units each mode uses: firing-rate matrices and the Jaccard overlap of active sets.

A unit is *active* for a mode when the exporter kept it (``kept_indices``): it fired on at
least one of the mode's calibration images and has a non-zero outgoing weight. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from taugate.summaries import jaccard

ACTIVE_DEFINITION = ("active = kept in the mode's compacted subnetwork (fires on at least one "
                     "calibration image of the mode and has a non-zero outgoing weight)")


def n_layers(modes: dict[str, dict]) -> int:
    return min(len(m["units_total"]) for m in modes.values())


def firing_matrix(modes: dict[str, dict], layer: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rates, pruned)``: [mode, unit] test-set firing rates and the pruned-unit mask."""
    rates = np.array([m["test_firing_rates"][layer] for m in modes.values()], dtype=float)
    pruned = np.ones(rates.shape, dtype=bool)
    for i, m in enumerate(modes.values()):
        pruned[i, m["kept_indices"][layer]] = False
    return rates, pruned


def active_sets(modes: dict[str, dict], layer: int | None = None) -> dict[str, set]:
    """Each mode's kept units in ``layer`` (None: all hidden layers, as (layer, unit) pairs)."""
    layers = range(n_layers(modes)) if layer is None else [layer]
    return {name: {(i, j) for i in layers for j in m["kept_indices"][i]}
            for name, m in modes.items()}


def jaccard_matrix(modes: dict[str, dict], layer: int | None = None) -> np.ndarray:
    """[mode, mode] Jaccard overlap of the active sets (see :data:`ACTIVE_DEFINITION`)."""
    sets = list(active_sets(modes, layer).values())
    return np.array([[jaccard(a, b) for b in sets] for a in sets])


def kept_fraction(mode: dict) -> float:
    """Kept hidden units / all hidden units of one mode."""
    return sum(len(k) for k in mode["kept_indices"]) / max(sum(mode["units_total"]), 1)
