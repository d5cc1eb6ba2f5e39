"""The user's benchmark of a bundle: every mode against the dense model, side by side.

For each intra-op thread count, batch size and mode, one :class:`~taugate.timing.Interleaved`
timer runs the dense model and the mode in every precision the bundle has (fp32, int8), each
through :class:`~taugate.runtime.ModeRuntime` with the same session options and the same input,
in rotated order; medians over the same rounds give the ratios. The MAC ratio (dense MACs /
mode MACs) stands beside each measured speedup as the ideal it is compared with. The per-call
floor runs in the same rounds: a bare onnxruntime call of a graph that does no work (one
``Slice`` of the input to [N, classes]) with the same thread setting, which no model called from
Python beats; dense fp32 / floor is the ceiling any mode's speedup can reach at that batch.
Accuracy is measured through the runtime when test data is given.

Runtime-only: numpy + onnxruntime (``taugate bench`` works with ``pip install taugate``).
``taugate bench`` and the pytest-benchmark suite ``benchmarks/test_bench_bundle.py`` both call
:func:`cell_timer` and :func:`cell_result`, so they measure the same thing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from taugate.bundle.manifest import variant_entry
from taugate.bundle.schema import PRECISIONS
from taugate.runtime import DENSE, ModeRuntime, RuntimeConfigError
from taugate.timing import Interleaved, calibrate, machine_info


@dataclass
class BenchConfig:
    modes: tuple[str, ...] | None = None  # None: every mode of the bundle
    batches: tuple[int, ...] = (1, 16, 256, 4096)  # rows per call
    threads: tuple[int, ...] = (1, 2)  # onnxruntime intra-op threads
    precisions: tuple[str, ...] = PRECISIONS  # those the bundle lacks are skipped (and said)
    budget_s: float = 0.4  # timed seconds per cell (rounds are sized to fit)
    min_rounds: int = 15  # at least this many interleaved rounds per cell
    providers: str = "cpu"  # ModeRuntime providers ("auto" to let it pick)
    seed: int = 0  # the random timing input

    def __post_init__(self) -> None:
        self.batches, self.threads = tuple(self.batches), tuple(self.threads)
        self.precisions = tuple(self.precisions)
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches: expected sizes >= 1, got {list(self.batches)}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads: expected counts >= 1, got {list(self.threads)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"precisions: expected a subset of {', '.join(PRECISIONS)}, got "
                             f"{list(self.precisions)}")
        if self.budget_s <= 0 or self.min_rounds < 1:
            raise ValueError(f"budget_s / min_rounds: expected > 0 / >= 1, got "
                             f"{self.budget_s} / {self.min_rounds}")


@dataclass
class Cell:
    """One (mode, batch, threads) measurement: medians and ratios from the same rounds."""

    mode: str
    batch: int
    threads: int
    mac_ratio: float  # dense MACs / mode MACs: the ideal speedup
    rounds: int
    median_us: dict  # "dense/fp32", "<mode>/fp32", "dense/int8", "<mode>/int8" -> median
    speedup: dict  # precision -> dense fp32 median / mode median in that precision
    speedup_same: dict  # precision -> dense median / mode median, both in that precision
    dense_int8_speedup: float | None  # dense fp32 / dense int8 (None: no dense int8)
    floor_us: float | None = None  # median of the per-call floor (a bare call doing no work)
    ceiling: float | None = None  # dense fp32 median / floor median: no mode can beat it


def open_runtimes(bundle, threads: int, precisions, providers: str = "cpu") -> tuple[dict, list]:
    """One ModeRuntime per precision the bundle serves; returns (runtimes, notes on skips)."""
    rts, notes = {}, []
    for p in precisions:
        try:
            rts[p] = ModeRuntime.open(bundle, providers=providers, intra_op_num_threads=threads,
                                      inter_op_num_threads=1, precision=p)
        except RuntimeConfigError as exc:
            notes.append(f"{p} skipped: {exc}")
    return rts, notes


def _has_dense(rt: ModeRuntime) -> bool:
    """Whether ``rt`` serves the dense model in its precision."""
    return variant_entry(rt.manifest.dense, rt.precision) is not None


FLOOR = "floor"


def floor_session(features: int, classes: int, threads: int):
    """A bare CPU session of the per-call floor: ``x [N, features] -> x[:, :classes]``."""
    import onnxruntime as ort

    from taugate.runtime.onnx_build import model_bytes

    data = model_bytes([("Slice", ["x", "starts", "ends", "axes"], "y", {})], {"x": features},
                       ["y"], {"starts": np.array([0]), "ends": np.array([classes]),
                               "axes": np.array([1])}, [("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def cell_timer(rts: dict, mode: str, x: np.ndarray, floor=None) -> Interleaved:
    """Interleaved callables: the dense model and ``mode`` in every precision of ``rts`` (and
    the per-call floor when ``floor``, a :func:`floor_session`, is given)."""
    calls = {}
    if floor is not None:
        flat = {"x": x.reshape(len(x), -1).astype(np.float32, copy=False)}  # token ids too
        calls[FLOOR] = lambda: floor.run(["y"], flat)[0]
    for p, rt in rts.items():
        if _has_dense(rt):
            calls[f"{DENSE}/{p}"] = (lambda rt=rt: rt.run(DENSE, x))
        calls[f"{mode}/{p}"] = (lambda rt=rt: rt.run(mode, x))
    return Interleaved(calls)


def cell_result(timer: Interleaved, rts: dict, mode: str, batch: int, threads: int) -> Cell:
    """Medians and ratios of a timer built by :func:`cell_timer` after its rounds ran."""
    s = {k: v["median_us"] for k, v in timer.summary().items()}
    base = s.get(f"{DENSE}/fp32")
    speedup, same = {}, {}
    for p in rts:
        m = s[f"{mode}/{p}"]
        if base is not None:
            speedup[p] = base / m
        if f"{DENSE}/{p}" in s:
            same[p] = s[f"{DENSE}/{p}"] / m
    rt = next(iter(rts.values()))
    dense_int8 = s.get(f"{DENSE}/int8")
    floor = s.pop(FLOOR, None)
    return Cell(mode, batch, threads, rt.manifest.dense.macs / rt.manifest.modes[mode].macs,
                len(timer.samples[f"{mode}/{next(iter(rts))}"]), s, speedup, same,
                base / dense_int8 if base is not None and dense_int8 else None,
                floor, base / floor if base is not None and floor else None)


def accuracy(rt: ModeRuntime, name: str, x: np.ndarray, y: np.ndarray, batch: int = 4096
             ) -> float:
    """Top-1 accuracy of ``name`` ("dense" or a mode) through the runtime."""
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((rt.predict(name, x[i:i + batch]) == y[i:i + batch]).sum())
    return hits / max(len(x), 1)


@dataclass
class BenchResult:
    bundle: str
    config: BenchConfig
    cells: list = field(default_factory=list)  # Cell
    accuracy: dict = field(default_factory=dict)  # mode -> {"<mode|dense>/<precision>": acc}
    providers: dict = field(default_factory=dict)  # precision -> providers really used
    notes: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def headline(self) -> list[dict]:
        """Per (mode, threads, precision): the speedup at batch 1 (the smallest measured) and at
        the largest batch, each beside the MAC ratio and the floor's ceiling."""
        out = []
        for key in dict.fromkeys((c.mode, c.threads) for c in self.cells):
            cells = sorted((c for c in self.cells if (c.mode, c.threads) == key),
                           key=lambda c: c.batch)
            for p in cells[0].speedup:
                row = {"mode": key[0], "threads": key[1], "precision": p,
                       "mac_ratio": cells[0].mac_ratio}
                for name, c in (("small", cells[0]), ("large", cells[-1])):
                    row[name] = {"batch": c.batch, "speedup": c.speedup.get(p),
                                 "floor_us": c.floor_us, "ceiling": c.ceiling}
                out.append(row)
        return out

    def to_json(self) -> dict:
        return {"bundle": self.bundle, "config": asdict(self.config),
                "headline": self.headline(),
                "cells": [asdict(c) for c in self.cells], "accuracy": self.accuracy,
                "providers": self.providers, "notes": self.notes, "machine": self.machine}


def run_bench(bundle, config: BenchConfig | None = None, data: dict | None = None,
              progress=None) -> BenchResult:
    """Measure every (threads, batch, mode) cell of ``bundle``; ``data`` maps a mode to its test
    set ``(x, y)`` for accuracy; ``progress(done, total, text)`` is called as cells finish."""
    config = config or BenchConfig()
    rng = np.random.default_rng(config.seed)
    result = BenchResult(str(bundle), config, machine=machine_info())
    try:
        result.machine["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    total = len(config.threads) * len(config.batches)
    done = 0
    for threads in config.threads:
        rts, notes = open_runtimes(bundle, threads, config.precisions, config.providers)
        if "fp32" not in rts:
            raise ValueError(f"{bundle}: cannot benchmark without its fp32 models: {notes}")
        result.notes += [n for n in notes if n not in result.notes]
        modes = list(config.modes or rts["fp32"].modes)
        unknown = [m for m in modes if m not in rts["fp32"].modes]
        if unknown:
            raise ValueError(f"modes {unknown}: not in the bundle; valid: {rts['fp32'].modes}")
        total = len(config.threads) * len(config.batches) * len(modes)
        spec = rts["fp32"].manifest.input
        shape = tuple(spec.shape)  # per sample: [784], [1, 8, 8], [2, L] (token ids + mask)
        floor = floor_session(int(np.prod(shape)), rts["fp32"].manifest.output.classes, threads)
        for batch in config.batches:
            x = rng.random((batch, *shape), dtype=np.float32)
            if spec.token_length:  # ids below the vocabulary, every token attended
                x = (x * (spec.layout["vocab"] or 1)).astype(np.int64)
                x[:, 1] = 1
            for mode in modes:
                timer = cell_timer(rts, mode, x, floor)
                rounds = calibrate(timer, config.budget_s, min_rounds=config.min_rounds)
                for _ in range(rounds):
                    timer.round()
                cell = cell_result(timer, rts, mode, batch, threads)
                result.cells.append(cell)
                done += 1
                if progress:
                    progress(done, total, cell)
        result.providers = {p: rt.providers for p, rt in rts.items()}
        if data and not result.accuracy:
            result.accuracy = measure_accuracy(rts, modes, data)
        for rt in rts.values():
            rt.close()
    return result


def measure_accuracy(rts: dict, modes, data: dict) -> dict:
    """mode -> {"<mode>/<precision>": acc, "dense/<precision>": acc} on the mode's test set."""
    out = {}
    for mode in modes:
        if mode not in data:
            continue
        x, y = data[mode]
        row = {}
        for p, rt in rts.items():
            row[f"{mode}/{p}"] = accuracy(rt, mode, x, y)
            if _has_dense(rt):
                row[f"{DENSE}/{p}"] = accuracy(rt, DENSE, x, y)
        out[mode] = row
    return out
