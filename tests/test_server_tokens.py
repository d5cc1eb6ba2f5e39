"""Token bundles (a tiny BERT) over HTTP: taugate's JSON API takes {"input_ids", "attention_mask"}
or the packed form, the Open Inference Protocol two INT64 tensors; answers equal
ModeRuntime.run, refusals name what was received and what is expected."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

pytest.importorskip("transformers")  # _hf_models builds them with torch

import _hf_models as hfm

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer

IDS, MASK, _ = hfm.tokens(5, seed=3)
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def runtime(bert_bundle):
    return ModeRuntime.open(bert_bundle)


@pytest.fixture(scope="module")
def client(runtime):
    with BackgroundServer(runtime, max_body_bytes=64 * 1024) as server, \
            httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("mode", ["low", "dense"])
def test_json_api_takes_ids_and_masks_or_the_packed_form(client, runtime, mode):
    expected = runtime.run(mode, {"input_ids": IDS, "attention_mask": MASK})
    for inputs in ({"input_ids": IDS.tolist(), "attention_mask": MASK.tolist()},
                   np.stack([IDS, MASK], axis=1).tolist()):
        r = client.post(f"/modes/{mode}/predict", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["logits"], expected, rtol=1e-6)
    r = client.post(f"/modes/{mode}/predict", json={"inputs": {"input_ids": IDS[:1].tolist()}})
    np.testing.assert_allclose(r.json()["logits"],
                               runtime.run(mode, {"input_ids": IDS[:1]}), rtol=1e-6)


REFUSED = [
    ({"input_ids": (IDS + hfm.VOCAB).tolist()}, r"ids must lie in \[0, 40\).*max"),
    ({"input_ids": IDS.tolist(), "attention_mask": (MASK * 2).tolist()}, "mask must be 0 or 1"),
    ({"input_ids": IDS[:, :5].tolist()}, r"input_ids must be \[N, 12\].*shape \(5, 5\)"),
    ({"input_ids": (IDS + 0.5).tolist()}, "expected integers"),
    ({"input_ids": [["1"] * hfm.LENGTH]}, "JSON integers only"),
    ({"ids": IDS.tolist()}, "expected the keys 'input_ids'.*got the keys 'ids'"),
    ({"input_ids": [[2 ** 70] * hfm.LENGTH]}, "beyond the int64 range"),
    (IDS.tolist(), r"unsupported shape.*\(5, 12\)"),
    ({"input_ids": IDS.tolist(), "attention_mask": MASK[:2].tolist()}, "same shape"),
]


@pytest.mark.parametrize("inputs,needle", REFUSED)
def test_json_api_refuses_bad_tokens_by_name(client, inputs, needle):
    r = client.post("/modes/low/predict", json={"inputs": inputs})
    assert r.status_code == (400 if "int64 range" in needle else 422), r.text
    assert re.search(needle, r.json()["detail"]), r.json()


def test_oip_metadata_names_two_int64_inputs(client):
    meta = client.get("/v2/models/low").json()
    assert meta["inputs"] == [{"name": n, "datatype": "INT64", "shape": [-1, hfm.LENGTH]}
                              for n in ("input_ids", "attention_mask")]


def _tensors(binary: bool, ids=IDS, mask=MASK, datatype="INT64") -> tuple[bytes, dict]:
    tensors, raw = [], b""
    for name, x in (("input_ids", ids), ("attention_mask", mask)):
        t = {"name": name, "shape": list(x.shape), "datatype": datatype}
        if binary:
            t["parameters"] = {"binary_data_size": x.astype("<i8").nbytes}
            raw += x.astype("<i8").tobytes()
        else:
            t["data"] = x.reshape(-1).tolist()
        tensors.append(t)
    head = json.dumps({"inputs": tensors}).encode()
    return head + raw, {HEADER: str(len(head))} if binary else {}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_oip_infer_matches_the_runtime(client, runtime, binary):
    body, headers = _tensors(binary)
    r = client.post("/v2/models/low/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]),
                               runtime.run("low", {"input_ids": IDS, "attention_mask": MASK}),
                               rtol=1e-6)


def test_oip_refuses_bad_tokens_by_name(client):
    cases = [(_tensors(False, ids=IDS + hfm.VOCAB), r"ids must lie in \[0, 40\)"),
             (_tensors(False, mask=MASK * 3), "mask must be 0 or 1"),
             (_tensors(False, mask=MASK[:2]), r"'attention_mask' \[2, 12\]; expected the same"),
             (_tensors(False, datatype="FP32"), "datatype: expected 'INT64', got 'FP32'"),
             (_tensors(False, ids=IDS[:, :4], mask=MASK[:, :4]), r"must be \[N, 12\]")]
    for (body, headers), needle in cases:
        r = client.post("/v2/models/low/infer", content=body, headers=headers)
        assert r.status_code == 400 and re.search(needle,
                                                                         r.json()["error"])
    only_ids = {"inputs": [{"name": "input_ids", "shape": [1, hfm.LENGTH], "datatype": "INT64",
                            "data": IDS[0].tolist()}]}
    r = client.post("/v2/models/low/infer", json=only_ids)
    assert r.status_code == 400 and "2 tensor objects ('input_ids' and 'attention_mask'), " \
                                     "got 1" in r.json()["error"]
    fraction = {"inputs": [{**only_ids["inputs"][0], "data": (IDS[0] + 0.5).tolist()},
                           {**only_ids["inputs"][0], "name": "attention_mask",
                            "data": MASK[0].tolist()}]}
    r = client.post("/v2/models/low/infer", json=fraction)
    assert r.status_code == 400 and "expected integers" in r.json()["error"]


def test_tritonclient_sends_ids_and_masks(client, runtime):
    httpclient = pytest.importorskip("tritonclient.http")
    triton = httpclient.InferenceServerClient(str(client.base_url).removeprefix("http://"))
    try:
        inputs = []
        for name, x in (("input_ids", IDS), ("attention_mask", MASK)):
            inp = httpclient.InferInput(name, list(x.shape), "INT64")
            inp.set_data_from_numpy(x.astype(np.int64), binary_data=True)
            inputs.append(inp)
        logits = triton.infer("low", inputs).as_numpy("logits")
    finally:
        triton.close()
    np.testing.assert_array_equal(logits, runtime.run("low", {"input_ids": IDS,
                                                              "attention_mask": MASK}))
