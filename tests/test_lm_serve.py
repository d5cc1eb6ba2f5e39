"""The generate endpoint of an LM bundle and `taugate predict --prompt`."""

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from taugate.cli import main
from taugate.runtime.generate import Generator
from taugate.server.limits import ServerLimits
from taugate.server.lm_app import create_lm_app
from tests.lm_fixtures import PROMPT, code_bundle


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return code_bundle(tmp_path_factory.mktemp("lmserve") / "bundle", precisions=("fp32",))


def _expected(bundle, mode_name, n, **kw):
    return "".join(Generator.open(bundle, mode_name).text(PROMPT, n, **kw))


def test_generate_endpoint_answers_text_output(lm_bundle):
    client = TestClient(create_lm_app(lm_bundle))
    r = client.post("/v2/models/code/generate",
                    json={"text_input": PROMPT.decode(), "parameters": {"max_tokens": 12}})
    assert r.status_code == 200
    assert r.json() == {"model_name": "code", "text_output": _expected(lm_bundle, "code", 12)}
    r = client.post("/v2/models/dense/generate", json={
        "text_input": PROMPT.decode(),
        "parameters": {"max_tokens": 6, "temperature": 0.9, "top_k": 4, "seed": 2}})
    assert r.json()["text_output"] == _expected(lm_bundle, "dense", 6, temperature=0.9,
                                                top_k=4, seed=2)
    meta = client.get("/v2/models/code").json()
    assert meta["name"] == "code" and meta["context"] == 64 and "ffn_mac_ratio" in meta
    assert client.get("/health").json()["models"] == ["dense", "code"]


@pytest.mark.parametrize("body, status, match", [
    ({"text_input": "hi", "parameters": {"temperature": -1}}, 422, "temperature"),
    ({"text_input": "hi", "parameters": {"top_k": True}}, 422, "top_k"),
    ({"text_input": "hi", "parameters": {"beam": 2}}, 422, "unknown 'beam'"),
    ({"text_input": "x" * 80}, 422, "exceeds the model's context"),
    ({"prompt": "hi"}, 422, "text_input"),
])
def test_bad_generate_requests_are_refused_without_paths(lm_bundle, body, status, match):
    r = TestClient(create_lm_app(lm_bundle)).post("/v2/models/code/generate", json=body)
    assert r.status_code == status and match in r.json()["detail"]
    assert str(lm_bundle.parent) not in r.text


def test_unknown_model_and_body_limit(lm_bundle):
    client = TestClient(create_lm_app(lm_bundle, limits=ServerLimits(max_body_bytes=64)))
    r = client.post("/v2/models/prose/generate", json={"text_input": "hi"})
    assert r.status_code == 404 and "['dense', 'code']" in r.json()["detail"]
    r = client.post("/v2/models/code/generate", json={"text_input": "y" * 100})
    assert r.status_code == 413


def test_predict_prompt_streams_to_stdout(lm_bundle, capsys):
    assert main(["predict", str(lm_bundle), "--mode", "code", "--prompt", PROMPT.decode(),
                 "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == _expected(lm_bundle, "code", 10) + "\n"
    assert main(["predict", str(lm_bundle), "--mode", "code", "--prompt", "hi",
                 "--temperature", "-2"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_serve_refuses_the_classifier_flags_and_passes_its_own(lm_bundle, capsys, monkeypatch):
    """A flag the generate server cannot honour is refused by name, never ignored."""
    import taugate.server.lm_app

    assert main(["serve", str(lm_bundle), "--batch-delay-ms", "2", "--memory-budget", "1G",
                 "--providers", "cpu", "--model-control"]) == 2
    err = capsys.readouterr().err
    assert "--providers, --memory-budget, --batch-delay-ms, --model-control: not for " \
           "language-model bundles" in err
    assert main(["serve", str(lm_bundle), "--stream-timeout", "0"]) == 2
    assert "--stream-timeout: expected seconds in (0, 3600], got 0.0" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(taugate.server.lm_app, "serve_lm",
                        lambda bundle, **kw: seen.update(kw))
    assert main(["serve", str(lm_bundle), "--precision", "int8", "--stream-timeout", "30",
                 "--port", "8123"]) == 0
    assert seen["precision"] == "int8" and seen["stream_timeout_s"] == 30.0
    assert seen["port"] == 8123
