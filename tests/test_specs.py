"""One typed InputSpec / OutputSpec: validated on construction by the manifest reader's rules,
written as the manifest's objects, and carried through run.json to load_run."""

from __future__ import annotations

import json

import pytest

from taugate.bundle.manifest import parse_manifest
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.synthetic import classes_output_spec, mlp_input_spec
from taugate.training.sources.mnist import MNIST_INPUT, MNIST_LABELS


@pytest.mark.parametrize("spec", [
    InputSpec.image(1, 28, 28),
    InputSpec.image(3, 8, 8, flat=False, range=None, name="x"),
    InputSpec.plain((13,), name="features"),
    InputSpec.plain((2, 3, 4)),
])
def test_input_spec_round_trips(spec):
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_chain_builders_specs_are_the_typed_ones():
    assert mlp_input_spec(784) == MNIST_INPUT
    assert mlp_input_spec(13) == InputSpec.plain((13,), range=(0.0, 1.0), name="pixels")
    assert classes_output_spec(10) == OutputSpec.logits(10, MNIST_LABELS)


def test_the_writer_refuses_a_manifest_the_reader_would(tmp_path):
    """Validated on write as on read: a NaN accuracy (the reader's strict JSON refuses it)
    fails the export and leaves nothing behind."""
    from taugate.exporting.graph import build_graph
    from taugate.exporting.synthetic import random_hardened
    from taugate.exporting.weightless import GraphExport
    from taugate.exporting.writer import BundleMode, write_bundle_v2

    model = random_hardened(0, n_in=13, n_out=10)
    graph = GraphExport(build_graph(model, "m"))
    entry = {"method": "taugate", "facts": {}, "units_kept": model.widths,
             "units_total": model.widths, "macs": model.macs, "test_accuracy": float("nan")}
    with pytest.raises(ValueError, match="the runtime would refuse"):
        write_bundle_v2(tmp_path / "b", family="mlp", input_spec=mlp_input_spec(13),
                        output_spec=classes_output_spec(10), dense=graph,
                        dense_entry={"macs": model.macs}, modes={"m": BundleMode(graph, entry)})
    assert not (tmp_path / "b").exists()
    with pytest.raises(TypeError, match="input_spec: expected InputSpec"):
        write_bundle_v2(tmp_path / "c", family="mlp", input_spec=mlp_input_spec(13).to_dict(),
                        output_spec=classes_output_spec(10), dense=graph,
                        dense_entry={"macs": model.macs},
                        modes={"m": BundleMode(graph, {**entry, "test_accuracy": 0.5})})


def test_the_reader_parses_them_back():
    manifest = parse_manifest({
        "format": "taugate-bundle", "format_version": 2, "created_by": "t", "family": "mlp",
        "input": MNIST_INPUT.to_dict(), "output": OutputSpec.logits(10, MNIST_LABELS).to_dict(),
        "dense": {"file": "dense.onnx", "sha256": "0" * 64, "macs": 1},
        "modes": {"a": {"file": "a.onnx", "sha256": "0" * 64, "macs": 1, "units_kept": [1],
                        "units_total": [2]}}})
    assert manifest.input == MNIST_INPUT and manifest.input.uint8_pixels
    assert manifest.output == OutputSpec.logits(10, MNIST_LABELS)


@pytest.mark.parametrize("make, fragment", [
    (lambda: InputSpec.plain((0,)), "input.shape"),
    (lambda: InputSpec("x", "float16", (4,), None), "'float32'"),
    (lambda: InputSpec("x", "float32", (4,), (1.0, 0.0)), "low < high"),
    (lambda: InputSpec("x", "float32", (784,), None,
                       {"kind": "image", "channels": 1, "height": 28, "width": 27}),
     "channels*height*width == 784"),
    (lambda: InputSpec("x", "float32", (4,), None, {"kind": "audio"}), "input.layout.kind"),
    (lambda: OutputSpec.logits(3, ["a", "b"]), "3 strings"),
    (lambda: OutputSpec("y", "float32", 0), "output.shape"),
])
def test_invalid_specs_are_refused_on_construction(make, fragment):
    with pytest.raises(ValueError, match="spec: ") as err:
        make()
    assert fragment in str(err.value) and "manifest.json" not in str(err.value)


def test_load_run_refuses_a_bad_input_spec(tmp_path):
    from taugate.training.loaded import load_run

    (tmp_path / "run.json").write_text(json.dumps({
        "input": {"name": "x", "dtype": "float32", "shape": ["batch", -1]},
        "output": OutputSpec.logits(2).to_dict(), "source": {"kind": "python"}}))
    with pytest.raises(ValueError, match="run.json: input spec: input.shape"):
        load_run(tmp_path)
