"""Manifest schema validation (taugate.bundle.manifest): one table of refusals."""

from __future__ import annotations

import copy
import json

import pytest

from taugate.bundle.manifest import DENSE, SUPPORTED_FORMAT_VERSIONS, load_manifest, parse_manifest
from taugate.runtime import BundleError, BundleFormatError


@pytest.fixture(scope="module")
def raw(tiny_bundle):
    return json.loads((tiny_bundle / "manifest.json").read_text("utf-8"))


def test_parses_the_exporters_manifest(raw):
    m = parse_manifest(raw)
    assert m.format_version in SUPPORTED_FORMAT_VERSIONS
    assert list(m.modes) == ["rot0", "rot45"]
    assert (m.input.name, m.input.features, m.input.image_shape) == ("pixels", 784, (28, 28))
    assert (m.output.name, m.output.classes) == ("logits", 10)
    assert m.entry(DENSE) is m.dense and m.entry("rot45").mode_facts["angle"] == 45.0
    assert m.family == "mlp" and m.input.range == (0.0, 1.0) and m.input.uint8_pixels
    assert m.entry("nope") is None


def _set(path: str, value):
    def edit(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


_DELETE = object()

REFUSALS = [
    ("format", _set("format", "other"), "not a taugate bundle"),
    ("version", _set("format_version", 99), "supported: 1"),
    ("version-bool", _set("format_version", True), "supported: 1"),
    ("no-created-by", _set("created_by", _DELETE), "missing field 'created_by'"),
    ("input-dtype", _set("input.dtype", "float16"), "input.dtype"),
    ("input-shape", _set("input.shape", ["batch"]), "input.shape"),
    ("input-range", _set("input.range", [1, 0]), "input.range"),
    ("layout-size", _set("input.layout.height", 27), "input.layout"),
    ("layout-kind", _set("input.layout.kind", "audio"), "input.layout.kind"),
    ("no-family", _set("family", _DELETE), "missing field 'family'"),
    ("targets", _set("targets", [1]), "targets"),
    ("facts", _set("modes.rot0.facts", [1]), "modes.rot0.facts"),
    ("backbone-sha", _set("backbone", {"file": "b", "sha256": "x"}), "backbone.sha256"),
    ("materialize-without-weights",
     _set("modes.rot0.materialize", [{"name": "w", "source": "mode", "tensor": "w",
                                      "dtype": "float32", "shape": [1]}]), "source"),
    ("materialize-keys", _set("modes.rot0.materialize", [{"name": "w", "evil": 1}]), "keys"),
    ("labels", _set("output.labels", ["0"]), "output.labels"),
    ("dense-file", _set("dense.file", 3), "dense.file"),
    ("sha", _set("modes.rot0.sha256", "abc"), "modes.rot0.sha256"),
    ("macs", _set("modes.rot0.macs", -1), "modes.rot0.macs"),
    ("macs-bool", _set("modes.rot0.macs", True), "modes.rot0.macs"),
    ("units", _set("modes.rot0.units_kept", [99, 1]), "modes.rot0.units_kept"),
    ("accuracy", _set("modes.rot0.test_accuracy", "high"), "modes.rot0.test_accuracy"),
    ("no-modes", _set("modes", {}), "at least one mode"),
    ("mode-named-dense", lambda d: d["modes"].__setitem__("dense", d["modes"]["rot0"]),
     "not 'dense'"),
    ("version-float", _set("format_version", 1.0), "format_version 1.0 is not supported"),
]
# names the exporter refuses (taugate/bundle/names.py): the runtime refuses them too
BAD_NAMES = ["a/b", "..", ".", "a\0b", "a\nb", "zero\u200bwidth", "", " rot0", "x" * 65,
             "-lead", "r\u00f6t"]


def _add_mode(name):
    return lambda d: d["modes"].__setitem__(name, d["modes"]["rot0"])


REFUSALS += [(f"mode-name-{i}", _add_mode(name), "mode name") for i, name in enumerate(BAD_NAMES)]


def test_runtime_and_exporter_share_the_mode_name_rule(tmp_path):
    from taugate.bundle.names import mode_name_error
    from taugate.exporting.synthetic import build_random_bundle

    for name in BAD_NAMES:
        assert mode_name_error(name) is not None
        with pytest.raises(ValueError, match="mode name"):
            build_random_bundle(tmp_path / "b", modes=(name,))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("edit,needle", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refuses_invalid_manifests(raw, edit, needle):
    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(BundleFormatError) as info:
        parse_manifest(data)
    assert needle in str(info.value)


def test_refuses_non_object():
    with pytest.raises(BundleFormatError, match="JSON object"):
        parse_manifest([1, 2])


def test_load_errors(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", "utf-8")
    with pytest.raises(BundleFormatError, match="invalid JSON"):
        load_manifest(tmp_path)


def test_accepts_the_manifest_file_itself(tiny_bundle):
    root, m = load_manifest(tiny_bundle / "manifest.json")
    assert root == tiny_bundle and "rot0" in m.modes
