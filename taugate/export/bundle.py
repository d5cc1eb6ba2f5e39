"""The only writer of bundles: ``manifest.json`` + ``dense.onnx`` + ``modes/<mode>.onnx``.

The directory is built under a temporary name and renamed into place, so a reader never sees
a half-written bundle. The manifest schema (format_version 1) is described in README.md and
validated on load by ``taugate.runtime.manifest``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from taugate import __version__
from taugate._atomic import atomic_directory
from taugate.export.graph import BATCH, FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, build_graph
from taugate.export.hardened import HardenedModel

BUNDLE_FORMAT = "taugate-bundle"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class ModeExport:
    """One mode's compacted subnetwork and the facts the manifest records about it."""

    model: HardenedModel  # compacted
    method: str
    angle: float
    units_total: list[int]
    kept_indices: list[list[int]]
    calibration_accuracy: float
    test_accuracy: float
    extra: dict = field(default_factory=dict)  # more manifest facts (e.g. pruning report)
    variants: dict = field(default_factory=dict)  # precision -> export.variants.Variant


def graph_bytes(model: HardenedModel, name: str) -> bytes:
    """The serialized fp32 graph ``write_bundle`` writes for ``name`` (the reference that
    precision variants are quantized from and checked against)."""
    proto = build_graph(model, name, {"taugate.mode": name, "taugate.format_version": FORMAT_VERSION,
                                      "taugate.version": __version__})
    return proto.SerializeToString()


def _write_bytes(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_variants(root: Path, stem: str, variants: dict) -> dict:
    """Write ``<stem>.<precision>.onnx`` per variant; returns the manifest's ``variants``."""
    out = {}
    for precision, v in variants.items():
        rel = f"{stem}.{precision}.onnx"
        out[precision] = {"precision": precision, "file": rel,
                          "sha256": _write_bytes(root / rel, v.data),
                          "test_accuracy": v.test_accuracy, "quantization": v.quantization}
    return out


def _write_onnx(path: Path, model: HardenedModel, name: str) -> str:
    return _write_bytes(path, graph_bytes(model, name))


def build_manifest(dense: HardenedModel, dense_sha: str, modes: dict[str, ModeExport],
                   mode_shas: dict[str, str], dense_extra: dict | None = None) -> dict:
    """The manifest as a plain dict (pure)."""
    n_in, n_out = dense.layers[0].in_features, dense.layers[-1].out_features
    return {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"taugate {__version__}",
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [BATCH, n_in],
                  "range": [0.0, 1.0], "image_shape": [28, 28] if n_in == 784 else None},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [BATCH, n_out],
                   "labels": [str(i) for i in range(n_out)]},
        "dense": {"file": "dense.onnx", "sha256": dense_sha, "macs": dense.macs,
                  "units": dense.widths, **(dense_extra or {})},
        "modes": {
            name: {
                "file": f"modes/{name}.onnx",
                "sha256": mode_shas[name],
                "method": m.method,
                "angle": m.angle,
                "units_kept": m.model.widths,
                "units_total": list(m.units_total),
                "kept_indices": m.kept_indices,
                "macs": m.model.macs,
                "calibration_accuracy": m.calibration_accuracy,
                "test_accuracy": m.test_accuracy,
                **m.extra,
            }
            for name, m in modes.items()
        },
    }


def write_bundle(out: str | Path, dense: HardenedModel, modes: dict[str, ModeExport],
                 dense_extra: dict | None = None, overwrite: bool = False,
                 dense_variants: dict | None = None) -> Path:
    """Write a complete bundle to ``out`` atomically; returns its path.

    Modes' ``variants`` (and ``dense_variants``: precision -> Variant) are written beside their
    fp32 graphs as ``<file stem>.<precision>.onnx`` and recorded under the entry's
    ``variants`` key (docs/bundle-v2.md section 3); every fp32 entry records ``precision``."""
    if not modes:
        raise ValueError("modes: expected at least one mode to export")
    for name in modes:
        # names become file names inside the bundle: keep them plain
        if not _NAME_RE.match(name) or name == "dense":
            raise ValueError(
                f"mode name {name!r}: expected 1-64 letters, digits, '_', '.', '-' "
                f"(starting with a letter or digit), and not 'dense'"
            )
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        dense_sha = _write_onnx(tmp / "dense.onnx", dense, "dense")
        shas = {name: _write_onnx(tmp / "modes" / f"{name}.onnx", m.model, name)
                for name, m in modes.items()}
        manifest = build_manifest(dense, dense_sha, modes, shas, dense_extra)
        if dense_variants:
            manifest["dense"]["variants"] = _write_variants(tmp, "dense", dense_variants)
        for name, m in modes.items():
            if m.variants:
                entry = manifest["modes"][name]
                entry["precision"] = "fp32"
                entry["variants"] = _write_variants(tmp, f"modes/{name}", m.variants)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")
    return out
