"""Shared-backbone graphs: how a mode's initializers are rebuilt from the backbone, and the
weightless graph that declares them (docs/bundle-v2.md, section 4).

Pure: a standalone (weights inside, checked) ``onnx.ModelProto`` plus one :class:`Recipe` per
initializer in, a weightless proto plus the manifest's ``materialize`` steps out. Every recipe is
built with the runtime's own numpy code (:mod:`taugate.bundle.materialize`) and compared bit for
bit with the standalone graph's initializer, so a materialized mode computes exactly what its
standalone graph computes, or the export fails here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from taugate.bundle.lowrank import with_lowrank
from taugate.bundle.manifest import MaterializeStep
from taugate.bundle.materialize import build_initializer
from taugate.bundle.schema import scale_pairs

SENTINEL = "@taugate/materialized"  # the external-data "location": never a file


@dataclass(frozen=True)
class Recipe:
    """One initializer as a function of the backbone and the mode's own tensors."""

    source: str  # "backbone" | "mode"
    tensor: str  # name in the backbone (state-dict key) or in the mode file
    take: tuple = ()  # ((axis, index tensor name in the mode file), ...)
    scale: tuple | None = None  # (axis, vector name in the mode file), or several such pairs
    add: str | None = None  # tensor name in the mode file
    lowrank: object = None  # bundle.lowrank.LowRank: U @ V added to the taken rows, or None


@dataclass
class GraphExport:
    """One graph of a bundle: standalone ``proto`` and, for a shared-backbone graph, the recipe of
    each initializer it takes from the backbone, plus the mode's own tensors they use."""

    proto: onnx.ModelProto  # weights inside, checked
    recipes: dict | None = None  # initializer name -> Recipe; None: written self-contained
    tensors: dict = field(default_factory=dict)  # the mode file: name -> np.ndarray
    backbone: dict = field(default_factory=dict)  # backbone tensors the recipes read


def _sentinel(init: TensorProto) -> TensorProto:
    out = TensorProto()
    out.name, out.data_type = init.name, init.data_type
    out.dims.extend(init.dims)
    out.data_location = TensorProto.EXTERNAL
    entry = out.external_data.add()
    entry.key, entry.value = "location", SENTINEL
    return out


def _strip_names(proto: onnx.ModelProto) -> None:
    """Drop node names and doc strings and shorten intermediate value names: they are most of
    a small weightless graph's bytes. Inputs, outputs and initializers keep their names."""
    g = proto.graph
    keep = {v.name for v in (*g.input, *g.output)} | {i.name for i in g.initializer}
    short: dict[str, str] = {}
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        for names in (node.input, node.output):
            for j, name in enumerate(names):
                if name and name not in keep:
                    names[j] = short.setdefault(name, f"v{len(short)}")
    del g.value_info[:]
    proto.doc_string = ""


def weightless(graph: GraphExport, where: str) -> tuple[onnx.ModelProto, list[dict]]:
    """(weightless proto, manifest ``materialize`` steps) for a shared-backbone graph.

    Raises ValueError when a recipe does not rebuild its initializer bit for bit.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(graph.proto)
    steps = []
    inits = proto.graph.initializer
    for init in inits:
        recipe = graph.recipes.get(init.name)
        if recipe is None:
            continue  # a small constant of the exporter's: stays in the graph
        want = numpy_helper.to_array(init)
        step = MaterializeStep(init.name, recipe.source, recipe.tensor, tuple(recipe.take),
                               recipe.scale, recipe.add, str(want.dtype), tuple(want.shape))
        if recipe.lowrank is not None:
            step = with_lowrank(step, recipe.lowrank)
        got = build_initializer(step, graph.backbone, graph.tensors, where)
        if got.dtype != want.dtype or got.shape != want.shape or \
                got.tobytes() != np.ascontiguousarray(want).tobytes():
            raise ValueError(f"{where}: initializer {init.name!r}: the recipe {recipe} does not "
                             f"rebuild the exported tensor bit for bit")
        init.CopyFrom(_sentinel(init))
        fields = {"name": step.name, "source": step.source, "tensor": step.tensor}
        if step.take:  # absent keys mean none (keeps a thousand-mode manifest small)
            fields["take"] = [list(t) for t in step.take]
        if recipe.lowrank is not None:
            fields["lowrank"] = recipe.lowrank.to_json()
        if step.scale:  # one pair in the short form older readers know
            pairs = [list(p) for p in scale_pairs(step.scale)]
            fields["scale"] = pairs[0] if len(pairs) == 1 else pairs
        if step.add:
            fields["add"] = step.add
        steps.append({**fields, "dtype": step.dtype, "shape": list(step.shape)})
    _strip_names(proto)
    # recipes of tensors the exporter left out of the graph (unused ones) are simply not needed
    return proto, steps
