"""The HTTP API (taugate.server) on a real uvicorn server bound to a free loopback port."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer, create_app

LIMIT = 64 * 1024
X = np.random.default_rng(5).random((3, 784), dtype=np.float32).round(4)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


@pytest.fixture(scope="module")
def client(runtime):
    with BackgroundServer(runtime, max_body_bytes=LIMIT) as server:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/health").status_code == 200
            yield c


def test_health_and_modes(client):
    health = client.get("/health").json()
    assert health == {"status": "ok", "modes": 2, "providers": ["CPUExecutionProvider"],
                      "unavailable": {}}
    body = client.get("/modes").json()
    assert [m["name"] for m in body["modes"]] == ["rot0", "rot45"]
    assert body["modes"][1]["facts"] == {"angle": 45.0} and body["modes"][1]["units_kept"] == [32, 16]
    assert body["dense"]["name"] == "dense"
    # the exporter writes the dense model's accuracy per mode (a mapping)
    assert body["dense"]["test_accuracy"] == {"rot0": 0.5, "rot45": 0.5}
    assert client.get("/modes/dense").json()["test_accuracy"] == {"rot0": 0.5, "rot45": 0.5}
    assert client.get("/modes/rot45").json()["mac_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["rot0", "rot45", "dense"])
@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28)], ids=["flat", "images"])
def test_predict_matches_the_runtime(client, runtime, mode, shape):
    r = client.post(f"/modes/{mode}/predict", json={"inputs": X.reshape(shape).tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = runtime.run(mode, X)
    assert body["mode"] == mode and body["classes"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(body["logits"], expected, rtol=1e-5, atol=1e-5)


def _chunks():
    for _ in range(LIMIT // 1000 + 5):
        yield b"1" * 1000


BAD_REQUESTS = [
    ("malformed-json", "rot0", {"content": b"{inputs"}, 400, "malformed JSON"),
    ("not-an-object", "rot0", {"json": [1, 2]}, 422, "invalid request body"),
    ("no-inputs", "rot0", {"json": {"x": 1}}, 422, "invalid request body"),
    ("inputs-not-list", "rot0", {"json": {"inputs": 3}}, 422, "invalid request body"),
    ("wrong-width", "rot0", {"json": {"inputs": [[0.5] * 783]}}, 422, "invalid input"),
    ("ragged", "rot0", {"json": {"inputs": [[0.5] * 784, [0.5]]}}, 422, "invalid input"),
    ("strings", "rot0", {"json": {"inputs": [["a"] * 784]}}, 422, "invalid input"),
    ("out-of-range", "rot0", {"json": {"inputs": [[255.0] * 784]}}, 422, "invalid input"),
    ("nan", "rot0", {"content": b'{"inputs": [[NaN]]}'}, 422, "invalid input"),
    ("empty", "rot0", {"json": {"inputs": []}}, 422, "invalid input"),
    ("numeric-strings", "rot0", {"json": {"inputs": [["0.5"] * 784]}}, 422, "invalid input"),
    ("booleans", "rot0", {"json": {"inputs": [[True] * 784]}}, 422, "invalid input"),
    ("a-boolean-among-numbers", "rot0", {"json": {"inputs": [[0.5] * 783 + [False]]}}, 422,
     "invalid input"),
    ("null", "rot0", {"json": {"inputs": [[None] * 784]}}, 422, "invalid input"),
    ("nested-20k", "rot0", {"content": b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000
                                        + b"}"}, 400, "malformed JSON"),
    ("nested-5", "rot0", {"json": {"inputs": [[[[[0.5]]]]]}}, 422, "invalid input"),
    ("5000-digit-int", "rot0", {"content": b'{"inputs": [[' + b"1" * 5000 + b"]]}"}, 400,
     "malformed JSON"),
    ("beyond-float32", "rot0", {"content": b'{"inputs": [[1e300]]}'}, 400,
     "number out of range"),
    ("unknown-mode", "rot90", {"json": {"inputs": [[0.5] * 784]}}, 404, "unknown mode"),
    ("too-large", "rot0", {"content": b"1" * (LIMIT + 1)}, 413, "payload too large"),
    ("too-large-chunked", "rot0", {"content": _chunks}, 413, "payload too large"),
]


@pytest.mark.parametrize("mode,kwargs,status,error", [b[1:] for b in BAD_REQUESTS],
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_json_errors(client, mode, kwargs, status, error):
    if callable(kwargs.get("content")):
        kwargs = {"content": kwargs["content"]()}  # a generator: sent chunked, no length
    r = client.post(f"/modes/{mode}/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["detail"]
    # an error answered without parsing the request closes the connection
    assert (r.headers.get("connection") == "close") == (status in (400, 413))
    assert client.get("/health").status_code == 200  # still serving


def test_unknown_routes_and_methods(client):
    r = client.get("/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not found"
    r = client.get("/modes/rot0/predict")
    assert r.status_code == 405 and r.json()["error"] == "method not allowed"
    assert client.get("/modes/rot90").status_code == 404


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/health", "/modes", "/modes/{mode}/predict"} <= set(spec["paths"])
    body = spec["paths"]["/modes/{mode}/predict"]["post"]["requestBody"]
    assert "inputs" in body["content"]["application/json"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_the_description_is_the_bundles_own(client, runtime):
    """The OpenAPI text describes this bundle (family, modes, input spec), not every bundle
    as an MNIST classifier."""
    text = client.get("/openapi.json").json()["info"]["description"]
    spec = runtime.manifest.input
    assert f"frozen {runtime.manifest.family} model" in text
    assert f"{len(runtime.modes)} modes" in text
    assert f"`{spec.name}`: float32 [batch, {', '.join(map(str, spec.shape))}]" in text
    assert "MNIST" not in text


def test_concurrent_requests(client, runtime):
    batches = [np.random.default_rng(i).random((1 + i % 3, 784), dtype=np.float32).round(3)
               for i in range(8)]
    modes = ["rot0", "rot45", "dense"]
    expected = {(m, i): runtime.predict(m, b).tolist() for m in modes for i, b in
                enumerate(batches)}
    payloads = [{"inputs": b.tolist()} for b in batches]

    def worker(t: int) -> int:
        ok = 0
        for k in range(25):
            m, i = modes[(t + k) % 3], (t * 25 + k) % len(batches)
            r = client.post(f"/modes/{m}/predict", json=payloads[i])
            assert r.status_code == 200 and r.json()["classes"] == expected[m, i]
            ok += 1
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 200


def test_create_app_validates_limit(runtime):
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app(runtime, max_body_bytes=0)
