"""The linear router (``hidden=0``: mode scores as extra columns of the projection,
exporting/router_graph.py) and the default choice between it and the MLP router."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from taugate.exporting.router import RouterConfig, fit_router
from taugate.exporting.router_graph import linear_router_graph


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _spread(n: int, seed: int) -> dict:
    """Same mean, one mode twice as spread: linear in the squares."""
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(0, 1, (n, 16)), "b": rng.normal(0, 2, (n, 16))}


def _xor(n: int, seed: int) -> dict:
    """Mode a in quadrants 1 and 3, b in 2 and 4: no score linear in x and x*x tells them."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (4 * n, 2))
    x = x[np.abs(x).min(axis=1) > 0.1]
    same = x[:, 0] * x[:, 1] > 0
    return {"a": x[same][:n], "b": x[~same][:n]}


@pytest.mark.parametrize("squares", [False, True])
def test_linear_graph_answers_what_its_weights_say(squares):
    rng = np.random.default_rng(0)
    f, k, modes = 12, 5, 3
    w = rng.normal(0, 1, ((2 if squares else 1) * f, k + modes))
    w[:, k + 2] = w[:, k]  # modes 0 and 2 tie on every row: the first wins
    b = rng.normal(0, 1, k + modes)
    b[k + 2] = b[k]
    x = rng.normal(0, 1, (300, f)).astype(np.float32)
    best, distance = _session(linear_router_graph((w, b), k, 0.25, squares)).run(
        None, {"features": x})
    xs = np.concatenate([x, x * x], axis=1) if squares else x
    z = (xs.astype(np.float64) @ w + b).astype(np.float32)
    assert best.dtype == np.int64 and best.shape == (300,)
    np.testing.assert_array_equal(best, z[:, k:].argmax(axis=1))
    assert 2 not in best.tolist() and 0 in best.tolist()
    np.testing.assert_allclose(distance[:, 0], 0.25 * (z[:, :k] ** 2).sum(axis=1), rtol=1e-4)


def test_default_keeps_the_linear_router_when_it_routes_as_well():
    fitted = fit_router(_spread(300, 0), RouterConfig(steps=200))
    facts = fitted.facts
    assert facts["hidden"] == 0 and facts["holdout_accuracy"] >= 0.9
    linear, mlp = facts["holdout_accuracy_linear_mlp"]
    assert linear + 0.005 >= mlp and facts["components"] == 14  # 16 columns less 2 scores
    ops = [nd.op_type for nd in fitted.proto.graph.node]
    assert "Relu" not in ops and ops.count("Gemm") == 2 and "ArgMax" in ops
    x = np.concatenate(list(_spread(100, 5).values())).astype(np.float32)
    _, distance = _session(fitted.proto).run(None, {"features": x})
    assert float(np.mean(distance[:, 0] > fitted.threshold)) <= 0.1


def test_default_takes_the_mlp_when_the_linear_router_cannot_tell_the_modes():
    fitted = fit_router(_xor(400, 1), RouterConfig(hidden=None, steps=600))
    linear, mlp = fitted.facts["holdout_accuracy_linear_mlp"]
    assert linear < 0.75 and mlp > linear + 0.1, (linear, mlp)
    assert fitted.facts["hidden"] == 64 and fitted.facts["holdout_accuracy"] == mlp
    assert "Relu" in [nd.op_type for nd in fitted.proto.graph.node]


def test_hidden_zero_fits_only_the_linear_router():
    fitted = fit_router(_xor(100, 2), RouterConfig(hidden=0, steps=50))
    assert fitted.facts["hidden"] == 0 and "holdout_accuracy_linear_mlp" not in fitted.facts
    names = {t.name for t in fitted.proto.graph.initializer}
    assert "w1" not in names
    sq_w = numpy_helper.to_array(next(t for t in fitted.proto.graph.initializer
                                      if t.name == "sq_w"))
    assert (sq_w[-2:] == 0).all() and (sq_w[:-2] > 0).all()  # the scores are no component


@pytest.mark.parametrize("hidden", [-1, 2.5, True, "64"])
def test_router_hidden_must_be_a_count_zero_or_none(hidden):
    with pytest.raises(ValueError, match=r"router hidden: expected an integer >= 0 \(0: linear "
                                         r"scores\) or None .*got"):
        RouterConfig(hidden=hidden)
