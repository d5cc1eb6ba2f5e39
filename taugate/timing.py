"""Side-by-side onnxruntime latency: several models timed in one process, interleaved.

Timing one model, then another, lets CPU frequency, cache state and background load drift
between them; a lone absolute time says little. Here every model gets a session with the same
options and the same input; after a warm-up, each *round* runs every model once (in a rotated
order), and each model's median over rounds is compared with a baseline's median from the same
rounds. One measurement runs ``number`` calls back to back, ``number`` chosen so a measurement
lasts at least ``min_time_s``: a single call of a tiny model at batch 1 takes a few
microseconds, below what one ``perf_counter`` pair resolves reliably.

:class:`Interleaved` does the same for arbitrary callables (e.g. ``ModeRuntime.run`` beside a
bare ``InferenceSession.run``); :func:`time_models` builds on it for bare ONNX models. Needs
numpy + onnxruntime only (no torch), so benchmarks, the sweep, the demo and the runtime's users
can share it.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class TimingConfig:
    batch_sizes: tuple[int, ...] = (1, 64, 256, 4096)  # rows per call
    repeats: int = 30  # interleaved rounds; medians are over these
    warmup: int = 3  # untimed rounds first (allocations, arena growth)
    min_time_s: float = 0.002  # each measurement runs enough calls to last at least this long
    threads: int = 0  # onnxruntime intra_op_num_threads (0: its default, one per core)
    seed: int = 0  # the random input

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes: expected one or more sizes >= 1, got {self.batch_sizes}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats/warmup: expected >= 1 / >= 0, got {self.repeats}/{self.warmup}")
        if self.min_time_s < 0 or self.threads < 0:
            raise ValueError(
                f"min_time_s/threads: expected >= 0, got {self.min_time_s}/{self.threads}")


@dataclass
class TimingResult:
    """Median seconds per call, per model and batch size, and ratios against ``baseline``."""

    baseline: str
    median_s: dict[str, dict[int, float]]  # name -> batch -> median seconds per call
    config: TimingConfig
    machine: dict = field(default_factory=dict)

    def speedup(self, name: str, batch: int) -> float:
        """baseline latency / ``name`` latency at ``batch`` (> 1: ``name`` is faster)."""
        return self.median_s[self.baseline][batch] / self.median_s[name][batch]


def machine_info(threads: int = 0) -> dict:
    """What a timing depends on: CPU model, cores, onnxruntime version, thread setting."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "intra_op_num_threads": threads}


def make_session(model, threads: int = 0):
    """A CPU InferenceSession for ``model`` (a ModelProto, serialized bytes or a path)."""
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _calls_needed(run, min_time_s: float) -> int:
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            run()
        if time.perf_counter() - t0 >= min_time_s or number >= 1 << 16:
            return number
        number *= 2


def time_models(models: dict, baseline: str, config: TimingConfig | None = None) -> TimingResult:
    """Time ``models`` (name -> ModelProto / bytes / path) side by side at each batch size.

    All models must take one float32 input [batch, n_in] with the same n_in.
    """
    config = config or TimingConfig()
    if baseline not in models:
        raise ValueError(f"baseline: {baseline!r} is not one of the models {sorted(models)}")
    sessions = {name: make_session(m, config.threads) for name, m in models.items()}
    inputs = {name: s.get_inputs()[0] for name, s in sessions.items()}
    widths = {inp.shape[1] for inp in inputs.values()}
    if len(widths) != 1 or not isinstance(next(iter(widths)), int):
        raise ValueError(f"models: expected one fixed input width for all, got {widths}")
    n_in = next(iter(widths))
    rng = np.random.default_rng(config.seed)
    medians: dict[str, dict[int, float]] = {n: {} for n in sessions}
    for batch in config.batch_sizes:
        x = rng.random((batch, n_in), dtype=np.float32)
        timer = Interleaved({n: (lambda s=s, i=inputs[n].name, x=x: s.run(None, {i: x}))
                             for n, s in sessions.items()})
        timer.number = max(_calls_needed(fn, config.min_time_s) for fn in timer.calls.values())
        for _ in range(config.warmup):
            timer.round()
        timer.reset()
        for _ in range(config.repeats):
            timer.round()
        for n, stats in timer.summary().items():
            medians[n][batch] = stats["median_us"] * 1e-6
    return TimingResult(baseline, medians, config, machine_info(config.threads))


@dataclass
class Interleaved:
    """Named callables; each :meth:`round` calls every one once and records its time.

    By default the order rotates (round k starts k further along), so each callable is always
    preceded by the same one except when it goes first: where what the previous call left in
    the caches matters (a 7 MB model evicts a small one's weights), two copies of the same model
    differ by a few percent. ``shuffle`` (a seed) gives every round a fresh random order
    instead: the fair form for comparing two versions of one model side by side."""

    calls: dict[str, Callable[[], object]]
    number: int = 1  # calls back to back per measurement (sub-10 us calls need several)
    samples: dict[str, list[float]] = field(default_factory=dict)  # seconds per call
    shuffle: int | None = None  # a seed: each round in a random order (None: rotated)
    _turn: int = 0

    def __post_init__(self) -> None:
        if not self.calls:
            raise ValueError("calls: expected at least one callable to time")
        self.samples = {name: [] for name in self.calls}
        self._rng = np.random.default_rng(self.shuffle) if self.shuffle is not None else None

    def round(self) -> None:
        """Call each callable once, starting one further along than last round (or, with
        ``shuffle``, in a random order)."""
        names = list(self.calls)
        k = self._turn % len(names)
        self._turn += 1
        if self._rng is not None:
            names = [names[i] for i in self._rng.permutation(len(names))]
            k = 0
        clock = time.perf_counter
        number = self.number
        for name in names[k:] + names[:k]:
            fn = self.calls[name]
            t0 = clock()
            for _ in range(number):
                fn()
            self.samples[name].append((clock() - t0) / number)

    def reset(self) -> None:
        """Forget the samples (after warm-up)."""
        self.samples = {name: [] for name in self.calls}

    def summary(self) -> dict[str, dict[str, float]]:
        """Per callable: median, 25th and 75th percentile (microseconds) and the sample count."""
        out = {}
        for name, s in self.samples.items():
            if not s:
                raise ValueError(f"{name}: no samples; call round() first")
            q1, med, q3 = np.percentile(np.asarray(s) * 1e6, [25, 50, 75])
            out[name] = {"median_us": float(med), "q1_us": float(q1), "q3_us": float(q3),
                         "n": len(s)}
        return out

    def ratio(self, baseline: str, other: str) -> float:
        """median(baseline) / median(other): > 1 when ``other`` is faster."""
        s = self.summary()
        return s[baseline]["median_us"] / s[other]["median_us"]


def calibrate(timer: Interleaved, budget_s: float, min_time_s: float = 2e-4,
              min_rounds: int = 5, max_rounds: int = 2000, warmup: int = 3) -> int:
    """Warm up, set ``timer.number`` so one measurement lasts >= ``min_time_s``, and return how
    many rounds fit in ``budget_s`` seconds (at least ``min_rounds``)."""
    for fn in timer.calls.values():
        fn()
    fastest = min(time_one(fn) for fn in timer.calls.values())
    timer.number = max(1, min(int(np.ceil(min_time_s / max(fastest, 1e-9))), 1 << 12))
    t0 = time.perf_counter()
    for _ in range(max(warmup, 1)):
        timer.round()
    per_round = (time.perf_counter() - t0) / max(warmup, 1)
    timer.reset()
    return int(min(max(budget_s / max(per_round, 1e-9), min_rounds), max_rounds))


def time_one(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn`` (for calibration only)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
