"""A served file is "changed since open" when its bytes changed, not when its inode did: a bundle
directory replaced by a byte-identical copy keeps every mode ready (runtime, /health, OIP ready)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from taugate.bundle import files as files_mod
from taugate.runtime import ModeRuntime

X = np.random.default_rng(3).random((2, 784), dtype=np.float32)


def _replace(root, edit=None):
    """Swap ``root`` for a fresh copy (new inodes), as a deploy by rename does."""
    staged = root.parent / "staged"
    shutil.copytree(root, staged)
    if edit:
        edit(staged)
    previous = root.parent / "previous"
    shutil.rmtree(previous, ignore_errors=True)
    os.rename(root, previous)
    os.rename(staged, root)


def _count_hashes(monkeypatch) -> list:
    calls = []
    real = files_mod._content_differs

    def counting(root, entry):
        calls.append(entry.name)
        return real(root, entry)

    monkeypatch.setattr(files_mod, "_content_differs", counting)
    return calls


@pytest.fixture()
def root(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def test_byte_identical_replacement_stays_ready(root, monkeypatch):
    rt = ModeRuntime.open(root)
    expected = rt.run("rot45", X)
    hashes = _count_hashes(monkeypatch)
    _replace(root)
    assert rt.unavailable() == {}
    assert sorted(hashes) == ["dense", "rot0", "rot45"]
    assert rt.unavailable() == {} and len(hashes) == 3  # stamped anew: not hashed again
    np.testing.assert_array_equal(rt.run("rot45", X), expected)


def _append(name):
    def edit(staged):
        with (staged / "modes" / name).open("ab") as f:
            f.write(b"\0")
    return edit


def test_changed_bytes_still_make_the_mode_unavailable(root, monkeypatch):
    rt = ModeRuntime.open(root)
    hashes = _count_hashes(monkeypatch)
    _replace(root, _append("rot45.onnx"))
    down = rt.unavailable()
    assert set(down) == {"rot45"} and "changed since open" in down["rot45"]
    assert "sha256 differs" in down["rot45"]
    assert rt.unavailable() == down and hashes.count("rot45") == 1  # hashed once per stat


def test_a_fifo_in_place_of_the_file_is_changed_not_a_hang(root):
    rt = ModeRuntime.open(root)
    target = root / "modes" / "rot0.onnx"
    target.unlink()
    os.mkfifo(target)
    down = rt.unavailable()
    assert set(down) == {"rot0"} and "changed since open" in down["rot0"]


def test_same_bytes_after_touch_is_not_a_change(root):
    rt = ModeRuntime.open(root)
    target = root / "modes" / "rot0.onnx"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data)
    os.utime(target, ns=(1, 1))
    assert rt.unavailable() == {}


def test_server_stays_ready_after_a_byte_identical_replacement(root):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from taugate.server import BackgroundServer

    rt = ModeRuntime.open(root)
    with BackgroundServer(rt) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        _replace(root)
        assert c.get("/health").json()["status"] == "ok"
        for mode in ("rot0", "rot45", "dense"):
            r = c.get(f"/v2/models/{mode}/ready")
            assert r.status_code == 200 and r.json()["ready"] is True
        _replace(root, _append("rot0.onnx"))
        health = c.get("/health").json()
        assert health["status"] == "degraded" and set(health["unavailable"]) == {"rot0"}
        assert c.get("/v2/models/rot0/ready").status_code == 400
        assert c.get("/v2/models/rot45/ready").status_code == 200
