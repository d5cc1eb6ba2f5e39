"""What an opened manifest of many shared-backbone modes keeps per mode (issue 19.3): the Python
objects a lazy open of 1,000 modes holds are most of what stays resident before any session, so
they are counted here (tracemalloc: the same on any machine and at any load), on a manifest of
synthetic modes shaped as ``benchmarks/shared_backbone.py`` exports them."""

from __future__ import annotations

import gc
import json
import tracemalloc

import numpy as np
import pytest

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.files import resolve_file
from taugate.bundle.manifest import load_manifest
from taugate.bundle.safe_json import loads_strict

N_MODES = 300
# what an opened manifest keeps, over what json.loads of the same text keeps (object sizes vary
# with the Python version, their ratio less): 0.39 now, 0.52 when every entry held its own steps
MAX_KEPT_OVER_PLAIN_JSON = 0.46


def _step(name, take, scale, shape):
    step = {"name": name, "source": "backbone", "tensor": name}
    if take:
        step["take"] = take
    if scale:
        step["scale"] = scale
    return {**step, "dtype": "float32", "shape": shape}


def _entry(i: int, rng) -> dict:
    k0, k2 = (int(k) for k in rng.binomial(1024, 0.27, 2))
    sha = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(2)]
    steps = [_step("0.weight", [[0, "keep.0"]], [0, "rscale.0"], [k0, 784]),
             _step("0.bias", [[0, "keep.0"]], [0, "rscale.0"], [k0]),
             _step("2.weight", [[0, "keep.2"], [1, "keep.0"]],
                   [[1, "cscale.0"], [0, "rscale.2"]], [k2, k0]),
             _step("2.bias", [[0, "keep.2"]], [0, "rscale.2"], [k2]),
             _step("4.weight", [[1, "keep.2"]], [1, "cscale.2"], [10, k2]),
             _step("4.bias", None, None, [10])]
    return {"file": f"modes/m{i:04d}.onnx", "sha256": sha[0],
            "weights": {"file": f"modes/m{i:04d}.safetensors", "sha256": sha[1]},
            "materialize": steps, "method": "taugate", "facts": {"synthetic": i},
            "data_mode": f"m{i:04d}", "units_kept": [k0, k2], "units_total": [1024, 1024],
            "macs": 784 * k0 + k0 * k2 + 10 * k2, "dense_test_accuracy": 0.0,
            "calibration_accuracy": 0.0, "test_accuracy": 0.0, "precision": "fp32"}


def _manifest(n: int) -> dict:
    rng = np.random.default_rng(0)
    dense = {"file": "dense.onnx", "sha256": "0" * 64, "macs": 1861632,
             "materialize": [_step(f"{k}.{p}", None, None, s) for k, p, s in
                             [(0, "weight", [1024, 784]), (0, "bias", [1024]),
                              (2, "weight", [1024, 1024]), (2, "bias", [1024]),
                              (4, "weight", [10, 1024]), (4, "bias", [10])]]}
    return {"format": "taugate-bundle", "format_version": 2, "created_by": "test",
            "family": "mlp",
            "input": {"name": "input", "dtype": "float32", "shape": ["batch", 784],
                      "range": [0.0, 1.0]},
            "output": {"name": "logits", "dtype": "float32", "shape": ["batch", 10],
                       "labels": [str(i) for i in range(10)]},
            "targets": ["0", "2"], "backbone": {"file": "backbone.safetensors", "sha256": "1" * 64},
            "dense": dense, "modes": {f"m{i:04d}": _entry(i, rng) for i in range(n)}}


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many_modes")
    (root / "manifest.json").write_text(json.dumps(_manifest(N_MODES)))
    return root


def _kept_bytes(make) -> int:
    """The bytes (tracemalloc) still allocated once ``make()``'s result is built."""
    make()  # code paths warmed: only what the result keeps is counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = make()  # noqa: F841 (alive while counted)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_an_opened_manifest_keeps_little_per_mode(many):
    text = (many / "manifest.json").read_text()
    kept = _kept_bytes(lambda: load_manifest(many))
    plain = _kept_bytes(lambda: json.loads(text))
    assert kept / plain < MAX_KEPT_OVER_PLAIN_JSON, \
        f"{kept / N_MODES:.0f} bytes per mode, {kept / plain:.2f} of the plain JSON"


def test_the_manifest_reads_back_as_written(many):
    written = json.loads((many / "manifest.json").read_text())
    root, manifest = load_manifest(many)
    assert manifest.raw == written
    assert json.dumps(manifest.raw) == json.dumps(written)  # key order too
    m0, m1 = (manifest.raw["modes"][k] for k in ("m0000", "m0001"))
    assert m0["materialize"][-1] is m1["materialize"][-1]  # equal steps are one object
    assert manifest.modes["m0001"].facts is m1
    assert manifest.modes["m0001"].mode_facts == {"synthetic": 1}


def test_equal_short_lists_are_one_object_when_shared():
    text = ('{"a": [{"take": [[0, "keep.0"]], "shape": [3, 4]}, '
            '{"take": [[0, "keep.0"]], "shape": [3, 4]}], '
            '"b": [[1], [1.0], [true], [1], ["1"], [0.5, 2], [0.5, 2]]}')
    data = loads_strict(text, share=True)
    assert data == json.loads(text)
    a0, a1 = data["a"]
    assert a0["take"] is a1["take"] and a0["shape"] is a1["shape"]
    one, one_f, one_t, one_again, one_s, f0, f1 = data["b"]
    assert one is one_again  # equal lists of ints
    # equal under == but not the same JSON, or holding floats: never merged
    assert one is not one_f and one is not one_t and one is not one_s and f0 is not f1
    plain = loads_strict(text)
    assert plain["a"][0]["take"] is not plain["a"][1]["take"]


def test_equal_objects_are_one_object_only_when_the_same_json():
    text = ('[{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, {"b": "x", "a": 1}, {"a": 1.0, "b": "x"},'
            ' {"a": true, "b": "x"}, {"a": 1, "b": "x", "c": null}, {"a": 1, "b": "x", "c": null},'
            ' {"a": [1], "b": {"c": 2}}, {"a": [1], "b": {"c": 2}}, {"a": 0.5}, {"a": 0.5}]')
    data = loads_strict(text, share=True)
    assert data == json.loads(text)
    one, same, other_order, with_float, with_bool, n0, n1, deep0, deep1, f0, f1 = data
    assert one is same and n0 is n1 and deep0 is deep1
    assert list(other_order) == ["b", "a"] and other_order is not one  # key order is JSON
    assert with_float is not one and with_bool is not one and f0 is not f1  # floats: never
    plain = loads_strict(text)
    assert plain[0] is not plain[1]


@pytest.mark.parametrize("rel", ["/abs", "C:x", "c:/x", "\\\\server\\share\\x", "//server/share",
                                 "\\\\?\\C:\\x", "a/../b", "a\\..\\b", "..", "x:y", "a\0b",
                                 "\\x"])
def test_paths_refused_as_before(tmp_path, rel):
    """The string checks refuse what pathlib's did, with the same message."""
    from pathlib import PurePosixPath, PureWindowsPath

    class Entry:
        name, file = "m", rel

    absolute = PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() \
        or bool(PureWindowsPath(rel).drive)
    dotdot = ".." in PureWindowsPath(rel).parts
    expected = "absolute path" if absolute else "'..' is not allowed" if dotdot \
        else "without NUL bytes" if "\0" in rel else "missing from bundle"
    with pytest.raises(BundleIntegrityError, match=expected):
        resolve_file(tmp_path, Entry)
