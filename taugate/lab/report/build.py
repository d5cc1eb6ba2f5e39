"""Build the report: read the inputs, render the sections, write README.md + figures/*.png.

The only module of the package that writes to disk. Missing inputs never fail the build: their
section names the command that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taugate.lab.report import render, render_results
from taugate.lab.report.collect import load_bench, load_bundle, load_reproduce, load_sweep


@dataclass
class ReportConfig:
    bench: str | None = "out/bench/benchmarks.json"  # pytest-benchmark JSON (`make bench`)
    bundle: str | None = None  # bundle for the firing-rate figures; None: the bench JSON's
    reproduce: str | None = "experiments/out"  # `taugate reproduce` output directory
    sweep: str | None = "out/sweep"  # `taugate sweep` output directory
    out: str = "report"  # where README.md and figures/ are written
    command: str = ""  # the command line that built the report, quoted in it

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out: expected a directory path, got an empty string")


@dataclass
class Report:
    path: Path  # README.md
    figures: list[Path]
    missing: list[str]  # sections whose input was missing


def _header(config: ReportConfig, bench, bundle_path) -> str:
    lines = ["# taugate benchmark report", "",
             ("Generated from measurements only: every number and figure below is read from the "
              "input files, nothing is typed by hand.")]
    if config.command:
        lines += ["", "```", config.command, "```"]
    lines += ["", "Inputs:", ""]
    lines.append(f"- benchmarks: `{config.bench}`" + (f" (run {bench.datetime})" if bench else
                                                     " (missing)"))
    if bench and bench.bundle:
        b = bench.bundle
        build = b.get("build") or {}
        extra = (f", built in {build['build_seconds']} s from unit_l1={build.get('unit_l1')}"
                 if build.get("build_seconds") is not None else "")
        lines.append(f"- benchmark bundle: {b.get('source')} ({b.get('data')}){extra}"
                     + (f"; {b['note']}" if b.get("note") else ""))
    lines.append(f"- bundle for the unit figures: `{bundle_path}`")
    lines.append(f"- reproduce outputs: `{config.reproduce}`")
    lines.append(f"- sweep outputs: `{config.sweep}`")
    return "\n".join(lines) + "\n"


def build_report(config: ReportConfig) -> Report:
    """Render the report into ``config.out``; returns what was written."""
    bench = load_bench(config.bench)
    bundle_path = config.bundle or (bench.bundle.get("path") if bench and bench.bundle else None)
    bundle = load_bundle(bundle_path)
    reproduce = load_reproduce(config.reproduce)
    sweep = load_sweep(config.sweep)
    data = (bench.bundle.get("data") if bench and bench.bundle and not config.bundle
            else None)
    sections = [
        ("headline", render.headline(bench)),
        ("latency", render.latency_section(bench, config.bench)),
        ("accuracy", render.accuracy_section(bench)),
        ("units", render.units_section(bundle, data, bundle_path)),
        ("sweep", render_results.sweep_section(sweep, config.sweep)),
        ("reproduce", render_results.reproduce_section(reproduce, config.reproduce)),
        ("other", render_results.other_section(bench)),
    ]
    out = Path(config.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written, missing = [], []
    text = [_header(config, bench, bundle_path)]
    for name, (markdown, pngs) in sections:
        if markdown:
            text.append(markdown)
        if markdown.lstrip().startswith("##") and "not found" in markdown:
            missing.append(name)
        for file, data_bytes in pngs.items():
            path = out / "figures" / file
            path.write_bytes(data_bytes)
            written.append(path)
    readme = out / "README.md"
    readme.write_text("\n".join(text), "utf-8")
    return Report(readme, written, missing)
