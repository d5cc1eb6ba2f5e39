"""The benchmark session's bundle: built from a small seeded training run, given, or random.

Training goes through ``taugate.training.pipeline`` and export through the one pipeline
(``taugate.exporting.pipeline.export_modes``; what ``train_run``/``export_run``
use), because one bundle here holds several methods per mode (``rot45-lora``, ...), which a
single run cannot. Accuracy is always measured on the mode's full MNIST test set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from taugate.bundle.manifest import DENSE, load_manifest
from taugate.exporting.synthetic import random_inputs
from taugate.training.recipes import SPARSE_RECIPE

log = logging.getLogger("taugate.benchmarks")


@dataclass
class BuildConfig:
    root: str  # MNIST root (TAUGATE_DATA)
    modes: tuple[str, ...] = ("rot0", "rot45")  # pruning TauGate modes, exported under these names
    methods: tuple[str, ...] = ("taugate", "bitfit", "lora", "full_ft", "gain_only", "tau_only")
    methods_mode: str = "rot45"  # the mode every method of ``methods`` is specialized to
    # the pruning modes' unit-L1 strength; the rest of the sparsity recipe is SPARSE_RECIPE's
    unit_l1: float = SPARSE_RECIPE["unit_l1"]
    foundation_epochs: int = 2  # the paper's protocol
    limit_train: int | None = None  # training examples (None: all 55000 left after calibration)
    seed: int = 0

    def __post_init__(self) -> None:
        self.modes, self.methods = tuple(self.modes), tuple(self.methods)
        if self.unit_l1 < 0:
            raise ValueError(f"unit_l1: expected >= 0, got {self.unit_l1}")


@dataclass
class BenchSession:
    """A bundle plus the test set (x float32 [N, 784], y int64 [N]) of each data mode."""

    path: Path
    source: str  # "trained" | "given" | "random"
    data: str  # what the test sets are, in words
    test_sets: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    build: dict = field(default_factory=dict)  # the BuildConfig and build time, when trained
    note: str = ""
    _inputs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        _, self.manifest = load_manifest(self.path)

    @classmethod
    def random(cls, path: Path, why: str, n: int = 512) -> BenchSession:
        """A random bundle with random inputs and labels (accuracy means nothing here)."""
        rng = np.random.default_rng(0)
        session = cls(path, "random", f"random inputs and labels ({n} per mode)", note=why)
        for i, mode in enumerate(sorted({session.data_mode(m) for m in session.modes})):
            session.test_sets[mode] = (random_inputs(1000 + i, n),
                                       rng.integers(0, 10, n).astype(np.int64))
        return session

    @property
    def modes(self) -> list[str]:
        return list(self.manifest.modes)

    def entry(self, name: str):
        """The manifest entry of a mode or of ``"dense"``."""
        return self.manifest.dense if name == DENSE else self.manifest.modes[name]

    def data_mode(self, name: str) -> str | None:
        """The data mode a bundle mode was specialized to (None for the dense model)."""
        if name == DENSE:
            return None
        facts = self.manifest.modes[name].facts
        return facts.get("data_mode") or f"rot{float(facts['angle']):g}"

    def inputs(self, name: str, batch: int) -> np.ndarray:
        """``batch`` rows of the model's own test set (repeated when too few), float32."""
        mode = self.data_mode(name) or next(iter(self.test_sets), None)
        key = (mode, batch)
        if key not in self._inputs:
            if mode in self.test_sets:
                x = self.test_sets[mode][0]
                self._inputs[key] = np.ascontiguousarray(x[np.arange(batch) % len(x)])
            else:
                self._inputs[key] = random_inputs(batch, batch)
        return self._inputs[key]

    def describe(self) -> dict:
        """The facts the benchmark JSON records about this bundle."""
        return {"path": str(self.path.resolve()), "source": self.source, "data": self.data,
                "note": self.note, "build": self.build, "modes": self.modes}


def _mnist(root: str, limit_train: int | None = None):
    from taugate.training.sources import DataConfig, MNISTModes

    return MNISTModes(DataConfig(root=root, download=False, limit_train=limit_train))


def _test_sets(data, modes) -> dict:
    return {m: (data.mode(m).test.x.numpy(), data.mode(m).test.y.numpy()) for m in modes}


def load_given(path: Path, with_data: bool, root: str | None = None) -> BenchSession:
    """An exported bundle; with data, the MNIST test set of each of its data modes."""
    if not with_data:
        session = BenchSession.random(path, "TAUGATE_DATA not set: random inputs")
        session.source = "given"
        return session
    session = BenchSession(path, "given", "")
    data = _mnist(root)
    wanted = sorted({session.data_mode(m) for m in session.modes})
    session.test_sets = _test_sets(data, wanted)
    n = len(next(iter(session.test_sets.values()))[1])
    session.data = f"MNIST test set, {n} images per mode"
    return session


def build_trained(out: Path, config: BuildConfig) -> BenchSession:
    """Pretrain a foundation, adapt every mode and method, export the bundle to ``out``."""
    from taugate.exporting.pipeline import (
        ExportConfig,
        ModeInput,
        PrecisionConfig,
        export_modes,
    )
    from taugate.exporting.prune import PruneConfig
    from taugate.training.backbone import FoundationConfig
    from taugate.training.loop import TrainConfig
    from taugate.training.pipeline import AdaptConfig, adapt, pretrain_foundation

    t0 = time.perf_counter()
    data = _mnist(config.root, config.limit_train)
    modes = tuple(dict.fromkeys((*config.modes, config.methods_mode)))
    log.info("benchmark bundle: pretraining the foundation (%d epochs)", config.foundation_epochs)
    foundation = pretrain_foundation(
        data, FoundationConfig(modes=modes, epochs=config.foundation_epochs, seed=config.seed),
        "cpu", progress=False)
    train = TrainConfig(seed=config.seed)
    pruning = AdaptConfig("taugate", {**SPARSE_RECIPE, "unit_l1": config.unit_l1}, train)
    jobs = [(m, m, pruning) for m in config.modes]
    jobs += [(f"{config.methods_mode}-{meth}", config.methods_mode, AdaptConfig(meth, {}, train))
             for meth in config.methods]
    inputs = {}
    for name, mode, adapt_config in jobs:
        log.info("benchmark bundle: adapting %s (%s)", name, adapt_config.method)
        md = data.mode(mode)
        method, model = adapt(foundation, md, adapt_config, "cpu", progress=False)
        inputs[name] = ModeInput(method.harden_spec(model, {"mode": mode}),
                                 (md.calibration.x, md.calibration.y), (md.test.x, md.test.y),
                                 method.name, dict(md.facts), data_mode=mode)
    # int8 variants of every model: taugate bench / test_bench_bundle.py measure them; the
    # benchmark measures what the methods give, so no mode is refused for its accuracy
    config_ = ExportConfig(layout="standalone", prune=PruneConfig(max_accuracy_drop=1.0),
                           allow_worse=True, precision=PrecisionConfig(("fp32", "int8")),
                           overwrite=True)
    path, _ = export_modes(out, foundation, inputs, family="mlp", input_spec=data.input_spec,
                           output_spec={"name": "logits", "dtype": "float32",
                                        "shape": ["batch", 10],
                                        "labels": [str(i) for i in range(10)]},
                           config=config_)
    test_sets = _test_sets(data, modes)
    n = len(next(iter(test_sets.values()))[1])
    build = {**asdict(config), "build_seconds": round(time.perf_counter() - t0, 1)}
    build.pop("root")
    return BenchSession(path, "trained", f"MNIST test set, {n} images per mode", test_sets,
                        build)


def synthetic_bundle(request, tmp_path_factory, name: str, n_modes: int, widths: tuple,
                     keep: float = 0.27) -> Path:
    """A shared-layout bundle of ``n_modes`` synthetic modes of a 784-``widths``-10 MLP
    (``shared_backbone.py``); ``--tiny``: widths 64. The mixed-batch and routing benchmarks'
    fixture."""
    import shared_backbone as sb

    if request.config.getoption("--tiny"):
        widths = (64,) * len(widths)
    path, _ = sb.build(tmp_path_factory.mktemp(name) / "b", n_modes, widths=widths, keep=keep)
    return path


def side_by_side(benchmark, calls: dict, base: str, other: str) -> dict:
    """Interleaved rounds of ``calls`` (``taugate.timing``; 3 s, or a smoke run when the
    benchmark is disabled): the median ratio ``other / base`` per round, both medians, the
    load average."""
    import os
    import statistics

    from taugate.timing import Interleaved, calibrate

    timer = Interleaved(calls)
    for _ in range(calibrate(timer, 0.05 if benchmark.disabled else 3.0)):
        timer.round()
    s = timer.samples
    med = timer.summary()
    return {"ratio": statistics.median(o / b for o, b in zip(s[other], s[base])),
            f"{base}_us": med[base]["median_us"], f"{other}_us": med[other]["median_us"],
            "rounds": len(s[base]), "loadavg": os.getloadavg()}
