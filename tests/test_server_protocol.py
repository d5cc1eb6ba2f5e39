"""The framework-free protocol handler (taugate.server.protocol): routing, run-failure mapping,
sync and async paths, and what importing the runtime and the server pulls in."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("fastapi")

from taugate.runtime import BundleIntegrityError, InputError, InvalidOutputError, ModeRuntime
from taugate.server.messages import HttpRequest, ServiceUnavailable
from taugate.server.protocol import ProtocolHandler

X = np.random.default_rng(2).random((2, 784), dtype=np.float32)
PREDICT = HttpRequest("POST", "/modes/rot0/predict", {}, json.dumps({"inputs": X.tolist()})
                      .encode())
INFER = HttpRequest("POST", "/v2/models/rot0/infer", {}, json.dumps({"inputs": [
    {"name": "pixels", "datatype": "FP32", "shape": [2, 784], "data": X.ravel().tolist()}]})
                    .encode())


@pytest.fixture(scope="module")
def handler(tiny_bundle):
    return ProtocolHandler(ModeRuntime.open(tiny_bundle))


ROUTING = [
    ("GET", "/nothing", 404, {"error": "not found", "detail": "GET /nothing: Not Found"}),
    ("GET", "/modes/rot0/predict", 405,
     {"error": "method not allowed", "detail": "GET /modes/rot0/predict: Method Not Allowed"}),
    ("POST", "/v2/models/rot0", 405, None),
    ("GET", "/v2/models/rot0/extra/ready", 404, None),
    ("GET", "/v2/health/live", 200, {"live": True}),
]


@pytest.mark.parametrize("method,path,status,body", ROUTING, ids=[r[1] for r in ROUTING])
def test_routing(handler, method, path, status, body):
    answer = handler.route(HttpRequest(method, path))
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    if body is not None:
        assert json.loads(answer.body) == body


def _raise(exc):
    def run(mode, x):
        raise exc
    return run


FAILURES = [
    (PREDICT, ServiceUnavailable("gone"), 503, {"error": "unavailable", "detail": "gone"}),
    (INFER, ServiceUnavailable("gone"), 503, {"error": "gone"}),
    (PREDICT, RuntimeError("bug"), 500, {"error": "internal error",
                                         "detail": "internal error: RuntimeError"}),
    (INFER, RuntimeError("bug"), 500, {"error": "internal error: RuntimeError"}),
    (PREDICT, InputError("bad"), 422, {"error": "invalid input", "detail": "bad"}),
    (INFER, InputError("bad"), 400, {"error": "bad"}),
    (PREDICT, InvalidOutputError("nan logits"), 500,
     {"error": "invalid model output", "detail": "nan logits"}),
    (INFER, InvalidOutputError("nan logits"), 500, {"error": "nan logits"}),
    (PREDICT, BundleIntegrityError("file changed"), 503,
     {"error": "mode unavailable", "detail": "file changed"}),
    (INFER, BundleIntegrityError("file changed"), 503, {"error": "file changed"}),
]


@pytest.mark.parametrize("req,exc,status,body", FAILURES,
                         ids=["predict-503", "infer-503", "predict-500", "infer-500",
                              "predict-input", "infer-input", "predict-invalid-output",
                              "infer-invalid-output", "predict-bundle", "infer-bundle"])
def test_run_failures_map_to_each_apis_errors(handler, req, exc, status, body):
    answer = handler.handle(req, _raise(exc))
    assert (answer.status, json.loads(answer.body)) == (status, body)
    # 400 (the OIP's refusals too) and 5xx close the connection; 404/422 keep it
    assert (answer.headers.get("connection") == "close") == (status in (400, 500, 503))


def test_health_reports_unavailable_modes(handler, monkeypatch):
    def health():
        return json.loads(handler.handle(HttpRequest("GET", "/health"), handler.runtime.run)
                          .body)

    assert health()["status"] == "ok" and health()["unavailable"] == {}
    monkeypatch.setattr(handler.runtime, "unavailable", lambda: {"rot0": "file changed"})
    assert health() == {"status": "degraded", "modes": 2, "providers": ["CPUExecutionProvider"],
                        "unavailable": {"rot0": "file changed"}}


@pytest.mark.parametrize("offload", [None, 0], ids=["inline", "offloaded"])
@pytest.mark.parametrize("req", [PREDICT, INFER], ids=["predict", "infer"])
def test_async_path_answers_like_the_sync_one(handler, req, offload):
    rt = handler.runtime

    async def run(mode, x):
        return rt.run(mode, x)

    sync = handler.handle(req, rt.run)
    async_ = asyncio.run(handler.handle_async(req, run, offload_json_above=offload))
    assert (sync.status, sync.body, sync.headers) == (async_.status, async_.body, async_.headers)
    assert sync.status == 200


def test_inference_gets_validated_float32(handler):
    routed = handler.route(INFER)
    assert routed.mode == "rot0" and routed.x.dtype == np.float32 and routed.x.shape == (2, 784)


def test_runtime_and_server_imports_stay_light():
    code = textwrap.dedent("""
        import sys
        import taugate.runtime
        heavy = ("torch", "ray", "tritonclient")
        assert not [m for m in heavy if m in sys.modules], "runtime"
        import taugate.server, taugate.server.protocol
        bad = [m for m in heavy if m in sys.modules]
        assert not bad, bad
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("headers,expected", [
    ({}, 10), ({"inference-header-content-length": "4"}, 4),
    ({"inference-header-content-length": "99"}, 10),
    ({"inference-header-content-length": "x"}, 10),
], ids=["json", "binary", "too-long", "not-a-number"])
def test_json_size_counts_only_the_json_part(handler, headers, expected):
    assert handler.json_size(HttpRequest("POST", "/", headers, b"0123456789")) == expected


@pytest.mark.parametrize("shape,expected", [
    (None, [-1, 784]), (["batch", 1, 28, 28], [-1, 1, 28, 28]), ((1, 28, 28), [-1, 1, 28, 28]),
], ids=["v1", "v2-with-batch", "v2-per-sample"])
def test_metadata_shapes_follow_the_manifest(shape, expected):
    from types import SimpleNamespace

    from taugate.server import oip

    spec = SimpleNamespace(name="input", dtype="float32", features=784)
    if shape is not None:
        spec.shape = shape
    meta = oip.input_spec(SimpleNamespace(input=spec)).metadata()
    assert meta == {"name": "input", "datatype": "FP32", "shape": expected}
