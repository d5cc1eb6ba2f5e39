"""``mode="auto"`` for prompts: the LM bundle's prompt router, fitted at export, checked like
every bundle file, used by the Generator, `taugate predict --mode auto` and the HTTP app."""

import json
import shutil

import numpy as np
import pytest

from taugate.bundle.errors import BundleFormatError, BundleIntegrityError, RuntimeConfigError
from taugate.cli import main
from taugate.exporting.lm_bundle import write_lm_bundle
from taugate.exporting.lm_router import add_router, fit_router
from taugate.runtime.generate import Generator
from taugate.runtime.lm_auto import RoutedGenerator, UnknownPromptError
from taugate.runtime.lm_router import UNKNOWN, LMRouter
from taugate.training.lm.corpus import load_corpus
from tests.lm_fixtures import foundation, mode

CODE = b"    def __init__(self, x):\n        self._x = x[0]\n"
PROSE = b"The value of the expression is the object that the "
CJK = "这是一个用中文写的句子，不是代码。".encode()


@pytest.fixture(scope="module")
def texts():
    corpus = load_corpus({"code": 60_000, "prose": 60_000})
    return {name: corpus[name].train for name in ("code", "prose")}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, texts):
    base = foundation()
    modes = {"code": mode(base, seed=3), "prose": mode(base, seed=4)}
    root = tmp_path_factory.mktemp("lmroute")
    routed = write_lm_bundle(base, modes, root / "routed", precisions=("fp32",),
                             router_texts=texts)
    plain = write_lm_bundle(base, modes, root / "plain", precisions=("fp32",))
    return routed, plain


def test_the_router_names_each_domain_and_flags_foreign_bytes(texts):
    router = fit_router(texts)
    assert router.route(np.frombuffer(CODE, np.uint8)).mode == "code"
    assert router.route(np.frombuffer(PROSE, np.uint8)).mode == "prose"
    assert router.route(np.frombuffer(CJK, np.uint8)).mode == UNKNOWN
    noise = np.random.default_rng(0).integers(0, 256, 48)
    assert router.route(noise).mode == UNKNOWN
    again = LMRouter.from_json(router.to_json())
    assert again.route(np.frombuffer(CODE, np.uint8)) == router.route(np.frombuffer(CODE,
                                                                                     np.uint8))


def test_auto_generates_in_the_routed_mode(bundles):
    routed, _ = bundles
    auto = Generator.open(routed, "auto")
    assert isinstance(auto, RoutedGenerator)
    for prompt, name in ((CODE, "code"), (PROSE, "prose")):
        assert auto.choose(prompt)[1] == name
        assert list(auto.text(prompt, 8)) == list(Generator.open(routed, name).text(prompt, 8))
    with pytest.raises(UnknownPromptError, match="no known domain"):
        auto.text(CJK, 4)
    dense = RoutedGenerator.open(routed, unknown="dense")
    assert list(dense.text(CJK, 4)) == list(Generator.open(routed, "dense").text(CJK, 4))


def test_a_bundle_without_a_router_refuses_auto_by_name(bundles, capsys):
    _, plain = bundles
    with pytest.raises(RuntimeConfigError, match="taugate lm-router"):
        Generator.open(plain, "auto")
    assert main(["predict", str(plain), "--mode", "auto", "--prompt", "hi"]) == 2
    assert "no prompt router" in capsys.readouterr().err
    assert list(Generator.open(plain, "code").text(CODE, 3))  # the rest keeps working


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_the_router_file_is_checked_like_every_bundle_file(bundles, tmp_path):
    routed, _ = bundles
    copy = shutil.copytree(routed, tmp_path / "b")
    manifest = _manifest(copy)
    assert manifest["router"]["classes"] == ["code", "prose"]
    (copy / "router.json").write_text((copy / "router.json").read_text().replace("0", "1", 1))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        Generator.open(copy, "auto")
    manifest["router"]["classes"] = ["code", "poetry"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleFormatError, match="router.classes"):
        Generator.open(copy, "code")


def test_add_router_writes_a_routed_copy(bundles, texts, tmp_path):
    _, plain = bundles
    before = (plain / "manifest.json").read_bytes()
    out = add_router(plain, tmp_path / "new", texts)
    assert (plain / "manifest.json").read_bytes() == before
    assert RoutedGenerator.open(out).choose(CODE)[1] == "code"
    with pytest.raises(ValueError, match="one text per mode"):
        add_router(plain, tmp_path / "other", {"code": texts["code"]})
    assert not (tmp_path / "other").exists()


def test_predict_and_http_report_the_routed_mode(bundles, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from taugate.server.lm_app import create_lm_app

    routed, plain = bundles
    assert main(["predict", str(routed), "--mode", "auto", "--prompt", CODE.decode(),
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr()
    assert "routed to code" in out.err
    assert out.out == "".join(Generator.open(routed, "code").text(CODE, 5)) + "\n"
    client = TestClient(create_lm_app(routed))
    r = client.post("/v2/models/auto/generate",
                    json={"text_input": PROSE.decode(), "parameters": {"max_tokens": 4}})
    assert r.status_code == 200 and r.json()["routed_mode"] == "prose"
    assert r.json()["model_name"] == "auto" and 0.5 <= r.json()["router_confidence"] <= 1
    with client.stream("POST", "/v2/models/auto/generate_stream",
                       json={"text_input": CODE.decode(),
                             "parameters": {"max_tokens": 4}}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line]
    assert {e["routed_mode"] for e in events} == {"code"} and events[-1]["finished"]
    r = client.post("/v2/models/auto/generate", json={"text_input": CJK.decode()})
    assert r.status_code == 422 and "no known domain" in r.json()["detail"]
    dense = TestClient(create_lm_app(routed, unknown="dense"))
    r = dense.post("/v2/models/auto/generate", json={"text_input": CJK.decode()})
    assert r.json()["routed_mode"] == "dense"
    r = TestClient(create_lm_app(plain)).post("/v2/models/auto/generate",
                                              json={"text_input": "hi"})
    assert r.status_code == 404 and "lm-router" in r.json()["detail"]


def test_ray_engine_refuses_a_language_model_bundle(bundles, capsys):
    routed, _ = bundles
    assert main(["serve", str(routed), "--engine", "ray"]) == 2
    assert "--engine fastapi only" in capsys.readouterr().err
