"""file_tensors: a graph file's initializers carried under new names byte for byte, and refused
when their data lives outside the file."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from taugate.runtime.file_tensors import graph_span, tensors_without_names
from taugate.runtime.onnx_build import model_bytes


def _model(tensor) -> bytes:
    node = helper.make_node("Add", ["x", tensor.name], ["y"])
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "xy")
    graph = helper.make_graph([node], "g", [x], [y], [tensor])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_initializers_are_carried_under_a_new_name_unchanged():
    q = numpy_helper.from_array(np.array([-3, 7], np.int8), "w")
    buf = memoryview(_model(q))
    carried = tensors_without_names(buf, graph_span(buf))
    assert list(carried) == ["w"]
    data = model_bytes([("Identity", ["x"], "y", {})], {"x": 2}, ["y"], {}, [("", 17)],
                       carried={"m0/w": carried["w"]})
    back = onnx.load_from_string(data).graph.initializer[0]
    assert back.name == "m0/w" and back.data_type == TensorProto.INT8
    assert np.array_equal(numpy_helper.to_array(back), [-3, 7])


def test_external_data_is_not_carried():
    t = numpy_helper.from_array(np.ones(2, np.float32), "w")
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.external_data.add(key="location", value="elsewhere.bin")
    buf = memoryview(_model(t))
    assert tensors_without_names(buf, graph_span(buf)) is None
