"""`export --into`: concurrent exports into one bundle never lose an update (a lock beside the
bundle), and a killed export leaves nothing the next one does not clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from _export_runs import make_run

from taugate.exporting.into import bundle_lock, clean_stale_scratch
from taugate.exporting.pipeline import ExportConfig, export_run


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user")
    run, modes = make_run("user", tmp)
    return run, modes


def _bundle(run, modes, path):
    export_run(run, path, ExportConfig(modes=(modes[0],), allow_worse=True))
    return path


def _modes(bundle) -> list[str]:
    return sorted(json.loads((bundle / "manifest.json").read_text())["modes"])


def test_lock_serializes_holders(tmp_path):
    bundle = tmp_path / "b"
    order = []

    def hold(tag):
        with bundle_lock(bundle):
            order.append(f"{tag} in")
            time.sleep(0.2)
            order.append(f"{tag} out")

    threads = [threading.Thread(target=hold, args=(t,)) for t in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order[0][0] == order[1][0] and order[2][0] == order[3][0], order


def test_concurrent_into_keeps_both_updates(user_run, tmp_path):
    from taugate.exporting.into import export_into

    run, modes = user_run
    bundle = _bundle(run, modes, tmp_path / "b")
    errors = []

    def add(mode):
        try:
            export_into(run, bundle, ExportConfig(modes=(mode,), allow_worse=True))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(m,)) for m in modes[1:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert _modes(bundle) == sorted(modes[:3])


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_scratch_is_cleaned_live_kept(tmp_path):
    bundle = tmp_path / "b"
    stale, live, ownerless = (tmp_path / f".b.add.{s}" for s in ("dead", "live", "none"))
    for d in (stale, live, ownerless):
        d.mkdir()
    (stale / ".taugate-export-owner").write_text(str(_dead_pid()))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (live / ".taugate-export-owner").write_text(str(sleeper.pid))
        assert sorted(clean_stale_scratch(bundle)) == sorted([stale, ownerless])
        assert live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX kill -9")
def test_kill_9_mid_export_is_cleaned_by_the_next(user_run, tmp_path):
    run, modes = user_run
    bundle = _bundle(run, modes, tmp_path / "b")
    before = _modes(bundle)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "taugate.cli", "export", str(run), "--into",
                             str(bundle), "--modes", modes[1], "--allow-worse"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".b.add.*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _modes(bundle) == before, "the bundle is untouched"
    from taugate.exporting.into import export_into

    export_into(run, bundle, ExportConfig(modes=(modes[2],), allow_worse=True))
    assert _modes(bundle) == sorted([*before, modes[2]])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")
                 and p.name != ".b.lock"]
    assert leftovers == [], leftovers
