"""Every benchmark function runs once on the tiny random bundle, so the suites stay runnable
without the minutes a real ``make bench`` takes (``pytest benchmarks --tiny --benchmark-disable``
in a subprocess: ``benchmarks/`` has its own conftest and options)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmarks(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TAUGATE_DATA"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.mark.slow  # about 30 s: every benchmark suite, once each
def test_every_benchmark_runs_once_on_the_tiny_bundle():
    r = run_benchmarks("--tiny", "--benchmark-disable", "-v")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    # one latency test per mode x batch x threads, one accuracy test per model
    for case in ("test_latency_vs_dense[rot0-b1-t1]", "test_latency_vs_dense[rot45-b4096-t2]",
                 "test_accuracy[dense]", "test_accuracy[rot45]",
                 "test_bundle_mode_vs_dense[rot45-b256-t1]"):
        assert f"{case} PASSED" in out, case
    assert " failed" not in out and " error" not in out


def test_no_data_falls_back_to_the_tiny_bundle():
    # without TAUGATE_DATA and without --tiny the suite must not try to train
    r = run_benchmarks("--benchmark-disable", "-q", "-k", "accuracy", timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "passed" in r.stdout


def test_bundle_and_tiny_exclude_each_other(tmp_path):
    r = run_benchmarks("--tiny", "--bundle", str(tmp_path), "--benchmark-disable", "-q",
                       timeout=120)
    assert r.returncode != 0
    assert "--bundle and --tiny exclude each other" in r.stdout + r.stderr
