"""Show a bundle's manifest facts and verify it: every file's path and sha256, and that every
model loads in onnxruntime with the inputs and outputs the manifest declares. Exits 1 when the
bundle fails verification."""

from __future__ import annotations

import json
import sys

from taugate.commands import _speedup
from taugate.summaries import units_kept

HELP = "show a bundle's modes, sizes and accuracies, and verify its files and models"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--providers", default="cpu",
                   help="providers to verify the models with: auto, cpu, cuda, directml, or a "
                        "comma-separated list (default cpu)")
    p.add_argument("--measure", action="store_true",
                   help="also time every mode against the dense model (fp32, one thread, "
                        "batch 1 and 256; a few seconds): the speedup beside the MAC ratio")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _units(info: dict) -> str:
    kept, total = info.get("units_kept") or [], info.get("units_total") or []
    return units_kept(kept, total, empty="-")


def input_text(spec) -> str:
    """``pixels float32 [batch, 784] in [0, 1], image 1x28x28`` from a manifest InputSpec."""
    text = f"{spec.name} float32 [batch, {', '.join(str(d) for d in spec.shape)}]"
    text += (f" in [{spec.range[0]:g}, {spec.range[1]:g}]" if spec.range is not None
             else " (any finite values)")
    if spec.image_shape:
        text += f", image {spec.channels}x{spec.image_shape[0]}x{spec.image_shape[1]}"
    return text


def _text(rt, facts: list[dict], measured: dict | None = None) -> str:
    from taugate.commands._common import facts_text, format_table, mac_ratio_text

    m = rt.manifest
    files = len(m.files())
    lines = [f"bundle        {rt.bundle_dir}",
             f"format        {m.format} v{m.format_version} (created by {m.created_by})",
             (f"family        {m.family}"
              f"{'  targets ' + ', '.join(m.targets) if m.targets else ''}"),
             f"input         {input_text(m.input)}",
             f"output        {m.output.name} float32 [batch, {m.output.classes}]",
             (f"dense         {m.dense.file}  {m.dense.macs:,} MACs  units "
              f"{m.dense.facts.get('units', '-')}"
              f"{'  (weights: shared backbone ' + m.backbone.file + ')' if m.backbone else ''}"),
             (f"verification  OK: paths and sha256 of {files} files, all models load "
              f"with {rt.providers}"), ""]
    dense_macs = m.dense.macs
    rows = [[f["name"], f.get("method") or "-", facts_text(f.get("facts")), _units(f),
             f"{f['macs']:,}", mac_ratio_text(dense_macs, f["macs"]),
             _fmt(f.get("dense_test_accuracy"), ".4f"),
             _fmt(f.get("calibration_accuracy"), ".4f"), _fmt(f.get("test_accuracy"), ".4f")]
            for f in facts]
    headers = ["mode", "method", "facts", "units kept/total", "MACs", "MAC ratio",
               "dense acc", "calib acc", "test acc"]
    if measured is not None:
        headers[6:6] = _speedup.headers()
        rows = [row[:6] + _speedup.cells(measured, f["name"]) + row[6:]
                for row, f in zip(rows, facts)]
    table = format_table(headers, rows)
    return "\n".join(lines) + table + (f"\n{_speedup.NOTE}" if measured is not None else "")


def run(args) -> int:
    from taugate.commands.predict import parse_providers
    from taugate.runtime import ModeRuntime, TaugateRuntimeError

    try:
        rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers),
                              max_sessions=1, lazy=False)
    except TaugateRuntimeError as exc:
        if args.json:
            print(json.dumps({"bundle": str(args.bundle), "ok": False,
                              "error": type(exc).__name__, "detail": str(exc)}, indent=2))
        print(f"taugate info: bundle verification FAILED: {exc}", file=sys.stderr)
        return 1
    facts = [rt.info(mode) for mode in rt.modes]
    for f in facts:
        f.pop("loaded", None)  # an artefact of the verification pass, not a bundle fact
    measured = _speedup.measure(args.bundle) if args.measure else None
    for f in facts if measured is not None else ():
        f["measured_speedup"] = {f"batch{b}": round(v, 3)
                                 for b, v in measured.get(f["name"], {}).items()}
    if args.json:
        m = rt.manifest
        print(json.dumps({
            "bundle": str(rt.bundle_dir), "ok": True,
            "format": m.format, "format_version": m.format_version, "created_by": m.created_by,
            "family": m.family, "targets": list(m.targets),
            "input": m.raw["input"], "output": m.raw["output"],
            "dense": {k: v for k, v in rt.info("dense").items() if k != "loaded"},
            "modes": facts,
            "verification": {"sha256": "ok", "paths": "ok", "models_load": "ok",
                             "providers": rt.providers},
        }, indent=2))
    else:
        print(_text(rt, facts, measured))
    rt.close()
    return 0
