"""`taugate export --router` fits the bundle's router right after the export (the code of
`taugate route`), and `export --into` keeps a bundle's router consistent with its modes: adding
modes removes the router (and its file) with a warning, unless --router fits a new one."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from _export_runs import make_run

from taugate.bundle.errors import RuntimeConfigError
from taugate.cli import main
from taugate.exporting.router_bundle import ROUTER_FILE
from taugate.runtime import ModeRuntime


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    return make_run("user", tmp_path_factory.mktemp("user"))


def _router(bundle):
    return json.loads((bundle / "manifest.json").read_text()).get("router")


def test_export_router_then_into_keeps_it_consistent(user_run, tmp_path, capsys, caplog):
    run, modes = user_run
    bundle = tmp_path / "bundle"
    base = ["export", str(run), "--allow-worse"]
    assert main([*base, "--out", str(bundle), "--modes", "a,b", "--router"]) == 0
    out = capsys.readouterr().out
    assert "router: 2 modes (" in out and "held-out routing accuracy" in out
    assert "held-out accuracy linear" in out  # both kinds fitted by default, the pick named
    assert _router(bundle)["modes"] == ["a", "b"]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    with ModeRuntime.open(bundle, providers="cpu") as rt:
        assert set(rt.route(x)) <= {"a", "b", "unknown"}

    with caplog.at_level(logging.WARNING):
        assert main([*base, "--into", str(bundle), "--modes", "c"]) == 0
    assert "its router does not know the added modes and was removed" in caplog.text
    assert _router(bundle) is None and not (bundle / ROUTER_FILE).exists()
    with ModeRuntime.open(bundle, providers="cpu") as rt:
        with pytest.raises(RuntimeConfigError, match="taugate route BUNDLE --run RUN"):
            rt.route(x)

    assert main([*base, "--into", str(bundle), "--modes", "c", "--force", "--router"]) == 0
    assert sorted(_router(bundle)["modes"]) == ["a", "b", "c"]


def test_into_router_refuses_a_run_without_the_bundles_modes(user_run, tmp_path, capsys):
    run, _ = user_run
    bundle = tmp_path / "bundle"
    assert main(["export", str(run), "--allow-worse", "--out", str(bundle), "--modes", "a"]) == 0
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    for f in (partial / "adapters").glob("a.*"):
        f.unlink()
    before = (bundle / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["export", str(partial), "--allow-worse", "--into", str(bundle), "--modes", "b",
                 "--router"]) == 2
    err = capsys.readouterr().err
    assert "has no modes ['a'] of the bundle" in err and "taugate route bundle --run RUN" in err
    assert (bundle / "manifest.json").read_bytes() == before, "nothing exported"
