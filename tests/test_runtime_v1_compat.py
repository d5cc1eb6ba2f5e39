"""A format 1 bundle written by the previous release (tests/data/v1_bundle, made at bff6efe by
tests/data/make_v1_bundle.py) still opens and gives the logits it gave then, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taugate.runtime import InputError, ModeRuntime

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def v1():
    with ModeRuntime.open(DATA / "v1_bundle", providers="cpu") as rt:
        yield rt, np.load(DATA / "v1_expected.npz")


@pytest.mark.parametrize("mode", ["dense", "rot0", "rot45"])
def test_same_logits(v1, mode):
    rt, expected = v1
    np.testing.assert_array_equal(rt.run(mode, expected["x"]), expected[f"logits_{mode}"])
    np.testing.assert_array_equal(rt.run(mode, expected["u8"]), expected[f"u8_logits_{mode}"])


def test_v1_facts_and_input_rules(v1):
    rt, expected = v1
    assert rt.manifest.format_version == 1 and rt.manifest.family == "mlp"
    assert rt.info("rot45")["facts"] == {"angle": 45.0}
    x = expected["x"]
    # the v1 image shapes keep working; values outside [0, 1] are still refused
    np.testing.assert_array_equal(rt.run("rot0", x.reshape(-1, 1, 28, 28)),
                                  expected["logits_rot0"])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        rt.run("rot0", -x)
