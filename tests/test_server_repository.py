"""The statistics and model repository extensions through tritonclient against a real server:
a mode published into the served bundle goes into service by a load call (or --watch) while
other modes keep serving; unload takes it out; a bad load changes nothing."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from test_runtime_repository import _corrupt, served_copy

pytest.importorskip("fastapi")
httpclient = pytest.importorskip("tritonclient.http")
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer, create_app
from taugate.server.watch import ManifestWatcher

X = np.random.default_rng(13).random((2, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    from conftest import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("full") / "b", ("rot0", "rot45", "rot90"))


def _infer(client, mode):
    inp = httpclient.InferInput("pixels", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    return client.infer(mode, [inp]).as_numpy("logits")


def _states(client) -> dict:
    return {e["name"]: (e["state"], e["reason"]) for e in client.get_model_repository_index()}


def test_statistics_count_requests(tiny_bundle):
    with BackgroundServer(ModeRuntime.open(tiny_bundle)) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        for _ in range(3):
            _infer(client, "rot45")
        (stats,) = client.get_inference_statistics("rot45")["model_stats"]
        assert stats["name"] == "rot45" and stats["version"] == "1"
        assert stats["inference_count"] == 6 and stats["execution_count"] == 3
        phases = stats["inference_stats"]
        assert phases["success"]["count"] == 3 and phases["fail"]["count"] == 0
        assert phases["compute_infer"]["ns"] > 0 and stats["last_inference"] > 0
        assert phases["success"]["ns"] >= sum(phases[p]["ns"] for p in (
            "compute_input", "compute_infer", "compute_output"))
        every = client.get_inference_statistics()["model_stats"]
        assert [s["name"] for s in every] == ["rot0", "rot45", "dense"]
        assert client.get_inference_statistics("rot45", "1")["model_stats"] == [stats]
        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.get_inference_statistics("nope")


def test_load_and_unload_while_serving(full, tmp_path):
    path, publish = served_copy(full, tmp_path)
    expected = ModeRuntime.open(full).run("rot90", X)
    with BackgroundServer(ModeRuntime.open(path), model_control=True) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        assert "rot90" not in _states(client)
        publish()  # what `taugate export --into` does: a new manifest listing rot90
        assert _states(client)["rot90"] == ("UNAVAILABLE", "in the bundle on disk, not loaded")
        assert not client.is_model_ready("rot90")
        client.load_model("rot90")
        np.testing.assert_array_equal(_infer(client, "rot90"), expected)
        assert set(_states(client).values()) == {("READY", "")}
        client.unload_model("rot45")
        assert _states(client)["rot45"] == ("UNAVAILABLE", "unloaded")
        with pytest.raises(InferenceServerException, match="unknown model 'rot45'"):
            _infer(client, "rot45")
        assert [e["name"] for e in client.get_model_repository_index()
                if e["state"] == "READY"] == ["dense", "rot0", "rot90"]
        with pytest.raises(InferenceServerException, match="not in the bundle on disk"):
            client.load_model("nope")


def test_a_bad_load_is_refused_and_changes_nothing(full, tmp_path):
    path, publish = served_copy(full, tmp_path)
    app = TestClient(create_app(ModeRuntime.open(path), model_control=True))
    publish()
    _corrupt(path, json.loads((path / "manifest.json").read_text())["modes"]["rot90"]["file"])
    answer = app.post("/v2/repository/models/rot90/load")
    assert answer.status_code == 400 and "sha256 mismatch" in answer.json()["error"]
    assert str(tmp_path) not in answer.text  # the bundle is named by its directory name only
    assert app.get("/v2/models/rot90/ready").status_code == 404
    assert app.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("action", ["load", "unload"])
def test_model_control_is_off_by_default(tiny_bundle, action):
    app = TestClient(create_app(ModeRuntime.open(tiny_bundle)))
    answer = app.post(f"/v2/repository/models/rot0/{action}")
    assert answer.status_code == 403 and "--model-control" in answer.json()["error"]
    assert app.post("/v2/repository/index", json={"ready": True}).status_code == 200
    assert app.post("/modes/rot0/predict", json={"inputs": X.tolist()}).status_code == 200


def test_watch_loads_new_modes_and_unloads_removed_ones(full, tmp_path):
    path, publish = served_copy(full, tmp_path)
    rt = ModeRuntime.open(path)
    watcher = ManifestWatcher(rt, interval_s=60)
    assert watcher.check() == {}  # nothing changed
    publish()
    assert watcher.check() == {"rot90": "loaded"}
    rt.run("rot90", X)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["modes"]["rot0"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert watcher.check() == {"rot0": "unloaded"} and rt.modes == ["rot45", "rot90"]
    with pytest.raises(ValueError, match="seconds > 0"):
        ManifestWatcher(rt, 0)


def test_new_mode_in_service_right_after_the_load_call(full, tmp_path):
    """Load-to-first-inference latency while 4 client threads keep other modes busy (the
    number is reported, not asserted: the issue's goal is 20 ms on the paper backbone)."""
    path, publish = served_copy(full, tmp_path)
    with BackgroundServer(ModeRuntime.open(path), model_control=True) as server:
        host = server.url.removeprefix("http://")
        stop, failures = threading.Event(), []

        def busy(mode):
            c = httpclient.InferenceServerClient(host)
            while not stop.is_set():
                try:
                    _infer(c, mode)
                except Exception as exc:  # counted: no other mode may fail during the load
                    failures.append(exc)

        threads = [threading.Thread(target=busy, args=(m,)) for m in ("rot0", "rot45") * 2]
        for t in threads:
            t.start()
        client = httpclient.InferenceServerClient(host)
        publish()
        client.load_model("rot90")
        returned = time.perf_counter()
        _infer(client, "rot90")
        first = time.perf_counter() - returned
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:3]
        print(f"load returned -> first rot90 inference: {first * 1e3:.1f} ms")
