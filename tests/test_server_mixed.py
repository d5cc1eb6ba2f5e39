"""The Open Inference Protocol's mixed-mode model (taugate/server/oip.py, oip_body.py,
oip_bytes.py): one request whose row i runs in the mode its BYTES ``mode`` input names, exact
against per-mode runs, and refused with a 400 that says what was wrong."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from taugate.runtime import ModeRuntime
from taugate.server.messages import HttpRequest
from taugate.server.oip_body import HEADER_LENGTH
from taugate.server.protocol import ProtocolHandler

X = np.random.default_rng(3).random((3, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


@pytest.fixture(scope="module")
def handler(runtime):
    return ProtocolHandler(runtime)


def _bytes_tensor(names) -> bytes:
    return b"".join(len(s).to_bytes(4, "little") + s for s in (n.encode() for n in names))


def _binary_body(names, raw_modes: bytes | None = None, x=X) -> tuple[bytes, dict]:
    raw_modes = _bytes_tensor(names) if raw_modes is None else raw_modes
    raw_x = x.tobytes()
    head = json.dumps({"inputs": [
        {"name": "mode", "shape": [len(names)], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(raw_modes)}},
        {"name": "pixels", "shape": list(x.shape), "datatype": "FP32",
         "parameters": {"binary_data_size": len(raw_x)}}],
        "parameters": {"binary_data_output": False}}).encode()
    return head + raw_modes + raw_x, {HEADER_LENGTH: str(len(head))}


def _post(handler, runtime, body: bytes, headers=None, model="mixed"):
    res = handler.handle(HttpRequest("POST", f"/v2/models/{model}/infer", headers or {}, body),
                         runtime.run)
    return res.status, json.loads(res.body)


def test_binary_bytes_listed_before_the_rows_is_exact(handler, runtime):
    names = ["rot45", "dense", "rot45"]
    status, answer = _post(handler, runtime, *_binary_body(names))
    assert status == 200, answer
    logits = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(3, -1)
    np.testing.assert_array_equal(logits[[0, 2]], runtime.run("rot45", X[[0, 2]]))
    np.testing.assert_array_equal(logits[[1]], runtime.run("dense", X[[1]]))
    assert handler.metrics.seen("mixed")


@pytest.mark.parametrize("raw, match", [
    (b"\x05\x00\x00\x00rot0", r"'mode'\[0\]: length 5 runs past the 4 bytes left"),
    (_bytes_tensor(["rot0"] * 2), r"ends after 2 of the 3 elements"),
    (_bytes_tensor(["rot0"] * 3) + b"xx", r"2 bytes after its 3 elements"),
    (b"".join(b"\x01\x00\x00\x00\xff" for _ in range(3)), r"expected UTF-8 text"),
])
def test_malformed_binary_bytes_are_refused(handler, runtime, raw, match):
    status, answer = _post(handler, runtime, *_binary_body(["rot0"] * 3, raw))
    assert status == 400
    assert re.search(match, answer["error"]), answer


@pytest.mark.parametrize("tensor, match", [
    ({"datatype": "FP32", "shape": [3], "data": [1, 2, 3]}, "expected 'BYTES'"),
    ({"datatype": "BYTES", "shape": [3, 1], "data": ["rot0"] * 3}, r"expected \[N\]"),
    ({"datatype": "BYTES", "shape": [3], "data": ["rot0", 1, "rot0"]}, "flat list of strings"),
    ({"datatype": "BYTES", "shape": [3], "data": ["rot0"] * 2}, "holds 3 values, data has 2"),
    ({"datatype": "BYTES", "shape": [3], "data": ["rot0", "auto", "rot0"]},
     r"'mode'\[1\]: unknown mode 'auto'"),
    ({"datatype": "BYTES", "shape": [3]}, "expected data"),
])
def test_bad_json_mode_tensors_are_refused(handler, runtime, tensor, match):
    body = {"inputs": [{"name": "pixels", "shape": [3, 784], "datatype": "FP32",
                        "data": X.reshape(-1).tolist()}, {"name": "mode", **tensor}]}
    status, answer = _post(handler, runtime, json.dumps(body).encode())
    assert status == 400
    assert re.search(match, answer["error"]), answer


def test_the_mode_input_only_on_the_mixed_model(handler, runtime):
    body = {"inputs": [{"name": "pixels", "shape": [3, 784], "datatype": "FP32",
                        "data": X.reshape(-1).tolist()},
                       {"name": "mode", "shape": [3], "datatype": "BYTES", "data": ["rot0"] * 3}]}
    status, answer = _post(handler, runtime, json.dumps(body).encode(), model="rot0")
    assert status == 400 and "one tensor object" in answer["error"]
    body["inputs"].append(dict(body["inputs"][1]))
    status, answer = _post(handler, runtime, json.dumps(body).encode())
    assert status == 400 and "2 tensor objects ('pixels' and 'mode'), got 3" in answer["error"]
