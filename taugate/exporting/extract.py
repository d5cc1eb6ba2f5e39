"""One mode of any bundle as one self-contained ONNX file that plain onnxruntime opens.

A standalone-layout mode graph already holds its weights; a shared-layout one is weightless:
its initializers are materialized from the backbone and the mode's own tensors
(taugate/bundle/materialize.py), read through the bundle's verified reader (paths, sha256,
operator checks), and written into a copy of the graph. The result computes exactly what the
runtime computes for that mode.
"""

from __future__ import annotations

from pathlib import Path

from taugate.bundle.atomic import write_bytes
from taugate.bundle.files import BundleFiles
from taugate.bundle.manifest import load_manifest, variant_entry
from taugate.bundle.names import DENSE


def extract_mode(bundle: str | Path, mode: str, out: str | Path, precision: str = "fp32",
                 overwrite: bool = False) -> Path:
    """Write ``mode`` of ``bundle`` (``"dense"`` for the dense model) in ``precision`` as one
    self-contained ONNX file at ``out``; returns its path."""
    import onnx
    from onnx import numpy_helper

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out.name}: already exists; pass --force to replace it")
    root, manifest = load_manifest(bundle)
    entry = manifest.entry(mode)
    if entry is None:
        raise ValueError(f"--mode {mode!r}: not in the bundle; expected one of "
                         f"{', '.join([DENSE, *manifest.modes])}")
    served = variant_entry(entry, precision)
    if served is None:
        raise ValueError(f"--precision {precision}: mode {mode!r} has no {precision} variant in "
                         f"this bundle (export it with `taugate export --precision "
                         f"fp32,{precision}`)")
    files = BundleFiles(root, manifest)
    proto = onnx.load_from_string(files.read(served, stamp=False))
    initializers = files.initializers(served)
    if initializers:
        for t in proto.graph.initializer:
            if t.name in initializers:
                t.CopyFrom(numpy_helper.from_array(initializers[t.name], t.name))
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(out, proto.SerializeToString())
