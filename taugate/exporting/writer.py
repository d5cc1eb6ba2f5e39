"""The only writer of bundles (format_version 2, docs/bundle-v2.md).

``write_bundle_v2`` writes any model: ``manifest.json``, ``dense.onnx``, ``modes/<mode>.onnx``
and, for shared-backbone graphs, ``backbone.safetensors`` (every backbone tensor once) plus
``modes/<mode>.safetensors`` (what makes the mode a mode).
The directory is built under a temporary name and renamed into place, so a reader never sees a
half-written bundle; every file is listed in the manifest with its sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from taugate import __version__
from taugate.bundle.atomic import atomic_directory, write_bytes, write_text
from taugate.bundle.manifest import parse_manifest
from taugate.bundle.names import DENSE, check_mode_name
from taugate.bundle.safe_json import loads_strict
from taugate.bundle.safetensors_write import safetensors_bytes
from taugate.bundle.schema import BUNDLE_FORMAT, InputSpec, OutputSpec
from taugate.exporting.weightless import GraphExport, weightless

FORMAT_VERSION = 2
BACKBONE_FILE = "backbone.safetensors"


@dataclass
class BundleMode:
    """One mode of a format 2 bundle: its graph and its manifest entry's facts (``method``,
    ``facts``, ``units_kept``, ``units_total``, ``kept_indices``, ``macs``, accuracies, ...)."""

    graph: GraphExport
    entry: dict
    variants: dict = field(default_factory=dict)  # precision -> export.variants.Variant


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(root: Path, rel: str, data: bytes) -> dict:
    write_bytes(root / rel, data)  # umask permissions (taugate/bundle/atomic.py)
    return {"file": rel, "sha256": _sha(data)}


def with_metadata(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    del proto.metadata_props[:]
    helper.set_model_props(proto, {"taugate.mode": name,
                                   "taugate.format_version": str(FORMAT_VERSION),
                                   "taugate.version": __version__})
    return proto


def _merge_backbone(backbone: dict, graph: GraphExport, where: str) -> None:
    for name, arr in graph.backbone.items():
        have = backbone.get(name)
        if have is None:
            backbone[name] = arr
        elif have.dtype != arr.dtype or have.shape != arr.shape or not np.array_equal(have, arr):
            raise ValueError(f"{where}: backbone tensor {name!r} differs from another graph's: "
                             f"a shared backbone must be one set of weights")


def _write_graph(root: Path, rel: str, name: str, graph: GraphExport, backbone: dict) -> dict:
    """Write one graph (weightless + mode file when it has recipes); its manifest fields."""
    where = f"{name}: {rel}"
    if graph.recipes is None:
        proto = onnx.ModelProto()
        proto.CopyFrom(graph.proto)
        return _write(root, rel, with_metadata(proto, name).SerializeToString())
    _merge_backbone(backbone, graph, where)
    proto, steps = weightless(graph, where)
    fields = _write(root, rel, with_metadata(proto, name).SerializeToString())
    if graph.tensors:
        fields["weights"] = _write(root, rel[: -len(".onnx")] + ".safetensors",
                                   safetensors_bytes(graph.tensors))
    fields["materialize"] = steps
    return fields


def write_bundle_v2(out: str | Path, *, family: str, input_spec: InputSpec,
                    output_spec: OutputSpec,
                    dense: GraphExport, dense_entry: dict, modes: dict, targets=(),
                    overwrite: bool = False, dense_variants: dict | None = None) -> Path:
    """Write a format 2 bundle atomically; returns its path.

    input_spec / output_spec: the model's input and output (bundle/schema.py), written as the
    manifest's ``input`` / ``output`` objects (docs/bundle-v2.md);
    dense_entry: facts of the dense model (``macs``, ``units``, ``test_accuracy`` per mode);
    modes: name -> :class:`BundleMode`, or an iterable of (name, BundleMode) pairs consumed one
    at a time (thousands of modes never sit in memory together; ``dense_entry`` is read after
    the last one, so the producer may still fill it in).
    """
    for what, spec, kind in (("input_spec", input_spec, InputSpec),
                             ("output_spec", output_spec, OutputSpec)):
        if not isinstance(spec, kind):
            raise TypeError(f"{what}: expected {kind.__name__} (taugate.bundle.schema; "
                            f"{kind.__name__}.from_dict reads a manifest's object), got "
                            f"{type(spec).__name__}")
    items = modes.items() if isinstance(modes, dict) else modes
    out = Path(out)
    backbone: dict = {}
    entries: dict[str, dict] = {}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        dense_fields = _write_graph(tmp, "dense.onnx", DENSE, dense, backbone)
        for name, m in items:
            check_mode_name(name)
            if name in entries:
                raise ValueError(f"mode {name!r}: given twice")
            entries[name] = {**_write_graph(tmp, f"modes/{name}.onnx", name, m.graph, backbone),
                             **m.entry}
            if m.variants:
                entries[name]["variants"] = _write_variants(tmp, f"modes/{name}", m.variants)
        if not entries:
            raise ValueError("modes: expected at least one mode to export")
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_by": f"taugate {__version__}",
            "family": family,
            "input": input_spec.to_dict(),
            "output": output_spec.to_dict(),
            "targets": list(targets),
        }
        if backbone:
            manifest["backbone"] = _write(tmp, BACKBONE_FILE, safetensors_bytes(backbone))
        manifest["dense"] = {**dense_fields, **dense_entry}
        if dense_variants:
            manifest["dense"]["variants"] = _write_variants(tmp, "dense", dense_variants)
        manifest["modes"] = entries
        # indented for people reading a few modes; one line for thousands (bundle size)
        indent = 1 if len(entries) <= 64 else None
        text = json.dumps(manifest, indent=indent)
        _check_as_read(text)
        write_text(tmp / "manifest.json", text)
    return out


def _check_as_read(text: str) -> None:
    """Refuse to write a manifest the runtime would refuse to read (same parser, same rules):
    a bug here must fail the export, not every later open."""
    try:
        parse_manifest(loads_strict(text))
    except ValueError as exc:
        raise ValueError(f"the exporter built a manifest the runtime would refuse: {exc}") from exc


def _write_variants(root: Path, stem: str, variants: dict) -> dict:
    """Write ``<stem>.<precision>.onnx`` per variant; returns the manifest's ``variants``."""
    out = {}
    for precision, v in variants.items():
        rel = f"{stem}.{precision}.onnx"
        out[precision] = {"precision": precision, **_write(root, rel, v.data),
                          "test_accuracy": v.test_accuracy, "quantization": v.quantization}
    return out
