"""taugate.bundle.atomic: permissions from the umask, and recovery after a crash (a real kill: the
writer process exits with os._exit in the middle, so no cleanup code runs)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taugate.bundle.atomic import (
    _COMPLETE,
    _OWNER,
    atomic_directory,
    current_umask,
    recover,
    write_bytes,
)
from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import ModeRuntime

ROOT = Path(__file__).resolve().parents[1]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_directories_get_what_the_umask_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        bundle = build_random_bundle(tmp_path / "bundle", modes=("rot0",))
        single = write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert _mode(bundle) == _mode(bundle / "modes") == 0o777 & ~mask
    for f in (bundle / "manifest.json", bundle / "dense.onnx", bundle / "modes" / "rot0.onnx",
              single):
        assert _mode(f) == 0o666 & ~mask, f
    assert sorted(p.name for p in bundle.iterdir()) == ["dense.onnx", "manifest.json", "modes"]


def _crash(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter with ``out`` = tmp_path / "bundle"; it os._exit()s."""
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from taugate.exporting.synthetic import build_random_bundle
        out = Path({str(tmp_path / "bundle")!r})
    """) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False)  # it is meant to die


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle"))


def _seed(bundle: Path) -> int:
    return json.loads((bundle / "manifest.json").read_text())["modes"]["rot0"]["macs"]


def test_crash_while_writing_leaves_a_temporary_that_the_next_export_removes(tmp_path):
    build_random_bundle(tmp_path / "bundle", modes=("rot0",))
    r = _crash(tmp_path, """
        import taugate.exporting.writer as b
        real = b._write_graph
        def dying(root, rel, name, graph, backbone):
            if name == "rot0":
                os._exit(3)  # killed half-way through writing the new bundle
            return real(root, rel, name, graph, backbone)
        b._write_graph = dying
        build_random_bundle(out, modes=("rot0", "rot45"), widths=(8,), overwrite=True)
    """)
    assert r.returncode == 3, r.stderr
    assert len(_leftovers(tmp_path)) == 1 and _leftovers(tmp_path)[0].endswith(".tmp")
    ModeRuntime.open(tmp_path / "bundle")  # the old bundle is untouched
    build_random_bundle(tmp_path / "bundle", modes=("rot0",), widths=(8,), overwrite=True)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("complete", [True, False], ids=["new-complete", "new-incomplete"])
def test_crash_between_the_two_renames_is_recovered(tmp_path, complete):
    build_random_bundle(tmp_path / "bundle", modes=("rot0",))  # widths (32, 16)
    old_macs = _seed(tmp_path / "bundle")
    r = _crash(tmp_path, """
        from taugate.bundle import atomic as _atomic
        real = os.replace
        def dying(src, dst):
            real(src, dst)
            if str(dst).endswith(".bundle.old"):  # the old bundle moved aside, the new not in
                os._exit(4)
        _atomic.os.replace = dying
        build_random_bundle(out, modes=("rot0",), widths=(8,), overwrite=True)
    """)
    assert r.returncode == 4, r.stderr
    bundle = tmp_path / "bundle"
    assert not bundle.exists() and (tmp_path / ".bundle.old").is_dir()
    tmp = [t for t in tmp_path.iterdir() if t.name.endswith(".tmp")]
    assert len(tmp) == 1 and (tmp[0] / _COMPLETE).exists()
    if not complete:
        (tmp[0] / _COMPLETE).unlink()
    assert recover(bundle) == ("completed" if complete else "restored")
    assert _leftovers(tmp_path) == []
    assert not (bundle / _COMPLETE).exists() and not (bundle / _OWNER).exists()
    ModeRuntime.open(bundle)
    assert _seed(bundle) != old_macs if complete else _seed(bundle) == old_macs


def test_a_live_writers_temporary_is_kept(tmp_path):
    live = tmp_path / ".bundle.abc.tmp"
    live.mkdir()
    (live / _OWNER).write_text(str(os.getpid()))
    dead = tmp_path / ".bundle.def.tmp"
    dead.mkdir()
    with atomic_directory(tmp_path / "bundle") as t:
        (t / "x").write_text("1")
    assert live.exists() and not dead.exists()
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["x"]
