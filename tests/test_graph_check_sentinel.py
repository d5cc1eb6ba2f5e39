"""The materialization sentinel ``@taugate/materialized`` is never a file.

Only a main-graph initializer that the manifest lists as materialized may name it; onnxruntime
would read ``./@taugate/materialized`` from the working directory for any other tensor (a
``Constant``'s value, a sparse initializer, ...).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _gated_models import MLP_TARGETS, odd_mlp, random_spec
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.graph_check import MATERIALIZED, check_model
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
from taugate.exporting.prune import PruneConfig
from taugate.runtime import BundleIntegrityError, ModeRuntime

SECRET = np.array([7.0, 8.0, 9.0], np.float32)


def _sentinel(name: str, dims=(3,)) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", MATERIALIZED
    return t


def _constant_model(where: str) -> onnx.ModelProto:
    """x [3] + k -> y, where k is a sentinel tensor living ``where``."""
    nodes = [helper.make_node("Add", ["x", "k"], ["y"])]
    inits, sparse = [], []
    if where == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["k"], value=_sentinel("k")))
    elif where == "attribute-tensors":
        nodes.insert(0, helper.make_node("Identity", ["x"], ["i"]))
        nodes[0].attribute.append(helper.make_attribute("extra", [_sentinel("k")]))
        inits.append(numpy_helper.from_array(SECRET, "k"))
    elif where == "sparse-initializer":
        idx = numpy_helper.from_array(np.array([0], np.int64), "k_idx")
        sparse.append(helper.make_sparse_tensor(_sentinel("k", (1,)), idx, [3]))
    else:  # a main-graph initializer: the one place the sentinel belongs
        inits.append(_sentinel("k"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [3])],
                              [helper.make_tensor_value_info("y", 1, [3])], inits,
                              sparse_initializer=sparse)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture()
def sentinel_cwd(tmp_path, monkeypatch):
    """A working directory that does hold a file named like the sentinel."""
    (tmp_path / "@taugate").mkdir()
    (tmp_path / "@taugate" / "materialized").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_onnxruntime_reads_a_constant_sentinel_from_the_working_directory(sentinel_cwd):
    """The attack is real: with graph optimizations off, the Constant's value is that file."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(_constant_model("constant").SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.zeros(3, np.float32)})[0], SECRET)


@pytest.mark.parametrize("where", ["constant", "attribute-tensors", "sparse-initializer"])
def test_the_sentinel_is_refused_outside_the_graph_initializers(where):
    data = _constant_model(where).SerializeToString()
    with pytest.raises(BundleIntegrityError, match=r"tensor 'k' refers to external data "
                                                   r"\(location '@taugate/materialized'\): "
                                                   r"'@taugate/materialized' is never a file"):
        check_model(data, 2, "modes/m.onnx", materialized={"k"})  # even when "k" is listed


def test_the_sentinel_on_a_listed_graph_initializer_passes():
    data = _constant_model("initializer").SerializeToString()
    assert [t.name for t in check_model(data, 2, "m", {"k"}).graph.initializers] == ["k"]
    with pytest.raises(BundleIntegrityError, match="not one the manifest lists"):
        check_model(data, 2, "m", {"other"})


# -- through a whole shared-backbone bundle ---------------------------------------------------

@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory):
    torch.manual_seed(0)
    x, y = torch.randn(40, 13), torch.randint(0, 5, (40,))
    modes = {"site-0": ModeInput(random_spec(MLP_TARGETS, seed=0), (x[:20], y[:20]),
                                 (x[20:], y[20:]))}
    root, _ = export_modes(tmp_path_factory.mktemp("shared") / "b", odd_mlp(), modes,
                           family="user", input_spec=InputSpec.plain((13,), name="features"),
                           output_spec=OutputSpec.logits(5),
                           config=ExportConfig(allow_worse=True, prune=PruneConfig(max_accuracy_drop=1.0)))
    return root


def test_a_bundle_with_a_sentinel_constant_is_refused_at_open(shared_bundle, tmp_path,
                                                              sentinel_cwd):
    root = tmp_path / "b"
    shutil.copytree(shared_bundle, root)
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["modes"]["site-0"]
    listed = entry["materialize"][0]["name"]  # a name the manifest does materialize
    proto = onnx.load_from_string((root / entry["file"]).read_bytes())
    assert any(i.name == listed for i in proto.graph.initializer)
    proto.graph.node.insert(0, helper.make_node("Constant", [], [f"{listed}.copy"],
                                                value=_sentinel(listed)))
    data = proto.SerializeToString()
    (root / entry["file"]).write_bytes(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    with ModeRuntime.open(shared_bundle, graph_optimization_level="disable") as rt:
        assert rt.run("site-0", np.zeros((1, 13), np.float32)).shape == (1, 5)  # the original
    for lazy in (False, True):
        with pytest.raises(BundleIntegrityError, match=r"site-0: file 'modes/site-0\.onnx'.*"
                                                       r"\(Constant\) attribute.*never a file"):
            ModeRuntime.open(root, lazy=lazy, graph_optimization_level="disable")
