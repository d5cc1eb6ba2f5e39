"""taugate on a real Ray Serve (taugate.server.ray_app), started and stopped here: 2 CPUs, 2 model
replicas holding at most 2 modes each, a bundle with 4 modes + dense (more than fit).

One deployment serves the whole module (Ray takes 10-20 s to start, ~6 s to stop); the tests run
in file order and the last one shuts it down and checks that no process is left. If Ray cannot
start within START_TIMEOUT_S the module is skipped, the reason shown in pytest's summary.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'taugate[ray]')")
import ray

from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import BundleIntegrityError, InputError, InvalidOutputError, ModeRuntime
from taugate.server import BackgroundServer
from taugate.server.ray_app import REPLICA_HEADER, RayServeConfig
from taugate.server.ray_local import LocalRayServe

START_TIMEOUT_S = float(os.environ.get("TAUGATE_RAY_START_TIMEOUT", "180"))
MODES = ("m0", "m1", "m2", "m3")
MODELS = (*MODES, "dense")  # 5 models, 2 replicas x 2 slots
X = np.random.default_rng(3).random((3, 784), dtype=np.float32)
HEADER = "inference-header-content-length"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_random_bundle(tmp_path_factory.mktemp("ray") / "bundle", modes=MODES)


@pytest.fixture(scope="module")
def runtime(bundle):
    return ModeRuntime.open(bundle)


@pytest.fixture(scope="module")
def cluster(bundle):
    srv = LocalRayServe(RayServeConfig(bundle, replicas=2, max_modes_per_replica=2,
                                       replica_cpus=0.5), num_cpus=2)
    t0 = time.monotonic()
    try:
        srv.start(timeout=START_TIMEOUT_S)
    except Exception as exc:  # reported as the skip reason
        srv.stop()
        pytest.skip(f"Ray Serve did not start: {exc!r} after {time.monotonic() - t0:.0f} s "
                    f"(load average {os.getloadavg()[0]:.1f})")
    srv.startup_s = time.monotonic() - t0
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(cluster):
    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        yield c


def replica_of(response) -> dict:
    """The x-taugate-replica header: which replica answered, and what it holds."""
    rid, *pairs = response.headers[REPLICA_HEADER].split(";")
    info = dict(p.split("=", 1) for p in pairs)
    return {"replica": rid, "hit": info["hit"] == "1", "loads": int(info["loads"]),
            "loaded": [m for m in info["loaded"].split(",") if m]}


def predict(client, mode: str, x: np.ndarray = X):
    r = client.post(f"/modes/{mode}/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    return r


def infer_binary(client, mode: str, x: np.ndarray = X):
    head = (b'{"inputs":[{"name":"pixels","datatype":"FP32","shape":[%d,784],'
            b'"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}'
            % (len(x), x.nbytes))
    r = client.post(f"/v2/models/{mode}/infer", content=head + x.astype("<f4").tobytes(),
                    headers={HEADER: str(len(head))})
    assert r.status_code == 200, r.text
    n = int(r.headers[HEADER])
    return r, np.frombuffer(r.content[n:], "<f4").reshape(len(x), -1)


def test_app_builder_for_serve_run_and_config_files(bundle):
    # `serve run taugate.server.ray_app:app_builder bundle=... replicas=2`: values are strings
    from ray.serve import Application

    from taugate.server.ray_app import app_builder

    assert isinstance(app_builder({"bundle": str(bundle), "replicas": "2",
                                   "max_modes_per_replica": "3"}), Application)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['replica'\]"):
        app_builder({"bundle": str(bundle), "replica": "2"})
    with pytest.raises(ValueError, match="max_modes_per_replica: expected an integer >= 1"):
        app_builder({"bundle": str(bundle), "max_modes_per_replica": "0"})
    with pytest.raises(ValueError, match="not a directory"):
        app_builder({"bundle": str(bundle / "missing")})


class _FailingModel:
    """Stands for the model deployment's handle: its replica raised ``cause``."""

    def __init__(self, cause: Exception):
        self.cause = cause

    def options(self, **kwargs):
        return self

    @property
    def run(self):
        return self

    async def remote(self, x):
        raise ray.exceptions.RayTaskError("run", "Traceback ...", self.cause).as_instanceof_cause()


REPLICA_FAILURES = [
    (InvalidOutputError("mode 'm0': the model produced invalid output: nan"), 500,
     "invalid model output"),
    (BundleIntegrityError("modes/m0.onnx: sha256 mismatch"), 503, "mode unavailable"),
    (InputError("values must lie in [0, 1]"), 422, "invalid input"),
]


@pytest.mark.parametrize("cause,status,error", REPLICA_FAILURES,
                         ids=[type(r[0]).__name__ for r in REPLICA_FAILURES])
def test_replica_errors_map_as_in_one_process(bundle, cause, status, error):
    import asyncio
    import json

    from taugate.server.messages import HttpRequest
    from taugate.server.ray_app import TaugateIngress

    ingress = TaugateIngress(_FailingModel(cause), RayServeConfig(bundle))
    req = HttpRequest("POST", "/modes/m0/predict", {}, json.dumps({"inputs": X.tolist()})
                      .encode())
    answer = asyncio.run(ingress.handler.handle_async(
        req, lambda mode, x: ingress._run(mode, x, {})))
    # the replica's own message, not Ray's traceback
    assert (answer.status, json.loads(answer.body)) == (status, {"error": error,
                                                                  "detail": str(cause)})


@pytest.mark.parametrize("mode", MODELS)
def test_answers_equal_the_runtime_for_every_mode(client, runtime, mode):
    expected = runtime.run(mode, X)
    np.testing.assert_array_equal(predict(client, mode).json()["logits"], expected)
    np.testing.assert_array_equal(infer_binary(client, mode)[1], expected)


SAME_AS_SINGLE_PROCESS = [
    ("GET", "/health", None), ("GET", "/v2", None), ("GET", "/v2/health/ready", None),
    ("GET", "/v2/models/m1", None), ("GET", "/v2/models/dense/versions/1/ready", None),
    ("GET", "/v2/models/m9", None), ("GET", "/nothing", None), ("GET", "/modes/m0/predict", None),
    ("POST", "/modes/m2/predict", {"inputs": X.tolist()}),
    ("POST", "/modes/m2/predict", {"inputs": [[2.0] * 784]}),
    ("POST", "/modes/m9/predict", {"inputs": X.tolist()}),
    ("POST", "/v2/models/m3/infer", {"id": "a", "inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [3, 784], "data": X.ravel().tolist()}]}),
    ("POST", "/v2/models/m3/infer", {"inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [1, 700], "data": [0.5] * 700}]}),
    ("POST", "/modes/m2/predict", {"inputs": [[True] * 784]}),  # strict JSON
    ("POST", "/modes/m2/predict", {"inputs": [[1e300] * 784]}),
    ("POST", "/v2/models/m3/infer", {"inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [1, 784], "data": [None] * 784}]}),
]


def test_same_api_and_answers_as_the_single_process_server(client, runtime):
    with BackgroundServer(runtime) as single, httpx.Client(base_url=single.url) as local:
        for method, path, body in SAME_AS_SINGLE_PROCESS:
            got, want = (c.request(method, path, json=body) for c in (client, local))
            assert (got.status_code, got.content) == (want.status_code, want.content), path


def test_requests_for_a_mode_go_to_a_replica_that_holds_it(client, runtime):
    for mode in ("m0", "m1", "m0", "m1"):  # place both, and let replicas report them
        predict(client, mode)
        time.sleep(1.0)
    served = [replica_of(predict(client, mode)) for mode in ("m0", "m1") * 6]
    misses = [s for s in served if not s["hit"]]
    assert not misses, f"requests routed to a replica without their mode: {misses}"
    for mode, s in zip(("m0", "m1") * 6, served):
        assert mode in s["loaded"]
    for mode in ("m0", "m1"):  # each mode stays on the replica(s) that hold it
        holders = {s["replica"] for s, m in zip(served, ("m0", "m1") * 6) if m == mode}
        assert len(holders) == 1, (mode, holders)


def test_eviction_keeps_answers_right(client, runtime):
    loads: dict[str, int] = {}
    for _ in range(2):
        for mode in MODELS:  # 5 models, 4 slots: replicas must evict and reload
            r = predict(client, mode)
            np.testing.assert_array_equal(r.json()["logits"], runtime.run(mode, X))
            info = replica_of(r)
            assert len(info["loaded"]) <= 2, info  # max_modes_per_replica holds
            loads[info["replica"]] = max(loads.get(info["replica"], 0), info["loads"])
            time.sleep(0.3)
    assert len(loads) == 2, f"both replicas should serve some mode: {loads}"
    assert sum(loads.values()) > len(MODELS), f"no mode was ever evicted and reloaded: {loads}"


def test_a_killed_replica_is_replaced(cluster, client, runtime):
    before = cluster.model_replicas()
    assert len(before) == 2, before
    victim_id, victim = min(before.items())
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    deadline, answered = time.monotonic() + 90, set()
    while time.monotonic() < deadline:
        replicas = cluster.model_replicas()
        if len(replicas) == 2 and victim_id not in replicas and len(answered) == len(MODELS):
            break
        for mode in MODELS:
            r = client.post(f"/modes/{mode}/predict", json={"inputs": X.tolist()})
            if r.status_code == 200:
                np.testing.assert_array_equal(r.json()["logits"], runtime.run(mode, X))
                answered.add(mode)
                assert replica_of(r)["replica"] != victim_id
            else:  # while Ray notices the death: a JSON error, never a hang
                assert r.status_code in (500, 503) and "error" in r.json(), r.text
        time.sleep(0.5)
    replicas = cluster.model_replicas()
    assert victim_id not in replicas and len(replicas) == 2, replicas
    answered = {m for m in MODELS if predict(client, m).status_code == 200}
    assert answered == set(MODELS)


def test_a_flood_past_max_queue_is_answered_503(cluster, bundle, runtime):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from taugate.server import ray_app

    if "max_queued_requests" not in ray_app._DEPLOYMENT_OPTIONS:
        pytest.skip("this Ray Serve cannot bound the proxy's queue (no max_queued_requests)")
    before = cluster.config
    cluster.deploy(RayServeConfig(bundle, replicas=1, max_modes_per_replica=5, replica_cpus=0.5,
                                  max_queue=1), timeout=START_TIMEOUT_S)
    try:
        start = Barrier(40)

        def send(i):
            with httpx.Client(base_url=cluster.url, timeout=60) as c:
                start.wait()  # 40 at once: 1 held by the ingress, 1 waiting, the rest refused
                return i, c.post(f"/modes/{MODES[i % 4]}/predict", json={"inputs": X.tolist()})

        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(send, range(40)))
    finally:
        cluster.deploy(before, timeout=START_TIMEOUT_S)
    refused = [r for _, r in answers if r.status_code == 503]
    assert refused, "no request was refused: the queue is not bounded"
    assert all(r.headers.get("retry-after") == "1" for r in refused), refused[0].headers
    for i, r in answers:
        if r.status_code != 503:
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(r.json()["logits"], runtime.run(MODES[i % 4], X))


def test_clean_shutdown_leaves_no_process(cluster):
    if not os.path.isdir("/proc"):
        cluster.stop()
        pytest.skip("no /proc on this system: Ray's processes cannot be listed")
    started = set(cluster.processes)
    assert started, "no Ray process was seen: the check below would be vacuous"
    left = cluster.stop()
    assert not left, f"processes left after shutdown: {sorted(left)}"
    assert not ray.is_initialized()
