"""Shared benchmark fixtures: which bundle the benchmarks run on, its test data, and sessions.

The bundle is chosen once per session (``bench_bundle`` is its path, ``bench_session`` the
bundle with its test sets):

``--bundle PATH``  an exported bundle; test sets from real MNIST when ``TAUGATE_DATA`` is set.
``--tiny``         a random bundle (``taugate.exporting.synthetic``): seconds, no torch, no data;
                   also the fallback when ``TAUGATE_DATA`` does not hold MNIST.
default            a small seeded training run on real MNIST (``_bench_build.py``): the
                   foundation, TauGate with unit-L1 for rot0 and rot45 (modes ``rot0``,
                   ``rot45``), and every method of ``--bench-methods`` for rot45
                   (``rot45-<method>``); accuracy is measured on the full MNIST test set.

Latency tests are parametrized here (``pytest_generate_tests``) over the bundle's modes,
``--bench-batches`` and ``--bench-threads``, so the mode list comes from the bundle itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from taugate.bundle.manifest import DENSE
from taugate.exporting.synthetic import build_random_bundle
from taugate.training.recipes import SPARSE_RECIPE

_SESSION = pytest.StashKey()


def pytest_addoption(parser) -> None:
    g = parser.getgroup("taugate benchmarks")
    g.addoption("--bundle", default=None, metavar="PATH", help="benchmark this exported bundle")
    g.addoption("--tiny", action="store_true",
                help="benchmark a random tiny bundle (seconds; for smoke runs)")
    g.addoption("--bundle-out", default=None, metavar="DIR",
                help="where the session's trained bundle is written (default: a temp dir); "
                     "`taugate report --bundle DIR` reads its firing rates")
    g.addoption("--bench-methods", default="taugate,bitfit,lora,full_ft,gain_only,tau_only",
                help="methods also exported for rot45 as rot45-<method> (comma-separated; "
                     "taugate here is the paper's, without unit-L1)")
    g.addoption("--bench-unit-l1", type=float, default=SPARSE_RECIPE["unit_l1"],
                help="unit_l1 of the pruning TauGate modes rot0/rot45 (the rest of the "
                     "sparsity recipe is taugate.training.recipes.SPARSE_RECIPE)")
    g.addoption("--bench-batches", default="1,16,256,4096", help="latency batch sizes")
    g.addoption("--bench-threads", default="1,2", help="latency intra-op thread counts")
    g.addoption("--bench-budget", type=float, default=0.4, metavar="SECONDS",
                help="timed seconds per latency test (rounds are sized to fit, min 15)")


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _has_mnist() -> bool:
    root = os.environ.get("TAUGATE_DATA")
    return bool(root) and os.path.isdir(os.path.join(root, "MNIST", "raw"))


def _temp_dir(config, prefix: str) -> Path:
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    config.add_cleanup(tmp.cleanup)
    return Path(tmp.name)


def get_session(config):
    """The session's :class:`BenchSession`, built on first use (collection or a fixture)."""
    if _SESSION not in config.stash:
        config.stash[_SESSION] = _make_session(config)
    return config.stash[_SESSION]


def _make_session(config):
    from _bench_build import BenchSession, BuildConfig, build_trained, load_given

    given, tiny = config.getoption("--bundle"), config.getoption("--tiny")
    if given and tiny:
        raise pytest.UsageError("--bundle and --tiny exclude each other")
    if given:
        return load_given(Path(given), with_data=_has_mnist())
    if tiny or not _has_mnist():
        path = build_random_bundle(_temp_dir(config, "taugate-bench-") / "bundle",
                                   modes=("rot0", "rot45"), pruned=True, n_examples=512,
                                   int8=True)
        return BenchSession.random(path, "--tiny" if tiny else "TAUGATE_DATA not set")
    out = config.getoption("--bundle-out")
    out = Path(out) if out else _temp_dir(config, "taugate-bench-") / "bundle"
    methods = tuple(m for m in config.getoption("--bench-methods").split(",") if m.strip())
    build = BuildConfig(root=os.environ["TAUGATE_DATA"], methods=methods,
                        unit_l1=config.getoption("--bench-unit-l1"))
    return build_trained(out, build)


def pytest_generate_tests(metafunc) -> None:
    names = metafunc.fixturenames
    cfg = metafunc.config
    if "bench_mode" in names:
        modes = get_session(cfg).modes
        metafunc.parametrize("bench_mode", modes, ids=modes)
    if "bench_model" in names:
        models = [DENSE, *get_session(cfg).modes]
        metafunc.parametrize("bench_model", models, ids=models)
    if "bench_batch" in names:
        batches = _ints(cfg.getoption("--bench-batches"))
        metafunc.parametrize("bench_batch", batches, ids=[f"b{b}" for b in batches])
    if "bench_threads" in names:
        threads = _ints(cfg.getoption("--bench-threads"))
        metafunc.parametrize("bench_threads", threads, ids=[f"t{t}" for t in threads])


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    """What every timing depends on: CPU model, cores, onnxruntime version, load."""
    from taugate.timing import machine_info as taugate_machine

    info = taugate_machine()
    info.pop("intra_op_num_threads", None)  # per test, in extra_info
    try:
        info["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    machine_info["taugate"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """The bundle the session ran on, so the report can find it and say what it was."""
    if _SESSION in config.stash:
        output_json["taugate_bundle"] = config.stash[_SESSION].describe()


@pytest.fixture(scope="session")
def bench_session(request):
    """The session's bundle, its source, and the test set of every data mode it serves."""
    return get_session(request.config)


@pytest.fixture(scope="session")
def bench_bundle(bench_session) -> Path:
    """Path of the bundle every benchmark runs on (see the module docstring)."""
    return bench_session.path


@pytest.fixture(scope="session")
def build_bundle():
    """``build_bundle(path, modes=..., seed=...)``: a random bundle (e.g. with many modes)."""
    return build_random_bundle


@pytest.fixture(scope="session")
def runtime_for(bench_session):
    """``runtime_for(threads)``: one CPU ModeRuntime per intra-op thread count, all loaded."""
    from taugate.runtime import ModeRuntime

    cache: dict = {}

    def get(threads: int):
        if threads not in cache:
            cache[threads] = ModeRuntime.open(bench_session.path, providers="cpu",
                                              intra_op_num_threads=threads,
                                              inter_op_num_threads=1)
        return cache[threads]

    yield get
    for rt in cache.values():
        rt.close()


@pytest.fixture(scope="session")
def bare_session_for(bench_session):
    """``bare_session_for(threads, model)``: a bare onnxruntime CPU session of ``model``
    ("dense" or a mode) with the same thread settings as ``runtime_for(threads)``."""
    from taugate.timing import make_session

    cache: dict = {}

    def get(threads: int, model: str):
        if (threads, model) not in cache:
            entry = bench_session.entry(model)
            cache[threads, model] = make_session(str(bench_session.path / entry.file), threads)
        return cache[threads, model]

    return get
