"""Read the report's inputs: pytest-benchmark JSON, a bundle manifest, reproduce and sweep outputs.

Each loader returns a plain dataclass, or ``None`` when its input does not exist (the report then
says which command produces it). Inputs that exist but cannot be read raise ``ValueError``
naming the file and what was expected. Standard library only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BenchData:
    """One pytest-benchmark JSON (``pytest --benchmark-json``)."""

    path: Path
    datetime: str
    machine: dict  # cpu, cpu_count, onnxruntime, platform, python (see machine_summary)
    latency: list[dict]  # extra_info of the latency benchmarks (test_bench_latency.py)
    accuracy: list[dict]  # extra_info of the accuracy benchmarks (test_bench_accuracy.py)
    other: list[dict]  # every other benchmark: name, stats, extra_info
    bundle: dict = field(default_factory=dict)  # what the session ran on (conftest.py)


@dataclass
class BundleFacts:
    """Per mode: method, kept units and test-set firing rates (from manifest.json)."""

    path: Path
    modes: dict[str, dict]  # name -> manifest facts of the mode
    dense: dict

    def has_firing_rates(self) -> bool:
        return bool(self.modes) and all("test_firing_rates" in m for m in self.modes.values())


@dataclass
class ReproduceData:
    """``taugate reproduce`` outputs: results.csv rows and summary.json (either may be absent)."""

    path: Path
    rows: list[dict]
    summary: dict | None


@dataclass
class SweepData:
    """``taugate sweep`` outputs: sweep.csv (or sweep.json) rows and the machine facts."""

    path: Path
    rows: list[dict]
    machine: dict


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON ({exc})") from exc


def _number(value):
    """CSV cells -> int / float where they are numbers, '' -> None, else the text."""
    if value is None or value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value


def _read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it as CSV ({exc})") from exc


def machine_summary(machine_info: dict) -> dict:
    """CPU model, logical cores, onnxruntime version, platform, python from pytest-benchmark's
    ``machine_info`` (our conftest adds ``machine_info["taugate"]``)."""
    ours = machine_info.get("taugate") or {}
    cpu = machine_info.get("cpu") or {}
    return {
        "cpu": ours.get("cpu") or cpu.get("brand_raw") or machine_info.get("processor") or "?",
        "cpu_count": ours.get("cpu_count") or cpu.get("count"),
        "onnxruntime": ours.get("onnxruntime", "?"),
        "platform": ours.get("platform") or machine_info.get("system", "?"),
        "python": ours.get("python") or machine_info.get("python_version", "?"),
        "loadavg_at_start": ours.get("loadavg_at_start"),
    }


def load_bench(path: str | Path | None) -> BenchData | None:
    """The benchmark JSON at ``path``, split into latency, accuracy and other benchmarks."""
    if path is None or not Path(path).is_file():
        return None
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data.get("benchmarks"), list):
        # a malformed file, not a caller's type error: the CLI reports ValueErrors in one line
        raise ValueError(f"{path}: expected pytest-benchmark JSON with a 'benchmarks' list")
    latency, accuracy, other = [], [], []
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        if info.get("kind") == "latency":
            latency.append(info)
        elif info.get("kind") == "accuracy":
            accuracy.append(info)
        else:
            other.append({"name": b.get("name", "?"), "group": b.get("group"),
                          "stats": b.get("stats") or {}, "extra_info": info})
    return BenchData(path, data.get("datetime", "?"), machine_summary(data.get("machine_info", {})),
                     latency, accuracy, other, data.get("taugate_bundle") or {})


def load_bundle(path: str | Path | None) -> BundleFacts | None:
    """The manifest facts of the bundle at ``path`` (a directory or its manifest.json)."""
    if path is None:
        return None
    path = Path(path)
    manifest = path / "manifest.json" if path.is_dir() else path
    if not manifest.is_file():
        return None
    data = _read_json(manifest)
    if not isinstance(data.get("modes"), dict) or not isinstance(data.get("dense"), dict):
        raise ValueError(  # a malformed file, as above
            f"{manifest}: expected a taugate bundle manifest with 'dense' and 'modes'")
    return BundleFacts(manifest.parent, data["modes"], data["dense"])


def load_reproduce(path: str | Path | None) -> ReproduceData | None:
    """``results.csv`` and ``summary.json`` under ``path``; None when neither exists."""
    if path is None:
        return None
    path = Path(path)
    csv_path, summary_path = path / "results.csv", path / "summary.json"
    if not csv_path.is_file() and not summary_path.is_file():
        return None
    rows = _read_csv(csv_path) if csv_path.is_file() else []
    summary = _read_json(summary_path) if summary_path.is_file() else None
    return ReproduceData(path, rows, summary)


def load_sweep(path: str | Path | None) -> SweepData | None:
    """``sweep.csv`` (rows) and ``sweep.json`` (rows + machine) under ``path``."""
    if path is None:
        return None
    path = Path(path)
    csv_path, json_path = path / "sweep.csv", path / "sweep.json"
    data = _read_json(json_path) if json_path.is_file() else {}
    if csv_path.is_file():
        rows = _read_csv(csv_path)
    elif isinstance(data.get("rows"), list):
        rows = data["rows"]
    else:
        return None
    machine = data.get("machine") or data.get("machine_info") or {}
    return SweepData(path, rows, machine)
