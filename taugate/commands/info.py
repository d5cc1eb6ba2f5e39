"""Show a bundle's manifest facts and verify it: every file's path and sha256, and that every
model loads in onnxruntime with the inputs and outputs the manifest declares. Exits 1 when the
bundle fails verification."""

from __future__ import annotations

import json
import sys

from taugate.summaries import units_kept

HELP = "show a bundle's modes, sizes and accuracies, and verify its files and models"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--providers", default="cpu",
                   help="providers to verify the models with: auto, cpu, cuda, directml, or a "
                        "comma-separated list (default cpu)")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _units(info: dict) -> str:
    kept, total = info.get("units_kept") or [], info.get("units_total") or []
    return units_kept(kept, total, empty="-")


def _text(rt, facts: list[dict]) -> str:
    from taugate.commands._common import format_table

    m = rt.manifest
    lines = [f"bundle        {rt.bundle_dir}",
             f"format        {m.format} v{m.format_version} (created by {m.created_by})",
             f"input         {m.input.name} float32 [batch, {m.input.features}] in "
             f"[{m.input.range[0]:g}, {m.input.range[1]:g}]",
             f"output        {m.output.name} float32 [batch, {m.output.classes}]",
             f"dense         {m.dense.file}  {m.dense.macs:,} MACs  units "
             f"{m.dense.facts.get('units', '-')}",
             f"verification  OK: paths and sha256 of {len(facts) + 1} files, all models load "
             f"with {rt.providers}", ""]
    rows = [[f["name"], f.get("method") or "-", _fmt(f.get("angle"), "g"), _units(f),
             f"{f['macs']:,}", _fmt(f.get("mac_ratio"), ".3f"),
             _fmt(f.get("calibration_accuracy"), ".4f"), _fmt(f.get("test_accuracy"), ".4f")]
            for f in facts]
    table = format_table(["mode", "method", "angle", "units kept/total", "MACs", "vs dense",
                          "calib acc", "test acc"], rows)
    return "\n".join(lines) + table


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
    if args.json:
        m = rt.manifest
        print(json.dumps({
            "bundle": str(rt.bundle_dir), "ok": True,
            "format": m.format, "format_version": m.format_version, "created_by": m.created_by,
            "input": m.raw["input"], "output": m.raw["output"],
            "dense": {k: v for k, v in rt.info("dense").items() if k != "loaded"},
            "modes": facts,
            "verification": {"sha256": "ok", "paths": "ok", "models_load": "ok",
                             "providers": rt.providers},
        }, indent=2))
    else:
        print(_text(rt, facts))
    rt.close()
    return 0
