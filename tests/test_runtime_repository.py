"""ModeRuntime.load_mode / unload_mode / repository_index: a mode added to the bundle on disk
goes into service without reopening, a bad one is refused and changes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import build_tiny_bundle

from taugate.bundle.errors import (
    BundleError,
    BundleIntegrityError,
    RuntimeConfigError,
    UnknownModeError,
)
from taugate.runtime import ModeRuntime

X = np.random.default_rng(3).random((3, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A three-mode bundle; the served copies start without rot90."""
    return build_tiny_bundle(tmp_path_factory.mktemp("full") / "b", ("rot0", "rot45", "rot90"))


def served_copy(full, tmp_path, drop=("rot90",)):
    """A copy of ``full`` whose manifest lacks ``drop`` (its files stay: as after an export
    that has not been merged yet), and a function that writes the full manifest back."""
    path = tmp_path / "served"
    shutil.copytree(full, path)
    text = (full / "manifest.json").read_text()
    manifest = json.loads(text)
    for m in drop:
        del manifest["modes"][m]
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path, lambda: (path / "manifest.json").write_text(text)


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_load_brings_a_new_mode_into_service(full, tmp_path, lazy):
    path, publish = served_copy(full, tmp_path)
    rt = ModeRuntime.open(path, lazy=lazy)
    expected = ModeRuntime.open(full).run("rot90", X)
    with pytest.raises(UnknownModeError):
        rt.run("rot90", X)
    assert rt.repository_index()[-1]["name"] == "rot45"
    publish()
    index = {e["name"]: e for e in rt.repository_index()}
    assert index["rot90"] == {"name": "rot90", "state": "UNAVAILABLE",
                              "reason": "in the bundle on disk, not loaded"}
    before = rt.run("rot0", X)
    assert rt.load_mode("rot90") == "loaded"
    np.testing.assert_array_equal(rt.run("rot90", X), expected)
    np.testing.assert_array_equal(rt.run("rot0", X), before)
    assert rt.modes == ["rot0", "rot45", "rot90"] and rt.unavailable() == {}
    assert rt.load_mode("rot90") == "unchanged"
    assert {e["state"] for e in rt.repository_index()} == {"READY"}


def test_unload_then_load_again(tiny_bundle):
    rt = ModeRuntime.open(tiny_bundle)
    rt.unload_mode("rot45")
    assert rt.modes == ["rot0"] and "rot45" not in rt.loaded_modes
    with pytest.raises(UnknownModeError):
        rt.run("rot45", X)
    index = {e["name"]: e for e in rt.repository_index()}
    assert index["rot45"] == {"name": "rot45", "state": "UNAVAILABLE", "reason": "unloaded"}
    with pytest.raises(UnknownModeError, match="rot45"):
        rt.unload_mode("rot45")
    assert rt.load_mode("rot45") == "loaded"
    rt.run("rot45", X)


@pytest.mark.parametrize("call", ["load_mode", "unload_mode"])
def test_dense_stays(tiny_bundle, call):
    rt = ModeRuntime.open(tiny_bundle)
    with pytest.raises(RuntimeConfigError, match="only modes"):
        getattr(rt, call)("dense")


def test_unknown_mode_on_disk_is_refused(tiny_bundle):
    rt = ModeRuntime.open(tiny_bundle)
    with pytest.raises(UnknownModeError, match="'nope' is not in the bundle on disk"):
        rt.load_mode("nope")


def _corrupt(path, file):
    data = bytearray((path / file).read_bytes())
    data[-1] ^= 1
    (path / file).write_bytes(bytes(data))


def test_a_bad_mode_is_refused_and_changes_nothing(full, tmp_path):
    path, publish = served_copy(full, tmp_path)
    rt = ModeRuntime.open(path)
    publish()
    _corrupt(path, json.loads((full / "manifest.json").read_text())["modes"]["rot90"]["file"])
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        rt.load_mode("rot90")
    assert rt.modes == ["rot0", "rot45"] and rt.unavailable() == {}
    assert sorted(rt.loaded_modes) == ["dense", "rot0", "rot45"]
    rt.run("rot0", X)


def test_another_bundle_on_disk_is_refused(full, tmp_path):
    path, _ = served_copy(full, tmp_path)
    rt = ModeRuntime.open(path)
    manifest = json.loads((full / "manifest.json").read_text())
    manifest["input"]["name"] = "other"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="another input"):
        rt.load_mode("rot90")
    (path / "manifest.json").write_text("{")
    with pytest.raises(BundleError):
        rt.load_mode("rot90")
    assert all(e["state"] == "READY" for e in rt.repository_index())


def test_resident_bytes_follow_the_sessions(tiny_bundle):
    rt = ModeRuntime.open(tiny_bundle)
    sizes = rt.resident_bytes()
    assert set(sizes) == {"dense", "rot0", "rot45"} and min(sizes.values()) > 0
    rt.unload_mode("rot0")
    assert "rot0" not in rt.resident_bytes()
