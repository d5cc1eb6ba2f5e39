"""Generation from an LM bundle in the runtime (numpy + onnxruntime): streaming, sampling,
errors, timing."""

import json
import shutil

import numpy as np
import pytest
import torch

from taugate.bundle.errors import BundleIntegrityError
from taugate.exporting.lm_decode import torch_greedy
from taugate.runtime.generate import Generator, pick
from taugate.runtime.lm_speed import compare_decode_speed
from taugate.training.gating import set_hard
from tests.lm_fixtures import PROMPT, calibration, code_bundle, foundation, mode


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return code_bundle(tmp_path_factory.mktemp("lmgen") / "bundle", calibration=calibration())


def test_greedy_stream_equals_the_torch_hard_gated_mode(lm_bundle):
    gen = Generator.open(lm_bundle, "code")
    stream = gen.generate(PROMPT, 20)
    first = next(stream)  # a generator: tokens arrive one at a time
    tokens = [first, *stream]
    ref = torch_greedy(set_hard(mode(foundation()), True), torch.tensor(list(PROMPT)), 20)
    assert tokens == ref
    assert list(Generator.open(lm_bundle, "code", "int8").generate(PROMPT, 5)) != []


def test_dense_greedy_equals_torch(lm_bundle):
    tokens = list(Generator.open(lm_bundle, "dense").generate(PROMPT.decode(), 12))
    assert tokens == torch_greedy(foundation(), torch.tensor(list(PROMPT)), 12)


def test_sampling_is_seeded_and_top_k_1_is_greedy(lm_bundle):
    gen = Generator.open(lm_bundle, "code")
    a = list(gen.generate("abc", 16, temperature=1.0, seed=7))
    assert a == list(gen.generate("abc", 16, temperature=1.0, seed=7))
    assert a != list(gen.generate("abc", 16, temperature=1.0, seed=8))
    assert list(gen.generate("abc", 8, temperature=0.7, top_k=1)) == list(gen.generate("abc", 8))
    text = "".join(gen.text("abc", 16, temperature=1.0, seed=7))
    assert text == bytes(a).decode("utf-8", errors="replace")


def test_top_k_only_draws_from_the_k_largest():
    logits = np.array([[0.0, 5.0, 4.0, -1.0, 3.0]])
    rng = np.random.default_rng(0)
    drawn = {int(pick(logits, 10.0, 2, rng)[0]) for _ in range(200)}
    assert drawn == {1, 2}


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 257}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": b""}, "empty prompt"),
    ({"prompt": b"x" * 60}, "exceeds the model's context"),
])
def test_bad_requests_are_refused_clearly(lm_bundle, kwargs, match):
    gen = Generator.open(lm_bundle, "code")
    args = {"prompt": "hi", "max_new_tokens": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        gen.generate(**args)


def test_unknown_mode_precision_and_tampered_graph_are_refused(lm_bundle, tmp_path):
    with pytest.raises(ValueError, match=r"no such mode.*\['dense', 'code'\]"):
        Generator.open(lm_bundle, "prose")
    copy = shutil.copytree(lm_bundle, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    del m["modes"]["code"]["graphs"]["int8"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="precision 'int8'"):
        Generator.open(copy, "code", "int8")
    with open(copy / "modes" / "code.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        Generator.open(copy, "code")


def test_a_graph_onnxruntime_cannot_load_names_the_file_and_the_version_needed(lm_bundle,
                                                                               monkeypatch):
    import taugate.runtime.generate as generate

    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model from memory failed:"
                           "Fatal error: com.microsoft:GroupQueryAttention(-1) is not a "
                           "registered function/op")

    monkeypatch.setattr(generate.ort, "InferenceSession", refuse)
    with pytest.raises(RuntimeError, match=r"modes/code\.int8\.onnx: onnxruntime .* cannot load "
                       r"this graph \(.*GroupQueryAttention.*\); LM bundles need onnxruntime >= 1\.18"):
        Generator.open(lm_bundle, "code", "int8")


def test_decode_speed_side_by_side(lm_bundle):
    one = Generator.open(lm_bundle, "code").decode_speed("hello", 6, batch=8)
    assert one["batch"] == 8 and one["ttft_s"] > 0 and one["tokens_per_s"] > 0
    r = compare_decode_speed(lm_bundle, precisions=("fp32",), prompt="abc", new_tokens=4,
                             rounds=1)
    assert set(r["models"]) == {"dense", "code"} and r["models"]["code"]["fp32"]["ttft_s"] > 0


def test_a_graph_with_an_operator_outside_the_allowlist_never_reaches_onnxruntime(lm_bundle,
                                                                                   tmp_path):
    import hashlib

    import onnx
    from onnx import TensorProto, helper

    copy = shutil.copytree(lm_bundle, tmp_path / "b")
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = data.SerializeToString()
    onnx.load_from_string(data)
    (copy / "modes" / "code.onnx").write_bytes(data)
    m = json.loads((copy / "manifest.json").read_text())
    m["modes"]["code"]["graphs"]["fp32"]["sha256"] = hashlib.sha256(data).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleIntegrityError, match="'Hardmax'.*not allowed"):
        Generator.open(copy, "code")


def test_the_in_place_cache_matches_torch_for_a_batch(lm_bundle):
    gen = Generator.open(lm_bundle, "dense")
    model = foundation()
    ids = torch.randint(0, 256, (3, 6), generator=torch.Generator().manual_seed(2))
    decoding = gen.start(3)
    with torch.no_grad():
        ref, past = model.step(ids)
        got = decoding.feed(ids.numpy())
        for _ in range(3):
            assert np.abs(ref.numpy() - got).max() < 1e-4
            nxt = ref.argmax(-1, keepdim=True)
            ref, past = model.step(nxt, past)
            got = decoding.feed(nxt.numpy())
    assert decoding.length == 9 and decoding.room == gen.shape.context - 9


def test_teacher_forced_feeding_gives_the_greedy_stream_s_logits(lm_bundle):
    """Feeding the greedy tokens back one by one (scoring) follows generate's own path."""
    gen = Generator.open(lm_bundle, "code")
    tokens = list(gen.generate(PROMPT, 6))
    decoding = gen.start()
    logits = decoding.feed(np.frombuffer(PROMPT, np.uint8))  # [T] for one sequence
    for token in tokens:
        assert int(logits.argmax(-1)[0]) == token
        logits = decoding.feed([[token]])


@pytest.mark.parametrize("ids, match", [
    (np.zeros((2, 1), np.int64), r"expected integers shaped \[1, T >= 1\], got int64 \[2, 1\]"),
    (np.zeros((1, 0), np.int64), r"shaped \[1, T >= 1\]"),
    (np.zeros((1, 1), np.float32), r"got float32"),
    (np.array([[256]]), r"token ids in \[0, 256\), got \[256, 256\]"),
    (np.array([[-1]]), r"token ids in \[0, 256\)"),
    (np.zeros((1, 65), np.int64), r"65 tokens after 0 exceed the model's context \(64"),
])
def test_feeding_bad_ids_is_refused_and_leaves_the_cache_as_it_was(lm_bundle, ids, match):
    decoding = Generator.open(lm_bundle, "dense").start()
    with pytest.raises(ValueError, match=match):
        decoding.feed(ids)
    assert decoding.length == 0
    with pytest.raises(ValueError, match="batch: expected an integer >= 1, got 0"):
        Generator.open(lm_bundle, "dense").start(0)


def test_decode_results_has_the_fields_of_results_json(lm_bundle):
    from taugate.runtime.lm_speed import decode_results

    r = decode_results(lm_bundle, precisions=("fp32",), prompt="ab", new_tokens=3, rounds=1)
    code = r["code"]
    assert code["greedy_match"] is True and code["ffn_mac_ratio"] > 1
    assert set(code["tokens_per_s"]) == set(code["dense_tokens_per_s"]) == {"fp32"}
    assert r["_timing"]["batch"] == 1


def test_one_token_steps_share_one_binding(lm_bundle):
    """Every step of a generation runs through the binding its first step built (its
    correctness: the in-place cache test above, through the same path)."""
    gen = Generator.open(lm_bundle, "code")
    decoding = gen.start(2)
    decoding.feed(np.array([[5, 6, 7], [8, 9, 10]], np.int64))
    assert decoding._step is None  # the prompt: its own call
    bindings, outs = set(), []
    for token in (11, 12, 13):
        outs.append(decoding.feed(np.full((2, 1), token, np.int64)))
        bindings.add(id(decoding._step.binding))
    assert len(bindings) == 1 and decoding.length == 6
    assert not np.array_equal(outs[0], outs[2])  # each a copy, not the rewritten buffer
    with pytest.raises(ValueError, match=r"shaped \[2, T >= 1\]"):
        decoding.feed(np.full((1, 1), 14, np.int64))
