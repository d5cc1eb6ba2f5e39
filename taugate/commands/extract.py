"""Write one mode of a bundle as one self-contained ONNX file (weights inside) that plain
onnxruntime, or any other ONNX runtime, opens: a shared-layout mode's weights are materialized
from the backbone into a copy of its graph. Needs onnx (the train extra)."""

from __future__ import annotations

HELP = "write one mode of a bundle as a self-contained ONNX file for another runtime"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--mode", required=True, help="the mode to write (or dense)")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="fp32 (default) or int8 (the mode's int8 variant, when exported)")
    p.add_argument("--force", action="store_true", help="replace an existing file")


def run(args) -> int:
    from taugate.exporting.extract import extract_mode

    path = extract_mode(args.bundle, args.mode, args.out, args.precision, args.force)
    print(f"{args.mode} ({args.precision}): {path}")
    return 0
