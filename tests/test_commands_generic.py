"""`taugate info`, `taugate predict` and the export of a loaded run on a non-image bundle
(tabular input of 13 values, range null, no labels), written by the torch engine."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _gated_models import MLP_TARGETS, odd_mlp, random_spec

from taugate import cli
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.compact import hard_gated
from taugate.exporting.compaction import ParityError
from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
from taugate.exporting.prune import PruneConfig
from taugate.runtime import ModeRuntime

SPEC_IN = InputSpec.plain((13,), name="features")
SPEC_OUT = OutputSpec.logits(5)


@dataclass
class FakeRunMode:  # the fields of taugate.training.loaded.RunMode that export reads
    method: str
    spec: object
    facts: dict
    calibration: tuple
    test: tuple
    hard_model: object


@dataclass
class FakeRun:
    family: str
    foundation: object
    input_spec: InputSpec
    output_spec: OutputSpec
    modes: dict


def _run(reference=None) -> FakeRun:
    model = odd_mlp()
    torch.manual_seed(3)
    x, y = torch.randn(60, 13), torch.randint(0, 5, (60,))
    modes = {}
    for i, name in enumerate(["north", "south"]):
        spec = random_spec(MLP_TARGETS, seed=10 + i)
        ref = reference or (lambda spec=spec: hard_gated(model, spec))
        modes[name] = FakeRunMode("taugate", spec, {"site": name}, (x[:30], y[:30]),
                                  (x[30:], y[30:]), ref)
    return FakeRun("user", model, SPEC_IN, SPEC_OUT, modes)


def export_run_bundle(run, out):
    """What export_run does after load_run; random specs: no accuracy guard applies."""
    modes = {n: ModeInput(m.spec, m.calibration, m.test, m.method, m.facts,
                          hard_model=m.hard_model) for n, m in run.modes.items()}
    config = ExportConfig(allow_worse=True, prune=PruneConfig(max_accuracy_drop=1.0))
    return export_modes(out, run.foundation, modes, family=run.family,
                        input_spec=run.input_spec, output_spec=run.output_spec, config=config)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path, reports = export_run_bundle(_run(), tmp_path_factory.mktemp("g") / "bundle")
    assert [r.name for r in reports] == ["north", "south"]
    return path


def test_export_checks_the_trained_model(tmp_path):
    with pytest.raises(ParityError, match="does not describe its model"):
        export_run_bundle(_run(reference=odd_mlp), tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_info_shows_facts_and_spec(bundle, capsys):
    assert cli.main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    for needle in ("family        user", "features float32 [batch, 13] (any finite values)",
                   "site=north", "x fewer", "weights: shared backbone"):
        assert needle in out, needle


def test_predict_npy_with_negative_values(bundle, tmp_path, capsys):
    x = -np.abs(np.random.default_rng(0).standard_normal((4, 13))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(bundle), "--mode", "south", "--json",
                     str(tmp_path / "x.npy")]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    with ModeRuntime.open(bundle, providers="cpu") as rt:
        assert [p["class"] for p in got] == rt.predict("south", x).tolist()


def test_predict_refuses_images_without_an_image_layout(bundle, tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    pil.new("L", (5, 5)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(bundle), "--mode", "north", str(tmp_path / "a.png")]) != 0
    assert "has no image layout" in capsys.readouterr().err


def test_one_mac_ratio_convention(bundle, capsys):
    """`taugate info`'s table, info --json, the runtime and HTTP /modes all say dense MACs /
    mode MACs ("N.NNx fewer")."""
    import httpx

    from taugate.server import BackgroundServer

    assert cli.main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    with ModeRuntime.open(bundle, providers="cpu") as rt:
        ratios = {m: rt.info(m)["mac_ratio"] for m in rt.modes}
        for m, ratio in ratios.items():
            assert ratio == pytest.approx(rt.manifest.dense.macs / rt.manifest.modes[m].macs)
            line = next(x for x in out.splitlines() if x.startswith(m + " "))
            assert f"{ratio:.2f}x fewer" in line
        assert max(ratios.values()) > 1.0, ratios  # a pruned mode: the direction is tested
        with BackgroundServer(rt) as server:
            modes = httpx.get(f"{server.url}/modes", timeout=10).json()["modes"]
    assert {m["name"]: m["mac_ratio"] for m in modes} == pytest.approx(ratios)
