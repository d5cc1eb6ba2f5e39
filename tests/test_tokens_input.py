"""Token inputs (Hugging Face text models) without transformers: the manifest's tokens layout,
the runtime's checker, mode folders of token ids, and the one shape-fed ConstantOfShape the
operator check allows."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from taugate.bundle.errors import BundleIntegrityError, InputError
from taugate.bundle.graph_check import check_model
from taugate.bundle.schema import InputSpec
from taugate.runtime.inputs import InputSpecChecker
from taugate.training.sources.folder import FolderModes
from taugate.training.sources.reading import ModeFolderError


def test_tokens_spec_round_trips_and_is_validated():
    spec = InputSpec.tokens(12, vocab=40)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert spec.token_length == 12 and spec.image_shape is None
    assert InputSpec.plain((4,)).token_length is None
    bad = {**spec.to_dict(), "dtype": "float32"}
    with pytest.raises(ValueError, match="int64"):
        InputSpec.from_dict(bad)
    with pytest.raises(ValueError, match="int64 only with a tokens layout"):
        InputSpec.from_dict({**InputSpec.plain((4,)).to_dict(), "dtype": "int64"})
    with pytest.raises(ValueError, match="length"):
        InputSpec.from_dict({**spec.to_dict(), "shape": ["batch", 2, 5]})


def test_checker_packs_dicts_and_refuses_bad_tokens():
    checker = InputSpecChecker.from_spec(InputSpec.tokens(4, vocab=10))
    ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]], np.int32)
    mask = (ids > 0).astype(bool)
    packed = checker.coerce({"input_ids": ids, "attention_mask": mask})
    assert packed.dtype == np.int64 and packed.shape == (2, 2, 4)
    assert np.array_equal(checker.coerce(packed), packed)
    assert np.array_equal(checker.coerce({"input_ids": ids[0]})[0, 1], np.ones(4))  # mask: 1s
    for bad, needle in [({"input_ids": ids + 10}, r"ids must lie in \[0, 10\).*max 15"),
                        ({"input_ids": ids, "attention_mask": ids}, "mask must be 0 or 1"),
                        ({"input_ids": ids[:, :3]}, r"input_ids must be \[N, 4\]"),
                        ({"ids": ids}, "expected the keys 'input_ids'"),
                        (ids.astype(np.float32)[:, None].repeat(2, 1), "must be integers"),
                        (np.zeros((0, 2, 4), np.int64), "empty batch")]:
        with pytest.raises(InputError, match=needle):
            checker.coerce(bad)


def _save(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_mode_folder_reads_token_ids_and_masks(tmp_path):
    ids = np.arange(24).reshape(4, 6) % 7
    mask = np.ones_like(ids)
    mask[0, 4:] = 0
    y = np.array([0, 1, 0, 1])
    _save(tmp_path / "m" / "train.npz", input_ids=ids, attention_mask=mask, y=y)
    _save(tmp_path / "m" / "test.npz", input_ids=ids, y=y)  # mask left out: all ones
    source = FolderModes(tmp_path)
    data = source.mode("m")
    assert data.test.x.shape == (4, 2, 6) and str(data.test.x.dtype) == "torch.int64"
    assert int(data.test.x[:, 1].min()) == 1
    assert source.input_spec == InputSpec.tokens(6)
    _save(tmp_path / "bad" / "train.npz", input_ids=ids, attention_mask=mask * 2, y=y)
    _save(tmp_path / "bad" / "test.npz", input_ids=ids, y=y)
    with pytest.raises(ModeFolderError, match="mask 0 or 1"):
        FolderModes(tmp_path).mode("bad")


def _graph(shape_input: str):
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
                 "c", TensorProto.INT64, [1], [1 << 40])),
             helper.make_node("ConstantOfShape", [shape_input], ["z"]),
             helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def test_constant_of_shape_only_from_a_shape_node():
    check_model(_graph("s"), 2, "shape-fed")  # allocates what an existing tensor holds
    with pytest.raises(BundleIntegrityError, match="'ConstantOfShape'.*not allowed"):
        check_model(_graph("c"), 2, "constant-fed")  # a size the file chooses: a memory bomb
