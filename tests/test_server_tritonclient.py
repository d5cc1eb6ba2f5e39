"""A client nobody here wrote -- tritonclient[http]'s InferenceServerClient -- against the real
single-process server: the Open Inference Protocol as Triton's own client speaks it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer

X = np.random.default_rng(11).random((4, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


@pytest.fixture(scope="module")
def triton(runtime):
    with BackgroundServer(runtime) as server:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"),
                                                  network_timeout=30)
        yield client
        client.close()


def _input(x: np.ndarray, binary: bool, name: str = "pixels"):
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_liveness_readiness_and_metadata(triton, runtime):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("rot45") and not triton.is_model_ready("rot90")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata("rot45")
    assert meta["inputs"] == [{"name": runtime.manifest.input.name, "datatype": "FP32",
                               "shape": [-1, 784]}]
    assert meta["outputs"][0]["name"] == runtime.manifest.output.name


@pytest.mark.parametrize("mode", ["rot0", "rot45", "dense"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("outputs", ["default", "requested"])
def test_infer_logits_identical_to_the_runtime(triton, runtime, mode, binary, outputs):
    # outputs=None makes tritonclient ask for binary outputs; a requested output follows
    # `binary` -- so JSON and binary answers are both exercised.
    requested = (None if outputs == "default"
                 else [httpclient.InferRequestedOutput("logits", binary_data=binary)])
    result = triton.infer(mode, [_input(X, binary)], outputs=requested, request_id="r1")
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and result.get_response()["id"] == "r1"
    np.testing.assert_array_equal(logits, runtime.run(mode, X))


def test_errors_reach_the_client(triton):
    with pytest.raises(InferenceServerException, match="unknown model 'rot90'") as exc_info:
        triton.infer("rot90", [_input(X, True)])
    assert exc_info.value.status() == "404"
    with pytest.raises(InferenceServerException, match=r"values must lie in \[0, 1\]") as exc_info:
        triton.infer("rot0", [_input(X * 255, True)])
    assert exc_info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="has one input 'pixels'"):
        triton.infer("rot0", [_input(X, False, name="image")])


def _modes_input(names: list, binary: bool):
    inp = httpclient.InferInput("mode", [len(names)], "BYTES")
    inp.set_data_from_numpy(np.array(names, dtype=object), binary_data=binary)
    return inp


MIXED_ROWS = ["rot45", "rot0", "dense", "rot45"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_mixed_batch_identical_to_per_mode_runs(triton, runtime, binary):
    requested = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    result = triton.infer("mixed", [_input(X, binary), _modes_input(MIXED_ROWS, binary)],
                          outputs=requested)
    logits = result.as_numpy("logits")
    for mode in set(MIXED_ROWS):
        rows = [i for i, m in enumerate(MIXED_ROWS) if m == mode]
        np.testing.assert_array_equal(logits[rows], runtime.run(mode, X[rows]))
    meta = triton.get_model_metadata("mixed")
    assert meta["inputs"][1] == {"name": "mode", "datatype": "BYTES", "shape": [-1]}


def test_mixed_batch_refusals_reach_the_client(triton):
    with pytest.raises(InferenceServerException, match=r"'mode'\[2\]: unknown mode 'rot90'; "
                       r"valid: 'rot0', 'rot45', 'dense'") as exc_info:
        triton.infer("mixed", [_input(X, True), _modes_input(["rot0", "rot0", "rot90", "rot0"],
                                                              True)])
    assert exc_info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="3 mode names for 4 rows"):
        triton.infer("mixed", [_input(X, False), _modes_input(["rot0"] * 3, False)])
    with pytest.raises(InferenceServerException,
                       match=r"2 tensor objects \('pixels' and 'mode'\), got 1"):
        triton.infer("mixed", [_input(X, True)])
