"""Client-facing messages never carry an absolute path (the bundle is named by its directory
name), and /docs works without the network."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from taugate.runtime import BundleIntegrityError, ModeRuntime
from taugate.server import BackgroundServer
from taugate.server.messages import HttpRequest
from taugate.server.redact import PathRedactor

X = np.random.default_rng(5).random((1, 784), dtype=np.float32)
INFER = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 784],
                     "data": X.reshape(-1).tolist()}]}


def test_redactor_names_the_bundle_and_hides_other_absolute_paths(tmp_path):
    root = tmp_path / "my-bundle"
    redact = PathRedactor(root)
    assert redact(f"rot0: file 'modes/rot0.onnx': missing from bundle {str(root)!r}") == \
        "rot0: file 'modes/rot0.onnx': missing from bundle 'my-bundle'"
    assert redact(f"rot0: file 'modes/x.onnx': resolves to /etc/passwd, outside the bundle "
                  f"directory {root.resolve()}") == \
        "rot0: file 'modes/x.onnx': resolves to <path>, outside the bundle directory my-bundle"
    assert redact(r"cannot read C:\Users\me\b\x.onnx") == "cannot read <path>"
    # relative names, ratios and request paths are not absolute paths
    for kept in ("file 'modes/rot0.onnx' changed since open", "float32/float64 values",
                 "a / b"):
        assert redact(kept) == kept
    assert redact.values({"rot0": f"gone: {root}/modes/rot0.onnx", "n": 1}) == \
        {"rot0": "gone: my-bundle/modes/rot0.onnx", "n": 1}


@pytest.fixture
def broken(tiny_bundle, tmp_path):
    """A lazily opened copy of the bundle whose rot45 file vanished after open."""
    copy = tmp_path / "served-bundle"
    shutil.copytree(tiny_bundle, copy)
    rt = ModeRuntime.open(copy, lazy=True)
    (copy / "modes" / "rot45.onnx").unlink()
    return rt, str(tmp_path)


def test_no_absolute_path_in_any_answer(broken):
    rt, secret = broken
    with BackgroundServer(rt) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        # the failed load makes the runtime's reason name the bundle (absolute, as opened)
        answers = {
            "infer": c.post("/v2/models/rot45/infer", json=INFER),
            "predict": c.post("/modes/rot45/predict", json={"inputs": X.tolist()}),
            "health": c.get("/health"),
            "ready": c.get("/v2/models/rot45/ready"),
        }
    statuses = {k: r.status_code for k, r in answers.items()}
    assert statuses == {"health": 200, "ready": 400, "infer": 503, "predict": 503}
    for name, r in answers.items():
        assert secret not in r.text, (name, r.text)
        assert "'served-bundle'" in r.text, (name, r.text)
    assert answers["health"].json()["status"] == "degraded"
    assert "missing from bundle 'served-bundle'" in answers["predict"].json()["detail"]


class _FailingModel:
    """The model deployment's handle: its replica raised ``cause``."""

    def __init__(self, cause):
        self.cause = cause

    def options(self, **kwargs):
        return self

    @property
    def run(self):
        return self

    async def remote(self, x):
        raise self.cause


def test_ray_ingress_answers_without_absolute_paths(tiny_bundle):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed")
    from taugate.server.ray_app import RayServeConfig, TaugateIngress

    cause = BundleIntegrityError(f"rot0: file 'modes/rot0.onnx': missing from bundle "
                                 f"{str(tiny_bundle)!r}")
    ingress = TaugateIngress(_FailingModel(cause), RayServeConfig(tiny_bundle))
    req = HttpRequest("POST", "/v2/models/rot0/infer", {}, json.dumps(INFER).encode())
    answer = asyncio.run(ingress.handler.handle_async(
        req, lambda mode, x: ingress._run(mode, x, {})))
    assert answer.status == 503
    assert json.loads(answer.body)["error"] == (f"rot0: file 'modes/rot0.onnx': missing from "
                                                f"bundle {tiny_bundle.name!r}")


def test_docs_work_offline(tiny_bundle):
    with BackgroundServer(ModeRuntime.open(tiny_bundle, lazy=True)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        docs, redoc, spec = c.get("/docs"), c.get("/redoc"), c.get("/openapi.json")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    page = docs.text.lower()
    # nothing is loaded from anywhere: no script, no external stylesheet, image or font
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "cdn" not in page and "src=" not in page
    assert docs.headers["content-security-policy"].startswith("default-src 'none'")
    # it says where the full description is, and lists every endpoint
    assert "href='/openapi.json'" in page and "offline" in page
    assert spec.status_code == 200
    for path in spec.json()["paths"]:
        assert path.lower() in page
    assert redoc.status_code == 404  # Redoc loads its JavaScript from a CDN too
