"""Fuzz the mode folder reader: mutated .npz and facts.json files either load or raise
ModeFolderError naming the file, never another exception (bounded and deterministic)."""

from __future__ import annotations

import io
import json
import math
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taugate.bundle.safe_json import loads_strict
from taugate.training.sources import FolderModes
from taugate.training.sources.reading import ModeFolderError

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _npz_bytes(n: int, compression: int) -> bytes:
    rng = np.random.default_rng(n)
    arrays = {"x": rng.normal(size=(n, 3)).astype(np.float32),
              "y": rng.integers(0, 3, n).astype(np.int64)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            zf.writestr(f"{key}.npy", member.getvalue())
    return buf.getvalue()


SEEDS = {("stored", 6): _npz_bytes(6, zipfile.ZIP_STORED),
         ("deflated", 6): _npz_bytes(6, zipfile.ZIP_DEFLATED)}


def _interesting(data: bytes) -> list[int]:
    """Offsets worth mutating: zip header fields (sizes, offsets, counts) and .npy headers."""
    out = []
    for sig, fields in ((b"PK\x03\x04", (8, 18, 22, 26)), (b"PK\x01\x02", (10, 20, 24, 28, 42)),
                        (b"PK\x05\x06", (8, 10, 12, 16)), (b"\x93NUMPY", (6, 8, 20, 40, 60))):
        start = data.find(sig)
        while start != -1:
            out += [start + f for f in fields if start + f < len(data)]
            start = data.find(sig, start + 1)
    return out or [0]


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few edits: overwrites (often at a header field), a truncation, an
    insertion or a deletion."""
    out = bytearray(data)
    targets = _interesting(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["field", "byte", "truncate", "insert", "delete"]))
        if not out:
            break
        if kind == "field":
            at = draw(st.sampled_from(targets)) % len(out)
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**31, 10**9]))
            width = draw(st.sampled_from([1, 2, 4]))
            out[at: at + width] = value.to_bytes(8, "little")[:width]
        elif kind == "byte":
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[draw(st.integers(0, len(out) - 1)):]
        elif kind == "insert":
            at = draw(st.integers(0, len(out)))
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            at = draw(st.integers(0, len(out) - 1))
            del out[at: at + draw(st.integers(1, 16))]
    return bytes(out)


_scalars = (st.none() | st.booleans() | st.text(max_size=8)
            | st.integers(-(10**120), 10**120) | st.floats(allow_nan=True, allow_infinity=True))
_json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                            max_leaves=12)


def _deep(depth: int) -> str:
    return '{"a": ' + "[" * depth + "1" + "]" * depth + "}"


facts_texts = st.one_of(
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=4), _json_values, max_size=4).map(
        lambda v: json.dumps(v).encode()),
    st.integers(55, 70).map(lambda d: _deep(d).encode()),
    mutated(b'{"site": "B", "n": 12, "ratio": 0.5, "tags": ["a", {"b": [1, 2]}]}'),
)


def _load(root: Path) -> None:
    """Load mode ``m``; a load must give data and facts the runtime would accept."""
    mode = FolderModes(root).mode("m")
    for split in (mode.train, mode.calibration, mode.test):
        assert str(split.x.dtype) == "torch.float32" and str(split.y.dtype) == "torch.int64"
        assert len(split.x) == len(split.y) > 0
    assert loads_strict(json.dumps({"modes": {"m": {"facts": mode.facts}}}, allow_nan=False))


def _check(root: Path, path: Path) -> None:
    try:
        _load(root)
    except ModeFolderError as exc:
        assert str(path) in str(exc), str(exc)


@FUZZ
@given(seed=st.sampled_from(sorted(SEEDS)), which=st.sampled_from(["train", "test"]),
       data=st.data())
def test_mutated_npz_loads_or_names_the_file(seed, which, data):
    blob = data.draw(mutated(SEEDS[seed]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        folder.mkdir()
        for split in ("train", "test"):
            (folder / f"{split}.npz").write_bytes(SEEDS[seed] if split != which else blob)
        _check(Path(tmp), folder / f"{which}.npz")


@FUZZ
@given(text=facts_texts)
def test_mutated_facts_load_or_name_the_file(text):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        folder.mkdir()
        for split in ("train", "test"):
            (folder / f"{split}.npz").write_bytes(SEEDS[("stored", 6)])
        (folder / "facts.json").write_bytes(text)
        _check(Path(tmp), folder / "facts.json")


def test_the_seeds_load():
    """The unmutated files load (so the fuzz targets above exercise the success path too)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        folder.mkdir()
        for split in ("train", "test"):
            (folder / f"{split}.npz").write_bytes(SEEDS[("deflated", 6)])
        (folder / "facts.json").write_text('{"n": 1.5}')
        _load(Path(tmp))
        assert math.isclose(FolderModes(Path(tmp)).mode("m").facts["n"], 1.5)
