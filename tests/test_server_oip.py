"""The Open Inference Protocol v2 (taugate.server.oip) on a real uvicorn server: metadata, JSON
and binary tensors, and errors, checked against ModeRuntime.run."""

from __future__ import annotations

import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer

X = np.random.default_rng(7).random((5, 784), dtype=np.float32)
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


@pytest.fixture(scope="module")
def client(runtime):
    with BackgroundServer(runtime, max_body_bytes=256 * 1024) as server, \
            httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def tensor(x: np.ndarray, binary: bool, name: str = "pixels", datatype: str = "FP32") -> dict:
    t = {"name": name, "shape": list(x.shape), "datatype": datatype}
    if binary:
        t["parameters"] = {"binary_data_size": x.nbytes}
    else:
        t["data"] = x.reshape(-1).tolist()
    return t


def infer_body(x: np.ndarray, binary_in: bool, **request) -> tuple[bytes, dict]:
    """An inference body and its headers, framed as the binary extension says when needed."""
    header = json.dumps({"inputs": [tensor(x, binary_in)], **request}).encode()
    if not binary_in:
        return header, {}
    return header + x.astype("<f4").tobytes(), {HEADER: str(len(header))}


def decode(response) -> tuple[dict, dict]:
    """(the JSON answer, {output name: array}) of an inference response, binary or not."""
    n = response.headers.get(HEADER)
    body = response.content
    answer = json.loads(body[:int(n)] if n is not None else body)
    arrays, offset = {}, int(n) if n is not None else 0
    for out in answer["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[out["name"]] = np.asarray(out["data"], np.float32).reshape(out["shape"])
        else:
            arrays[out["name"]] = np.frombuffer(body[offset:offset + size], "<f4").reshape(
                out["shape"])
            offset += size
    assert offset == (len(body) if n is not None else 0)
    return answer, arrays


SERVER_ROUTES = [
    ("/v2/health/live", {"live": True}),
    ("/v2/health/ready", {"ready": True}),
    ("/v2/models/rot0/ready", {"name": "rot0", "ready": True}),
    ("/v2/models/dense/versions/1/ready", {"name": "dense", "ready": True}),
]


@pytest.mark.parametrize("path,expected", SERVER_ROUTES, ids=[r[0] for r in SERVER_ROUTES])
def test_health_routes(client, path, expected):
    r = client.get(path)
    assert r.status_code == 200 and r.json() == expected


def test_server_metadata(client):
    meta = client.get("/v2").json()
    assert meta["name"] == "taugate" and "binary_tensor_data" in meta["extensions"]
    assert isinstance(meta["version"], str) and meta["version"]


@pytest.mark.parametrize("mode", ["rot0", "rot45", "dense"])
def test_model_metadata_follows_the_manifest(client, runtime, mode):
    meta = client.get(f"/v2/models/{mode}").json()
    assert meta == client.get(f"/v2/models/{mode}/versions/1").json()
    spec_in, spec_out = runtime.manifest.input, runtime.manifest.output
    assert meta["name"] == mode and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": spec_in.name, "datatype": "FP32",
                               "shape": [-1, spec_in.features]}]
    assert meta["outputs"] == [{"name": spec_out.name, "datatype": "FP32",
                                "shape": [-1, spec_out.classes]}]


@pytest.mark.parametrize("mode", ["rot0", "rot45", "dense"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_infer_matches_the_runtime(client, runtime, mode, binary_in, binary_out):
    body, headers = infer_body(X, binary_in, id=f"req-{mode}",
                               parameters={"binary_data_output": binary_out})
    r = client.post(f"/v2/models/{mode}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (HEADER.lower() in r.headers) == binary_out
    answer, arrays = decode(r)
    assert answer["id"] == f"req-{mode}" and answer["model_name"] == mode
    assert answer["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_array_equal(arrays["logits"], runtime.run(mode, X))


def test_infer_versions_path_nested_data_and_output_selection(client, runtime):
    images = X.reshape(5, 28, 28)
    body = {"inputs": [{"name": "pixels", "shape": [5, 28, 28], "datatype": "FP32",
                        "data": images.tolist()}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    r = client.post("/v2/models/rot45/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    answer, arrays = decode(r)
    assert "id" not in answer and answer["model_version"] == "1"
    np.testing.assert_array_equal(arrays["logits"], runtime.run("rot45", X))


def test_binary_input_at_an_unaligned_offset(client, runtime):
    # A JSON header of odd length puts the floats at an unaligned address.
    body, headers = infer_body(X[:1], True, id="x")
    assert len(json.loads(body[:int(headers[HEADER])])["id"]) % 2 == 1
    r = client.post("/v2/models/rot0/infer", content=body, headers=headers)
    np.testing.assert_array_equal(decode(r)[1]["logits"], runtime.run("rot0", X[:1]))


def _json(obj) -> dict:
    return {"content": json.dumps(obj).encode()}


def _binary(header: dict, raw: bytes, length: int | None = None) -> dict:
    head = json.dumps(header).encode()
    return {"content": head + raw, "headers": {HEADER: str(len(head) if length is None
                                                          else length)}}


GOOD = tensor(X[:2], False)
GOOD_BIN = tensor(X[:2], True)
RAW = X[:2].astype("<f4").tobytes()
BAD_INFERS = [
    ("unknown-model", "rot90", _json({"inputs": [GOOD]}), 404, "unknown model 'rot90'"),
    ("malformed-json", "rot0", {"content": b"{inputs"}, 400, "malformed JSON"),
    ("not-an-object", "rot0", _json([1]), 400, "expected a JSON object"),
    ("no-inputs", "rot0", _json({}), 400, "inputs: expected a list holding one tensor"),
    ("two-inputs", "rot0", _json({"inputs": [GOOD, GOOD]}), 400, "holding one tensor"),
    ("wrong-name", "rot0", _json({"inputs": [{**GOOD, "name": "x"}]}), 400,
     "model has one input 'pixels'"),
    ("wrong-datatype", "rot0", _json({"inputs": [{**GOOD, "datatype": "INT64"}]}), 400,
     "datatype: expected 'FP32'"),
    ("bad-shape", "rot0", _json({"inputs": [{**GOOD, "shape": [2, -784]}]}), 400,
     "shape: expected a list of non-negative integers"),
    ("size-mismatch", "rot0", _json({"inputs": [{**GOOD, "shape": [3, 784]}]}), 400,
     "holds 2352 values, data has 1568"),
    ("strings", "rot0", _json({"inputs": [{**GOOD, "data": ["a"] * 1568}]}), 400,
     "data: expected a (possibly nested) list of numbers"),
    ("ragged", "rot0", _json({"inputs": [{**GOOD, "data": [[0.5] * 784, [0.5]]}]}), 400,
     "list of numbers"),
    ("no-data", "rot0", _json({"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}),
     400, "expected data"),
    ("wrong-width", "rot0", _json({"inputs": [tensor(X[:2, :700], False)]}), 400,
     "unsupported shape"),
    ("out-of-range", "rot0", _json({"inputs": [tensor(X[:2] * 255, False)]}), 400,
     "values must lie in [0, 1]"),
    ("nan", "rot0", {"content": json.dumps({"inputs": [{**GOOD, "data": [float("nan")] * 1568}]
                                            }).encode()}, 400, "finite"),
    ("empty-batch", "rot0", _json({"inputs": [{**GOOD, "shape": [0, 784], "data": []}]}), 400,
     "empty batch"),
    ("unknown-output", "rot0", _json({"inputs": [GOOD], "outputs": [{"name": "probs"}]}), 400,
     "unknown output 'probs'"),
    ("classification", "rot0", _json({"inputs": [GOOD], "outputs": [
        {"name": "logits", "parameters": {"classification": 3}}]}), 400, "not supported"),
    ("id-not-string", "rot0", _json({"id": 3, "inputs": [GOOD]}), 400, "id: expected a string"),
    ("bad-binary-flag", "rot0", _json({"inputs": [GOOD], "parameters": {
        "binary_data_output": "yes"}}), 400, "binary_data_output: expected true or false"),
    ("bad-version", "rot0", _json({"inputs": [GOOD]}), 404, "has no version '2'"),
    ("binary-short", "rot0", _binary({"inputs": [GOOD_BIN]}, RAW[:-4]), 400,
     "runs past the 6268 bytes"),
    ("binary-extra", "rot0", _binary({"inputs": [GOOD_BIN]}, RAW + b"1234"), 400,
     "4 bytes after the JSON header belong to no input"),
    ("binary-size-mismatch", "rot0", _binary({"inputs": [{**GOOD_BIN, "parameters": {
        "binary_data_size": 100}}]}, RAW), 400, "does not match shape [2, 784]"),
    ("binary-and-data", "rot0", _binary({"inputs": [{**GOOD_BIN, "data": [0.5]}]}, RAW), 400,
     "both binary_data_size and data"),
    ("binary-no-header-length", "rot0", {"content": json.dumps({"inputs": [GOOD_BIN]}).encode()
                                         + RAW}, 400, "malformed JSON"),
    ("binary-bad-header-length", "rot0", _binary({"inputs": [GOOD_BIN]}, RAW, length=10**9),
     400, "Inference-Header-Content-Length: expected an integer from 0"),
    ("binary-nan", "rot0", _binary({"inputs": [GOOD_BIN]}, np.full(1568, np.nan, "<f4")
                                   .tobytes()), 400, "finite"),
    # strict JSON: numbers only, no numpy conversion of strings/booleans/null, bounded parsing
    ("booleans", "rot0", _json({"inputs": [{**GOOD, "data": [True] * 1568}]}), 400,
     "no strings, booleans or null"),
    ("a-boolean-among-numbers", "rot0", _json({"inputs": [{**GOOD, "data": [0.5] * 1567
                                                           + [False]}]}), 400,
     "no strings, booleans or null"),
    ("numeric-strings", "rot0", _json({"inputs": [{**GOOD, "data": ["0.5"] * 1568}]}), 400,
     "no strings, booleans or null"),
    ("null", "rot0", _json({"inputs": [{**GOOD, "data": [None] * 1568}]}), 400,
     "no strings, booleans or null"),
    ("nested-deeper-than-8", "rot0", _json({"inputs": [{**GOOD, "shape": [1] * 8,
                                                        "data": [[[[[[[[[[0.5]]]]]]]]]]}]}),
     400, "no strings, booleans or null"),
    ("nested-20k", "rot0", {"content": b'{"inputs": [{"data": ' + b"[" * 20_000
                            + b"]" * 20_000 + b"}]}"}, 400, "nested too deeply"),
    ("5000-digit-int", "rot0", {"content": b'{"inputs": [{"name": "pixels", "datatype": "FP32",'
                                b' "shape": [1], "data": [' + b"1" * 5000 + b"]}]}"}, 400,
     "malformed JSON"),
    ("400-digit-int", "rot0", _json({"inputs": [{**GOOD, "shape": [1], "data": [10**400]}]}), 400,
     "beyond the float32 range"),
    ("beyond-float32", "rot0", _json({"inputs": [{**GOOD, "data": [1e300] * 1568}]}), 400,
     "beyond the float32 range"),
]


@pytest.mark.parametrize("mode,kwargs,status,message", [b[1:] for b in BAD_INFERS],
                         ids=[b[0] for b in BAD_INFERS])
def test_bad_inference_requests_get_protocol_errors(client, mode, kwargs, status, message):
    path = f"/v2/models/{mode}/infer"
    if message.startswith("has no version"):
        path = f"/v2/models/{mode}/versions/2/infer"
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.text
    # an error answered without fully parsing the request closes the connection
    assert (r.headers.get("connection") == "close") == (status in (400, 413))
    assert client.get("/v2/health/live").status_code == 200  # still serving


def test_unknown_model_metadata_and_readiness(client):
    for path in ("/v2/models/rot90", "/v2/models/rot90/ready", "/v2/models/rot0/versions/9"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json(), path


@pytest.mark.parametrize("x,problem", [
    (X[:2, :700], "unsupported shape"),
    (X[:2] * 255, "values must lie in [0, 1]"),
], ids=["shape", "range"])
def test_every_path_refuses_with_the_runtimes_message(client, runtime, x, problem):
    """JSON API, OIP JSON and OIP binary: the same refusal text, the runtime's own."""
    with pytest.raises(ValueError) as exc_info:
        runtime.run("rot0", x)
    expected = str(exc_info.value)
    assert problem in expected
    taugate = client.post("/modes/rot0/predict", json={"inputs": x.tolist()}).json()["detail"]
    oip_json = client.post("/v2/models/rot0/infer", content=infer_body(x, False)[0]).json()
    body, headers = infer_body(x, True)
    oip_bin = client.post("/v2/models/rot0/infer", content=body, headers=headers).json()
    assert taugate == oip_json["error"] == oip_bin["error"] == expected


def test_body_limit_applies_to_the_protocol(client):
    x = np.zeros((100, 784), np.float32)  # 313 KB binary, over the 256 KB limit
    body, headers = infer_body(x, True)
    r = client.post("/v2/models/rot0/infer", content=body, headers=headers)
    assert r.status_code == 413 and "error" in r.json()


def test_openapi_lists_the_protocol(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v2", "/v2/health/live", "/v2/models/{mode}", "/v2/models/{mode}/infer",
            "/v2/models/{mode}/versions/{version}/infer"} <= set(paths)
    content = paths["/v2/models/{mode}/infer"]["post"]["requestBody"]["content"]
    assert "inputs" in content["application/json"]["schema"]["properties"]
    assert "application/octet-stream" in content
