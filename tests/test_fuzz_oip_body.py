"""Fuzz target of the Open Inference Protocol body reader (taugate.server.oip_body, oip_tensors,
oip_modes, strict_json): JSON bodies and binary-framed bodies, generated and mutated from valid
ones. Every body either parses into a request (and, through the handler, is answered or run) or
is refused with the documented 4xx error; no other exception. Bounded and deterministic
(derandomized)."""

from __future__ import annotations

import json

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taugate.runtime import ModeRuntime
from taugate.server.messages import HttpRequest, HttpResponse, Inference
from taugate.server.oip import input_spec
from taugate.server.oip_body import HEADER_LENGTH, InferRequest, parse_infer
from taugate.server.oip_tensors import OipError
from taugate.server.protocol import ProtocolHandler

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
X = np.random.default_rng(0).random((2, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def handler(tiny_bundle):
    return ProtocolHandler(ModeRuntime.open(tiny_bundle, lazy=True))


def _valid_json() -> dict:
    return {"id": "a", "parameters": {"binary_data_output": False},
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 784],
                        "data": X.reshape(-1).tolist()}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": False}}]}


def _valid_binary() -> tuple[bytes, str]:
    head = json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 784],
                                   "parameters": {"binary_data_size": X.nbytes}}],
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
                      ).encode()
    return head + X.astype("<f4").tobytes(), str(len(head))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                     st.floats(allow_nan=False), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)
_shapes = st.one_of(st.lists(st.integers(-1, 3000), max_size=10),
                    st.lists(st.sampled_from([0, 1, 2, 784, 2 ** 31, 2 ** 40, 2 ** 64]),
                             max_size=70), _values)
# where a mutation lands in the valid body, and what it puts there
_paths = st.sampled_from([(), ("id",), ("parameters",), ("parameters", "binary_data_output"),
                          ("inputs",), ("inputs", 0), ("inputs", 0, "name"),
                          ("inputs", 0, "datatype"), ("inputs", 0, "shape"),
                          ("inputs", 0, "data"), ("inputs", 0, "parameters"),
                          ("outputs",), ("outputs", 0), ("outputs", 0, "name"),
                          ("outputs", 0, "parameters")])


def _put(obj, path, value):
    if not path:
        return value
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


def check(handler, body: bytes, header) -> None:
    """The property: a parsed request or an OipError 4xx; through the handler, an answer of
    4xx (no 500) or an inference on a checked array."""
    spec = input_spec(handler.runtime.manifest)
    try:
        parsed = parse_infer(body, header, spec, ["logits"])
    except OipError as exc:
        assert 400 <= exc.status < 500 and len(str(exc)) < 2000, exc
    else:
        assert isinstance(parsed, InferRequest) and isinstance(parsed.x, np.ndarray)
    headers = {} if header is None else {HEADER_LENGTH: header}
    routed = handler.route(HttpRequest("POST", "/v2/models/rot0/infer", headers, body))
    if isinstance(routed, HttpResponse):
        assert 400 <= routed.status < 500, routed.body[:300]
        assert "error" in json.loads(routed.body)
    else:
        assert isinstance(routed, Inference) and routed.x.dtype == np.float32


@FUZZ
@given(path=_paths, value=st.one_of(_values, _shapes))
def test_mutated_json_bodies(handler, path, value):
    body = json.dumps(_put(_valid_json(), path, value)).encode()
    check(handler, body, None)


@FUZZ
@given(data=st.data())
def test_mutated_binary_bodies(handler, data):
    body, header = _valid_binary()
    kind = data.draw(st.sampled_from(["header", "cut", "flip", "insert", "json"]))
    if kind == "header":  # a wrong Inference-Header-Content-Length
        header = data.draw(st.one_of(st.integers(-5, len(body) + 5).map(str),
                                     st.text(max_size=6)))
    elif kind == "cut":
        body = body[:data.draw(st.integers(0, len(body)))]
    elif kind == "flip":  # bytes of the JSON header or the tensor replaced
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([data.draw(st.integers(0, 255))]) + body[i + 1:]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(body)))
        body = body[:i] + data.draw(st.binary(max_size=16)) + body[i:]
    else:  # the JSON header mutated, re-framed with its true length
        head = json.loads(body[:int(header)])
        head = _put(head, data.draw(st.sampled_from(
            [("inputs", 0, "shape"), ("inputs", 0, "parameters"),
             ("inputs", 0, "parameters", "binary_data_size"), ("outputs",),
             ("inputs", 0, "datatype")])), data.draw(st.one_of(_values, _shapes)))
        raw = json.dumps(head).encode()
        body, header = raw + body[int(header):], str(len(raw))
    check(handler, body, header)


@FUZZ
@given(raw=st.binary(max_size=200), header=st.one_of(st.none(), st.integers(0, 200).map(str)))
def test_arbitrary_bytes(handler, raw, header):
    check(handler, raw, header)


_int_shapes = st.one_of(st.lists(st.integers(0, 3000), max_size=10),
                        st.lists(st.sampled_from([0, 1, 2, 784, 2 ** 31, 2 ** 40, 2 ** 64]),
                                 max_size=70))


@FUZZ
@given(shape=_int_shapes, binary=st.booleans())
def test_shapes_with_data_that_fits_them(handler, shape, binary):
    # data of exactly the shape's size where that is small (zero-size shapes included), so
    # that the shape itself, not a count mismatch, is what the reader has to judge
    count = int(np.prod([min(d, 10 ** 6) for d in shape], dtype=object)) if shape else 1
    values = [0.5] * count if count <= 4096 else []
    tensor = {"name": "pixels", "datatype": "FP32", "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": 4 * len(values)}
        head = json.dumps({"inputs": [tensor]}).encode()
        check(handler, head + np.asarray(values, "<f4").tobytes(), str(len(head)))
    else:
        tensor["data"] = values
        check(handler, json.dumps({"inputs": [tensor]}).encode(), None)
