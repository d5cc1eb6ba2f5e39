"""The Open Inference Protocol refuses what would make an answer or an array explode: requested
outputs repeated or beyond the model's, shapes of too many dimensions or whose size overflows
(zero-size ones included). 400 with a clear message on both engines: the handler itself, the
FastAPI app on uvicorn, and Ray's ingress (its ``__call__`` with a Starlette request, no Ray)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from _asgi_fakes import starlette_request

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer
from taugate.server.messages import HttpRequest
from taugate.server.protocol import ProtocolHandler

HEADER = "inference-header-content-length"
URL = "/v2/models/rot0/infer"
X = np.random.default_rng(11).random((2, 784), dtype=np.float32)


def body(shape=(2, 784), data=None, binary_size=None, **request) -> bytes:
    t = {"name": "pixels", "datatype": "FP32", "shape": list(shape)}
    if binary_size is not None:
        t["parameters"] = {"binary_data_size": binary_size}
    else:
        t["data"] = X.reshape(-1).tolist() if data is None else data
    return json.dumps({"inputs": [t], **request}).encode()


OUT = {"name": "logits"}
# (body, headers, words the error must hold)
REFUSED = {
    "same output twice": (body(outputs=[OUT, OUT]), {}, "'logits' requested more than once"),
    "15000 outputs": (body(outputs=[OUT] * 15000), {}, "(15000 requested, the model has 1: ['logits'])"),
    "65 dimensions": (body(shape=[1] * 65, data=[]), {}, "at most 8 dimensions, got 65"),
    "2^40 x 2^40 x 0": (body(shape=[2 ** 40, 2 ** 40, 0], data=[]), {}, "too large"),
    "2^63 x 0": (body(shape=[2 ** 63, 0], data=[]), {}, "too large"),
    "10^30 x 0 binary": (body(shape=[10 ** 30, 0], binary_size=0),
                         {HEADER: str(len(body(shape=[10 ** 30, 0], binary_size=0)))},
                         "too large"),
    "2^40 x 2^40 x 0 binary": (body(shape=[2 ** 40, 2 ** 40, 0], binary_size=0),
                               {HEADER: str(len(body(shape=[2 ** 40, 2 ** 40, 0],
                                                     binary_size=0)))}, "too large"),
}


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


def check(status: int, payload: bytes, words: str) -> None:
    assert status == 400, payload[:300]
    error = json.loads(payload)["error"]
    assert words in error and len(error) < 400, error


@pytest.mark.parametrize("name", list(REFUSED))
def test_handler_refuses(runtime, name):
    payload, headers, words = REFUSED[name]
    answer = ProtocolHandler(runtime).handle(HttpRequest("POST", URL, headers, payload),
                                             runtime.run)
    check(answer.status, answer.body, words)


def test_fastapi_app_refuses(runtime):
    with BackgroundServer(runtime) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for name, (payload, headers, words) in REFUSED.items():
            r = client.post(URL, content=payload, headers=headers)
            check(r.status_code, r.content, words)
            assert r.headers["connection"] == "close", name
        ok = client.post(URL, content=body(outputs=[OUT]))  # each output once is fine
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["outputs"]) == 1


class _Model:
    """Stands for the model deployment's handle: the replica runs the runtime."""

    def __init__(self, runtime):
        self.runtime = runtime

    def options(self, **kwargs):
        self.mode = kwargs["multiplexed_model_id"]
        return self

    @property
    def run(self):
        return self

    async def remote(self, x):
        return self.runtime.run(self.mode, x), {"replica": "r", "hit": True, "loaded": [],
                                                "loads": 1}


def test_ray_ingress_refuses(runtime, tiny_bundle):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed")
    from taugate.server.ray_app import RayServeConfig, TaugateIngress

    ingress = TaugateIngress(_Model(runtime), RayServeConfig(tiny_bundle))

    async def call(payload: bytes, headers: dict):
        headers = {"content-length": len(payload), **headers}
        return await ingress(starlette_request("POST", URL, headers, [payload]))

    for payload, headers, words in REFUSED.values():
        response = asyncio.run(call(payload, headers))
        check(response.status_code, response.body, words)
    ok = asyncio.run(call(body(outputs=[OUT]), {}))
    assert ok.status_code == 200, ok.body[:300]
    logits = np.asarray(json.loads(ok.body)["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(logits.reshape(2, -1), runtime.run("rot0", X), rtol=1e-6)
