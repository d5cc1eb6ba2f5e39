"""A low-rank correction in the shared layout: the mode file stores its factors and the runtime
merges them at load (taugate/bundle/lowrank.py, the materialize step's ``lowrank`` part)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taugate.bundle.errors import BundleFormatError, BundleIntegrityError
from taugate.bundle.lowrank import MAX_POOL, MAX_RANK, LowRank, with_lowrank
from taugate.bundle.manifest import MaterializeStep
from taugate.bundle.materialize import build_initializer
from taugate.bundle.steps import parse_step

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 16)).astype(np.float32)  # 6 units reading a 4 x 4 image
U = RNG.standard_normal((6, 3)).astype(np.float32)
V1 = RNG.standard_normal((3, 16)).astype(np.float32)  # pool 1: one column per pixel
V2 = RNG.standard_normal((3, 4)).astype(np.float32)  # pool 2: one column per 2 x 2 patch
ROWS = np.array([4, 1, 2], np.int16)
MODE = {"keep": ROWS, "u": U[ROWS], "v1": V1, "v2": V2, "r": np.float32([2.0, 0.5, 3.0]),
        "u_all": U}


def lr_step(v="v1", pool=1, u="u", take=((0, "keep"),), shape=(3, 16), scale=None):
    base = MaterializeStep("w", "backbone", "w", tuple(take), scale, None, "float32", shape)
    return with_lowrank(base, LowRank(u, v, pool))


def build(step, mode=MODE):
    return build_initializer(step, {"w": W}, mode, "test")


def test_pool_1_adds_u_at_v_to_the_taken_rows():
    np.testing.assert_allclose(build(lr_step()), W[ROWS] + U[ROWS] @ V1, rtol=1e-5, atol=1e-5)


def test_pool_2_spreads_each_cell_over_its_patch():
    vx = np.repeat(np.repeat(V2.reshape(3, 2, 2), 2, 1), 2, 2).reshape(3, 16) / 4
    np.testing.assert_allclose(build(lr_step("v2", 2)), W[ROWS] + U[ROWS] @ vx, rtol=1e-5,
                               atol=1e-5)


def test_taking_rows_before_or_after_the_merge_gives_the_same_bits():
    whole = build(lr_step("v2", 2, u="u_all", take=(), shape=(6, 16)))
    assert build(lr_step("v2", 2)).tobytes() == whole[ROWS].tobytes()


def test_the_merge_comes_before_the_scale():
    got = build(lr_step(scale=(0, "r")))
    assert got.tobytes() == (build(lr_step()) * MODE["r"][:, None]).tobytes()


@pytest.mark.parametrize("step, mode, match", [
    (lr_step(u="u_all"), MODE, r"U \[3, r\].*got U float32 \[6, 3\]"),
    (lr_step("v2"), MODE, "V needs 16 columns .*got 4"),
    (lr_step("v1", 2), MODE, r"pool 2 over 16 inputs needs V with \(side/2\)\^2 columns"),
    (lr_step("v2", 4), MODE, r"pool 4 over 16 inputs"),
    (lr_step(), {**MODE, "u": MODE["u"].astype(np.float64)}, "got U float64"),
    (lr_step(), {**MODE, "u": np.zeros((3, 0), np.float32),
                 "v1": np.zeros((0, 16), np.float32)}, r"rank must lie in \[1, 16\].*got 0"),
    (lr_step("big"), {**MODE, "u": np.zeros((3, MAX_RANK + 1), np.float32),
                      "big": np.zeros((MAX_RANK + 1, 16), np.float32)},
     r"rank must lie in \[1, 16\]"),
    (lr_step(u="gone"), MODE, r"tensors \['gone'\] are not in the file"),
    (lr_step(shape=(3, 15)), MODE, r"declares float32 \[3, 15\]"),
])
def test_a_malformed_lowrank_step_is_refused(step, mode, match):
    with pytest.raises(BundleIntegrityError, match=match):
        build(step, mode)


def test_the_rank_is_bounded_even_where_v_is_wide():
    wide = np.zeros((4, 4096), np.float32)
    step = with_lowrank(MaterializeStep("w", "backbone", "w", (), None, None, "float32",
                                        (4, 4096)), LowRank("u", "v", 1))
    mode = {"u": np.zeros((4, MAX_RANK + 1), np.float32),
            "v": np.zeros((MAX_RANK + 1, 4096), np.float32)}
    with pytest.raises(BundleIntegrityError, match=rf"at most {MAX_RANK}\), got {MAX_RANK + 1}"):
        build_initializer(step, {"w": wide}, mode, "test")


STEP = {"name": "w", "source": "backbone", "tensor": "w", "take": [[0, "keep"]],
        "lowrank": {"u": "u", "v": "v2", "pool": 2}, "dtype": "float32", "shape": [3, 16]}


def test_the_manifest_step_round_trips():
    step = parse_step(STEP, "m", has_weights=True, has_backbone=True)
    assert step.lowrank == LowRank("u", "v2", 2)
    assert build(step).tobytes() == build(lr_step("v2", 2)).tobytes()


@pytest.mark.parametrize("lowrank, match", [
    ({"u": "u", "v": "v2"}, "exactly the keys"),
    ({"u": "u", "v": "v2", "pool": 2, "rank": 3}, "exactly the keys"),
    ({"u": "u", "v": "v2", "pool": 0}, r"lowrank.pool: expected an integer in \[1, 64\], got 0"),
    ({"u": "u", "v": "v2", "pool": MAX_POOL + 1}, "got 65"),
    ({"u": "u", "v": "v2", "pool": True}, "got True"),
    ({"u": 3, "v": "v2", "pool": 2}, "lowrank.u: expected a tensor name"),
    ([["u", "v2", 2]], "exactly the keys"),
])
def test_a_malformed_lowrank_field_is_refused(lowrank, match):
    with pytest.raises(BundleFormatError, match=match):
        parse_step({**STEP, "lowrank": lowrank}, "m", has_weights=True, has_backbone=True)


def test_lowrank_needs_the_mode_file():
    with pytest.raises(BundleFormatError, match="no take/scale/add/lowrank without"):
        parse_step({**STEP, "take": None}, "m", has_weights=False, has_backbone=True)


def test_an_unknown_step_key_is_refused_as_a_newer_format():
    with pytest.raises(BundleFormatError, match=r"unknown \['lowrank_v2'\]: a step of a newer "
                                                "taugate; upgrade taugate"):
        parse_step({**STEP, "lowrank_v2": 1}, "m", has_weights=True, has_backbone=True)


@pytest.mark.filterwarnings("ignore:south")
def test_a_corrected_mode_stores_only_its_factors_and_computes_the_standalone_graph(tmp_path):
    torch = pytest.importorskip("torch")
    import taugate
    from taugate.bundle.safetensors import read_safetensors
    from taugate.runtime import ModeRuntime

    rng = np.random.default_rng(1)

    def data(n):
        x = rng.random((n, 16), dtype=np.float32)
        return x, (x[:, :4].sum(1) > x[:, 4:8].sum(1)).astype(np.int64)

    torch.manual_seed(0)
    modes = {"south": {"train": data(240), "test": data(120), "calibration": data(64)}}
    run = taugate.train(modes, tmp_path / "run", hidden=(32, 32), epochs=2, adapt_epochs=2,
                        adapt_min_steps=0, batch_size=32, device="cpu",
                        method_options={"correction_rank": 2, "correction_pool": 2,
                                        "correction_scale": 1.0})
    shared = taugate.export(run, tmp_path / "shared", layout="shared", allow_worse=True)
    alone = taugate.export(run, tmp_path / "alone", layout="standalone", allow_worse=True)
    entry = json.loads((shared / "manifest.json").read_text())["modes"]["south"]
    first = entry["materialize"][0]
    assert first["source"] == "backbone" and first["lowrank"]["pool"] == 2
    tensors = read_safetensors((shared / entry["weights"]["file"]).read_bytes(), "mode")[0]
    kept = entry["units_kept"][0]
    assert tensors[first["lowrank"]["u"]].shape == (kept, 2)
    assert tensors[first["lowrank"]["v"]].shape == (2, 4)
    assert not [n for n, t in tensors.items() if t.ndim > 1 and t.shape[1] == 16]  # no W rows
    x = data(64)[0]
    with ModeRuntime.open(shared) as a, ModeRuntime.open(alone) as b:
        assert a.run("south", x).tobytes() == b.run("south", x).tobytes()
