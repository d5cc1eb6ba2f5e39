"""Seeded random hardened MLPs and bundles: structurally real, numerically meaningless.

Tests and the benchmark smoke run need a valid bundle in milliseconds, without torch or MNIST.
Everything here goes through the one writer (:func:`taugate.exporting.writer.write_bundle_v2`)
with graphs of the numpy chain builder (exporting/graph.py), so the bundle passes every runtime
check; only the weights are random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taugate.bundle.names import DENSE, check_mode_name
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.graph import INPUT_NAME, OUTPUT_NAME, build_graph
from taugate.exporting.prune import compact, firing_rates, keep_masks, kept_indices
from taugate.exporting.weightless import GraphExport
from taugate.exporting.writer import BundleMode, with_metadata, write_bundle_v2
from taugate.spec import HardenedLayer, HardenedModel


def random_hardened(seed: int, widths=(32, 16), n_in=784, n_out=10, thresholds=True,
                    zero_every: int | None = None) -> HardenedModel:
    """A seeded random hardened MLP; hidden thresholds are drawn in [0, 0.5) when asked, and
    every ``zero_every``-th of them (from the first) set to exactly 0: plain ReLU units."""
    rng = np.random.default_rng(seed)
    dims = (n_in, *widths, n_out)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(b)).astype(np.float32)
        t = None
        if i < len(widths):
            t = (rng.random(b) * 0.5).astype(np.float32) if thresholds else np.zeros(b, np.float32)
            if zero_every:
                t[::zero_every] = 0.0
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
    return write_chain_bundle(path, dense, exports,
                        dense_extra={"test_accuracy": {name: 0.5 for name in modes}},
                        overwrite=overwrite, dense_variants=dense_variants)


def _int8_variants(name: str, model: HardenedModel, modes, seed: int, n: int) -> dict:
    from taugate.exporting.variants import int8_variant

    x = random_inputs(seed + 7, n, model.layers[0].in_features)
    tests = {m: (x, model.forward(x).argmax(1)) for m in modes}
    return {"int8": int8_variant(name, graph_bytes(model, name), tests, 1.0,
                                 per_mode=name == "dense")}


@dataclass
class ModeExport:
    """One mode's compacted chain MLP and the facts the manifest records about it."""

    model: HardenedModel  # compacted
    method: str
    angle: float | None  # format 1's required fact; now one of ``facts`` (None: not a rotation)
    units_total: list[int]
    kept_indices: list[list[int]]
    calibration_accuracy: float
    test_accuracy: float
    extra: dict = field(default_factory=dict)  # more manifest facts (e.g. pruning report)
    facts: dict | None = None  # free-form facts (default: {"angle": angle} when given)
    variants: dict = field(default_factory=dict)  # precision -> export.variants.Variant


def graph_bytes(model: HardenedModel, name: str) -> bytes:
    """The serialized fp32 graph ``write_chain_bundle`` writes for ``name`` (the reference that
    precision variants are quantized from and checked against)."""
    return with_metadata(build_graph(model, name), name).SerializeToString()


def mlp_input_spec(n_in: int) -> InputSpec:
    """The chain MLP's input: flat pixels in [0, 1]; a 28x28 image layout when n_in == 784."""
    if n_in == 784:
        return InputSpec.image(1, 28, 28, name=INPUT_NAME)
    return InputSpec.plain((n_in,), name=INPUT_NAME, range=(0.0, 1.0))


def classes_output_spec(n_out: int, labels=None) -> OutputSpec:
    return OutputSpec.logits(n_out, labels if labels is not None else [str(i) for i in range(n_out)],
                             name=OUTPUT_NAME)


def _mode_entry(m: ModeExport, dense_acc) -> dict:
    facts = dict(m.facts) if m.facts is not None else (
        {"angle": m.angle} if m.angle is not None else {})
    entry = {"method": m.method, "facts": facts, "units_kept": m.model.widths,
             "units_total": list(m.units_total), "kept_indices": m.kept_indices,
             "macs": m.model.macs, "calibration_accuracy": m.calibration_accuracy,
             "test_accuracy": m.test_accuracy, "precision": "fp32"}
    data_mode = m.extra.get("data_mode")
    if isinstance(dense_acc, dict) and data_mode in dense_acc:
        entry["dense_test_accuracy"] = dense_acc[data_mode]
    return {**entry, **m.extra}


def write_chain_bundle(out: str | Path, dense: HardenedModel, modes: dict[str, ModeExport],
                 dense_extra: dict | None = None, overwrite: bool = False,
                 dense_variants: dict | None = None) -> Path:
    """Write a chain-MLP bundle (format 2, self-contained numpy-built graphs) atomically.

    Modes' ``variants`` (and ``dense_variants``: precision -> Variant) are written beside their
    fp32 graphs as ``<file stem>.<precision>.onnx`` and recorded under the entry's ``variants``
    key (docs/bundle-v2.md section 3)."""
    for name in modes:
        check_mode_name(name)  # before any graph is built: the one rule (taugate/bundle/names.py)
    dense_extra = dict(dense_extra or {})
    exports = {name: BundleMode(GraphExport(build_graph(m.model, name)),
                                _mode_entry(m, dense_extra.get("test_accuracy")), m.variants)
               for name, m in modes.items()}
    n_in, n_out = dense.layers[0].in_features, dense.layers[-1].out_features
    return write_bundle_v2(
        out, family="mlp", input_spec=mlp_input_spec(n_in), output_spec=classes_output_spec(n_out),
        dense=GraphExport(build_graph(dense, DENSE)),
        dense_entry={"macs": dense.macs, "units": dense.widths, **dense_extra},
        modes=exports, overwrite=overwrite, dense_variants=dense_variants)
