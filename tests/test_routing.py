"""The router (taugate/exporting/router.py, router_bundle.py; taugate/runtime/routing.py): fitted
on synthetic modes whose inputs differ, stored in a tiny bundle, checked at load, and used by
``route``, ``run_auto`` / ``run("auto")`` and the HTTP ``auto`` paths."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from taugate.bundle.errors import BundleFormatError, BundleIntegrityError, RuntimeConfigError
from taugate.exporting.router import RouterConfig, fit_router
from taugate.exporting.router_bundle import ROUTER_FILE, write_router
from taugate.runtime import ModeRuntime
from taugate.runtime.routing import UNKNOWN, UnknownInputError
from taugate.server.messages import HttpRequest
from taugate.server.protocol import ProtocolHandler

MODES = ("rot0", "rot45")  # the tiny bundle's modes


def _rows(mode: int, n: int, seed: int) -> np.ndarray:
    """Mode 0 lights the top half of a 28x28 image, mode 1 the bottom half."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, (n, 784)).astype(np.float32)
    half = slice(0, 392) if mode == 0 else slice(392, 784)
    x[:, half] += rng.uniform(0.3, 0.8, (n, 392)).astype(np.float32)
    return x


def _data(n=200, seed=0) -> dict:
    return {m: _rows(i, n, seed + i) for i, m in enumerate(MODES)}


CFG = RouterConfig(components=8, hidden=8, steps=60)


@pytest.fixture(scope="module")
def routed_bundle(tiny_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("routed") / "bundle"
    shutil.copytree(tiny_bundle, path)
    write_router(path, fit_router(_data(), CFG))
    return path


def test_fit_router_names_the_modes_and_a_percentile_threshold():
    fitted = fit_router(_data(), CFG)
    assert fitted.modes == list(MODES)
    assert fitted.facts["holdout_accuracy"] >= 0.99
    assert np.mean(fitted.holdout_distance > fitted.threshold) <= 0.06


def test_fit_router_refuses_too_few_rows():
    with pytest.raises(ValueError, match="fewer than 4 calibration rows"):
        fit_router({"rot0": np.zeros((2, 784)), "rot45": np.ones((9, 784))}, CFG)


def test_router_file_is_listed_with_its_sha256(routed_bundle):
    manifest = json.loads((routed_bundle / "manifest.json").read_text())
    router = manifest["router"]
    assert router["file"] == ROUTER_FILE and router["modes"] == list(MODES)
    assert router["sha256"] == hashlib.sha256((routed_bundle / ROUTER_FILE).read_bytes()
                                              ).hexdigest()
    assert 0 < router["threshold"] and router["percentile"] == 99.0


def test_route_and_auto_at_runtime(routed_bundle):
    x = np.concatenate([_rows(0, 20, 7), _rows(1, 20, 8)])
    with ModeRuntime.open(routed_bundle, providers="cpu") as rt:
        modes = rt.route(x)
        assert modes[:20].count("rot0") >= 19 and modes[20:].count("rot45") >= 19
        auto = rt.run_auto(x, unknown="dense")
        for i, m in enumerate(auto.modes):
            want = rt.run("dense" if m == UNKNOWN else m, x[i:i + 1])
            np.testing.assert_allclose(auto.logits[i:i + 1], want, atol=1e-5)
        np.testing.assert_array_equal(rt.run("auto", x[:20][np.array(modes[:20]) != UNKNOWN]),
                                      rt.run("rot0", x[:20][np.array(modes[:20]) != UNKNOWN]))
        assert rt.predict("auto", x[:1]).shape == (1,)


def test_unknown_rows_are_flagged_and_refused_or_sent_to_dense(routed_bundle):
    known = np.concatenate([_rows(0, 100, 11), _rows(1, 100, 12)])
    strange = np.random.default_rng(3).uniform(0.9, 1.0, (100, 784)).astype(np.float32)
    with ModeRuntime.open(routed_bundle, providers="cpu") as rt:
        assert rt.route(strange).count(UNKNOWN) >= 90
        assert rt.route(known).count(UNKNOWN) <= 30  # 95th percentile of 80 held-out rows
        with pytest.raises(UnknownInputError, match="belong to none of the bundle's modes"):
            rt.run_auto(strange[:3])
        dense = rt.run_auto(strange[:3], unknown="dense")
        np.testing.assert_allclose(dense.logits, rt.run("dense", strange[:3]), atol=1e-6)
        with pytest.raises(RuntimeConfigError, match="unknown: expected one of refuse, dense"):
            rt.run_auto(known[:1], unknown="ignore")


def test_bundle_without_router_says_how_to_fit_one(tiny_bundle):
    with ModeRuntime.open(tiny_bundle, providers="cpu") as rt:
        with pytest.raises(RuntimeConfigError, match="taugate route BUNDLE --run RUN"):
            rt.route(np.zeros((1, 784), np.float32))


def test_tampered_router_is_refused(routed_bundle, tmp_path):
    bad = tmp_path / "b"
    shutil.copytree(routed_bundle, bad)
    data = bytearray((bad / ROUTER_FILE).read_bytes())
    data[-5] ^= 1
    (bad / ROUTER_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="router.*sha256 mismatch"):
        ModeRuntime.open(bad, providers="cpu")


@pytest.mark.parametrize("modes", [["rot0"], ["rot0", "rot45", "rot90"], ["rot0", "rot0"]])
def test_router_of_other_modes_is_refused(routed_bundle, tmp_path, modes):
    bad = tmp_path / "b"
    shutil.copytree(routed_bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["router"]["modes"] = modes
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleFormatError, match="router.modes: expected the bundle's modes"):
        ModeRuntime.open(bad, providers="cpu")
    fitted = fit_router({m: _rows(0, 20, 1) for m in dict.fromkeys(modes)}, CFG)
    if sorted(fitted.modes) != sorted(MODES):
        with pytest.raises(ValueError, match="are not the bundle's modes"):
            write_router(routed_bundle, fitted)


def _post(handler, path, body):
    rt = handler.runtime
    return handler.handle(HttpRequest("POST", path, {"content-type": "application/json"},
                                      json.dumps(body).encode()), rt.run)


def test_http_auto_json_api_and_oip(routed_bundle):
    x = np.concatenate([_rows(0, 2, 21), _rows(1, 2, 22)])
    with ModeRuntime.open(routed_bundle, providers="cpu") as rt:
        handler = ProtocolHandler(rt, unknown="dense")
        answer = _post(handler, "/modes/auto/predict", {"inputs": x.tolist()})
        body = json.loads(answer.body)
        assert answer.status == 200 and body["mode"] == "auto"
        assert body["modes"] == rt.route(x)
        want = rt.run_auto(x, unknown="dense").logits
        np.testing.assert_allclose(np.asarray(body["logits"]), want, atol=1e-5)
        oip = _post(handler, "/v2/models/auto/infer", {"inputs": [
            {"name": rt.manifest.input.name, "shape": list(x.shape), "datatype": "FP32",
             "data": x.ravel().tolist()}]})
        got = json.loads(oip.body)
        assert oip.status == 200 and got["parameters"]["taugate_modes"] == rt.route(x)
        np.testing.assert_allclose(np.asarray(got["outputs"][0]["data"]).reshape(want.shape),
                                   want, atol=1e-5)


def test_http_auto_refuses_unknown_rows(routed_bundle, tiny_bundle):
    strange = np.full((2, 784), 0.95, np.float32)
    with ModeRuntime.open(routed_bundle, providers="cpu") as rt:
        answer = _post(ProtocolHandler(rt), "/modes/auto/predict", {"inputs": strange.tolist()})
        assert answer.status == 422 and b"unknown input" in answer.body
    with ModeRuntime.open(tiny_bundle, providers="cpu") as rt:  # no router: no model "auto"
        assert _post(ProtocolHandler(rt), "/modes/auto/predict",
                     {"inputs": strange.tolist()}).status == 404


def test_serve_unknown_flag_reaches_the_handler(routed_bundle, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    import urllib.request

    import taugate.server as server
    from taugate.cli import main

    served = {}

    def fake_serve(rt, **kwargs):  # the real server, started in the background
        served.update(kwargs)
        strange = np.full((2, 784), 0.95, np.float32)
        with server.BackgroundServer(rt, unknown=kwargs["unknown"]) as srv:
            req = urllib.request.Request(srv.url + "/modes/auto/predict", json.dumps(
                {"inputs": strange.tolist()}).encode(), {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as res:
                served["answer"] = json.loads(res.read())

    monkeypatch.setattr(server, "serve", fake_serve)
    assert main(["serve", str(routed_bundle), "--providers", "cpu", "--unknown", "dense"]) == 0
    assert served["unknown"] == "dense"
    assert served["answer"]["modes"] == [UNKNOWN, UNKNOWN]  # run on the dense model, not refused
    with pytest.raises(SystemExit):
        main(["serve", str(routed_bundle), "--unknown", "drop"])
    assert "choose from 'refuse', 'dense'" in capsys.readouterr().err


def test_ray_config_checks_the_unknown_policy():
    pytest.importorskip("ray.serve")
    from taugate.server.ray_app import RayServeConfig

    with pytest.raises(RuntimeConfigError, match="expected one of refuse, dense"):
        RayServeConfig("b", unknown="drop")


def _spread_modes(n: int, seed: int) -> dict:
    """Two 16-feature modes with the same mean, one twice as spread: only the squares tell."""
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(0, 1, (n, 16)), "b": rng.normal(0, 2, (n, 16))}


def test_router_reads_squares_of_small_inputs_to_tell_a_spread_shift():
    cfg = RouterConfig(components=8, hidden=16, steps=150)
    with_squares = fit_router(_spread_modes(300, 0), cfg)
    assert with_squares.facts["squares"] is True  # 16 features: on by default
    assert [nd.op_type for nd in with_squares.proto.graph.node][:3] == ["Mul", "Gemm", "Gemm"]
    assert with_squares.facts["holdout_accuracy"] >= 0.95
    plain = fit_router(_spread_modes(300, 0), RouterConfig(components=8, hidden=16, steps=150,
                                                           squares=False))
    assert plain.facts["holdout_accuracy"] < with_squares.facts["holdout_accuracy"] - 0.05


def test_router_threshold_holds_on_fresh_known_rows_and_flags_inverted_ones():
    import onnxruntime as ort

    fitted = fit_router(_data(), CFG)
    assert fitted.facts["squares"] is False  # 784 features: a plain projection
    session = ort.InferenceSession(fitted.proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = np.concatenate(list(_data(200, 10).values()))
    _, distance = session.run(None, {"features": x})
    assert float(np.mean(distance > fitted.threshold)) <= 0.05  # the 99th percentile
    far = session.run(None, {"features": 1 - x})[1]  # inverted rows: far from every mode
    assert float(np.mean(far > fitted.threshold)) >= 0.9
