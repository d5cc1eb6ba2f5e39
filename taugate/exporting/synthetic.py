"""Seeded random hardened MLPs and bundles: structurally real, numerically meaningless.

Tests and the benchmark smoke run need a valid bundle in milliseconds, without torch or MNIST.
Everything here goes through the real exporter (:func:`taugate.exporting.writer.write_bundle`), so
the bundle passes every runtime check; only the weights are random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taugate.exporting.prune import compact, firing_rates, keep_masks, kept_indices
from taugate.exporting.writer import ModeExport, write_bundle
from taugate.spec import HardenedLayer, HardenedModel


def random_hardened(seed: int, widths=(32, 16), n_in=784, n_out=10, thresholds=True) -> HardenedModel:
    """A seeded random hardened MLP; hidden thresholds are drawn in [0, 0.5) when asked."""
    rng = np.random.default_rng(seed)
    dims = (n_in, *widths, n_out)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(b)).astype(np.float32)
        t = None
        if i < len(widths):
            t = (rng.random(b) * 0.5).astype(np.float32) if thresholds else np.zeros(b, np.float32)
        layers.append(HardenedLayer(w, bias, t))
    return HardenedModel(tuple(layers))


def random_inputs(seed: int, n: int, n_in: int = 784) -> np.ndarray:
    """``n`` seeded random rows of pixels in [0, 1] (float32 [n, n_in])."""
    return np.random.default_rng(seed).random((n, n_in), dtype=np.float32)


def _pruned_export(model: HardenedModel, name: str, seed: int, n: int) -> ModeExport:
    """Prune ``model`` on a random "calibration" batch and record the facts a trained export
    records (firing rates on a random "test" batch, pruned units included)."""
    cal, test = random_inputs(seed, n, model.layers[0].in_features), random_inputs(seed + 1, n)
    masks = keep_masks(model, firing_rates(model, cal))
    small = compact(model, masks)
    return ModeExport(
        model=small, method="taugate", angle=_angle(name), units_total=model.widths,
        kept_indices=kept_indices(masks), calibration_accuracy=0.5, test_accuracy=0.5,
        extra={"data_mode": name, "unpruned_test_accuracy": 0.5,
               "test_firing_rates": [np.round(r, 5).tolist() for r in firing_rates(model, test)]},
    )


def _angle(name: str) -> float:
    try:
        return float(name[3:]) if name.startswith("rot") else 0.0
    except ValueError:
        return 0.0


def build_random_bundle(path: str | Path, modes=("rot0", "rot45"), seed: int = 0,
                        widths=(32, 16), pruned: bool = False, n_examples: int = 256,
                        overwrite: bool = False, int8: bool = False) -> Path:
    """A valid bundle with random weights: mode i uses seed+1+i; even-indexed modes have plain
    ReLUs, odd-indexed ones thresholds.

    pruned: False keeps every unit (the test fixture); True prunes the units that never fire on
        ``n_examples`` random inputs and records ``test_firing_rates`` like a trained export,
        so the benchmark smoke run and the report see realistic manifests.
    int8: also write dynamic int8 variants of every mode and the dense model; their
        ``test_accuracy`` is their agreement with the fp32 graph on random inputs.
    """
    dense = random_hardened(seed, widths=widths, thresholds=False)
    exports = {}
    for i, name in enumerate(modes):
        m = random_hardened(seed + 1 + i, widths=widths, thresholds=(i % 2 == 1))
        if pruned:
            exports[name] = _pruned_export(m, name, seed + 100 + 2 * i, n_examples)
        else:
            exports[name] = ModeExport(
                model=m, method="taugate", angle=_angle(name), units_total=m.widths,
                kept_indices=[list(range(w)) for w in m.widths],
                calibration_accuracy=0.5, test_accuracy=0.5,
            )
    dense_variants = {}
    if int8:
        dense_variants = _int8_variants("dense", dense, modes, seed, n_examples)
        for name, e in exports.items():
            e.variants = {k: v for k, v in _int8_variants(name, e.model, [name], seed,
                                                          n_examples).items()}
    # as the training pipeline writes it: the dense model's accuracy on each mode's test set
    return write_bundle(path, dense, exports,
                        dense_extra={"test_accuracy": {name: 0.5 for name in modes}},
                        overwrite=overwrite, dense_variants=dense_variants)


def _int8_variants(name: str, model: HardenedModel, modes, seed: int, n: int) -> dict:
    from taugate.exporting.variants import int8_variant
    from taugate.exporting.writer import graph_bytes

    x = random_inputs(seed + 7, n, model.layers[0].in_features)
    tests = {m: (x, model.forward(x).argmax(1)) for m in modes}
    return {"int8": int8_variant(name, graph_bytes(model, name), tests, 1.0,
                                 per_mode=name == "dense")}
