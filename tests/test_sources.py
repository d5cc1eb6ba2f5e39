"""Mode sources: one abstract base; folders of .npz files (and their errors), MNIST rotations
and corruptions, Python tensors; names checked before any data is read."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from taugate.bundle.schema import InputSpec
from taugate.training.sources import (
    SOURCES,
    DataConfig,
    FolderModes,
    MNISTModes,
    ModeSource,
    TensorModes,
    open_source,
)
from taugate.training.sources.corruptions import Corruption


def write_mode(root, name, n=40, d=6, seed=0, calibration=False, **override):
    """A tabular mode with negative values: x float32 [n, d], y int64 in 0..2."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test") + (("calibration",) if calibration else ()):
        x = rng.normal(size=(n, d)).astype(np.float32) - 0.5
        y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
        arrays = {"x": x, "y": y, **override.get(split, {})}
        np.savez(folder / f"{split}.npz", **{k: v for k, v in arrays.items() if v is not None})
    return folder


def test_folder_round_trip(tmp_path):
    write_mode(tmp_path, "site-a", seed=1)
    write_mode(tmp_path, "site_b", seed=2, calibration=True)
    (tmp_path / "site_b" / "facts.json").write_text('{"site": "B", "season": "winter"}')
    (tmp_path / "notes").mkdir()  # no train.npz: not a mode
    src = FolderModes(tmp_path)
    assert src.names() == ["site-a", "site_b"]
    a, b = src.mode("site-a"), src.mode("site_b")
    assert (len(a.train), len(a.calibration), len(a.test)) == (36, 4, 40)  # 10 % held out
    assert (len(b.train), len(b.calibration)) == (40, 40)
    assert a.facts == {"source": "folder"} and b.facts["season"] == "winter"
    assert a.train.x.dtype == torch.float32 and a.train.y.dtype == torch.int64
    assert float(a.train.x.min()) < 0  # no [0, 1] assumption anywhere
    with np.load(tmp_path / "site-a" / "train.npz") as f:
        all_x = torch.from_numpy(f["x"])
    seen = torch.cat([a.train.x, a.calibration.x])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, all_x.tolist()))
    again = FolderModes(tmp_path).mode("site-a")  # seeded: the same hold-out every time
    assert torch.equal(again.calibration.x, a.calibration.x)
    assert src.input_spec.to_dict() == {"name": "input", "dtype": "float32",
                                        "shape": ["batch", 6], "range": None, "layout": None}
    reopened = open_source(src.describe())
    assert torch.equal(reopened.mode("site_b").test.x, b.test.x)


def test_float64_and_int32_are_converted_saying_so_once(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_mode(tmp_path, name, train={"x": rng.normal(size=(40, 6)),  # numpy's float64
                                          "y": np.ones(40, np.int32)},
                   test={"x": rng.normal(size=(40, 6))})
    src = FolderModes(tmp_path)
    with caplog.at_level("WARNING"):
        modes = [src.mode(n) for n in ("a", "b")]
    for m in modes:
        for split in (m.train, m.calibration, m.test):
            assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
    notes = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(notes) == 1 and "float64" in notes[0] and "int32" in notes[0], notes
    with np.load(tmp_path / "a" / "test.npz") as f:
        np.testing.assert_allclose(modes[0].test.x.numpy(), f["x"].astype(np.float32))


def _pickled_npz(path):
    np.savez(path, x=np.array([{"evil": pickle.dumps(1)}], dtype=object), y=np.zeros(1, np.int64))


BAD_FOLDERS = [
    # (what, how to break the folder, expected message fragments)
    ("missing y", lambda r: write_mode(r, "m", train={"y": None}), ["train.npz", "no array 'y'", "np.savez"]),
    ("mismatched lengths", lambda r: write_mode(r, "m", train={"y": np.zeros(3, np.int64)}),
     ["train.npz", "40 rows but y has 3"]),
    ("x int64", lambda r: write_mode(r, "m", test={"x": np.zeros((40, 6), np.int64)}),
     ["test.npz", "dtype int64", "float64 are converted", "astype(np.float32)"]),
    ("y float32", lambda r: write_mode(r, "m", train={"y": np.zeros(40, np.float32)}),
     ["train.npz", "dtype float32", "astype(np.int64)"]),
    ("a pickle inside", lambda r: (write_mode(r, "m"), _pickled_npz(r / "m" / "train.npz")),
     ["train.npz", "pickled object array", "never loads"]),
    ("missing test.npz", lambda r: (write_mode(r, "m"), (r / "m" / "test.npz").unlink()),
     ["test.npz", "missing", "needs train.npz and test.npz"]),
    ("bad mode name", lambda r: write_mode(r, "dense"), ["dense", "rename the folder"]),
    ("shape differs between splits", lambda r: write_mode(r, "m", test={"x": np.zeros((40, 5), np.float32)}),
     ["test.npz", "per-sample shape [5]", "[6]"]),
    ("not an npz", lambda r: (write_mode(r, "m"), (r / "m" / "test.npz").write_bytes(b"nope")),
     ["test.npz", "not a readable .npz"]),
    ("NaN in x", lambda r: write_mode(r, "m", train={"x": np.full((40, 6), np.nan, np.float32)}),
     ["train.npz", "NaN"]),
]


@pytest.mark.parametrize("what, breaker, fragments", BAD_FOLDERS, ids=[b[0] for b in BAD_FOLDERS])
def test_bad_folders_name_the_file_and_the_fix(tmp_path, what, breaker, fragments):
    breaker(tmp_path)
    name = FolderModes(tmp_path).names()[0]
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        FolderModes(tmp_path).mode(name)
    for fragment in fragments:
        assert fragment in str(err.value), (what, str(err.value))


def test_empty_modes_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no mode folder"):
        FolderModes(tmp_path).names()
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        FolderModes(tmp_path / "absent")


@pytest.mark.parametrize("name, kind, level", [("noise0.3", "noise", 0.3), ("blur", "blur", 1.0),
                                               ("blur2", "blur", 2.0), ("invert", "invert", None)])
def test_corruption_names(name, kind, level):
    c = Corruption.parse(name)
    assert (c.kind, c.level) == (kind, level)
    assert c.facts["source"] == "mnist-corruption"


@pytest.mark.parametrize("bad", ["noise", "invert2", "shear", "noise-1"])
def test_corruption_names_rejected(bad):
    with pytest.raises(ValueError, match="rot<degrees>.*noise<sigma>"):
        Corruption.parse(bad)


def test_corruptions_are_seeded_and_in_range():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), generator=g, dtype=torch.uint8)
    for name in ("noise0.3", "blur", "invert"):
        c = Corruption.parse(name)
        a, b = c.apply(images, seed=3), c.apply(images, seed=3)
        assert a.shape == (5, 784) and torch.equal(a, b)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    inv = Corruption.parse("invert").apply(images, 0)
    assert torch.allclose(inv, 1 - images.float().div(255).reshape(5, -1))
    assert not torch.equal(Corruption.parse("noise0.3").apply(images, 1),
                           Corruption.parse("noise0.3").apply(images, 2))


def test_tensor_modes_from_datasets():
    x = torch.randn(50, 3, 4)
    y = torch.arange(50) % 3
    ds = torch.utils.data.TensorDataset(x, y)
    src = TensorModes({"a": {"train": ds, "test": (x[:10], y[:10])}}, facts={"a": {"k": 1}})
    md = src.mode("a")
    assert (len(md.train), len(md.calibration), len(md.test)) == (45, 5, 10)
    assert md.facts == {"source": "python", "k": 1}
    assert src.input_spec == InputSpec.plain((3, 4))


def _tensors(tmp_path):
    x, y = torch.rand(20, 6), torch.arange(20) % 3
    return TensorModes({"a": {"train": (x, y), "test": (x, y)}, "b": {"train": (x, y),
                                                                      "test": (x, y)}})


def _folder(tmp_path):
    write_mode(tmp_path, "a", seed=1)
    write_mode(tmp_path, "b", seed=2)
    return FolderModes(tmp_path)


def _mnist(tmp_path):
    return MNISTModes(DataConfig(root=str(tmp_path / "nothing"), download=False))


# (how to make it, a valid name, a bad name, a fragment of the error, the input spec)
SOURCE_TABLE = {
    "mnist": (_mnist, "noise0.3", "sideways", "rot<degrees>", InputSpec.image(1, 28, 28)),
    "folder": (_folder, "b", "c", "a mode folder of", InputSpec.plain((6,))),
    "python": (_tensors, "b", "c", "one of a, b", InputSpec.plain((6,))),
}


@pytest.mark.parametrize("kind", list(SOURCE_TABLE))
def test_source_table(tmp_path, kind):
    """Every source: the one base, its registry kind, names checked without reading data,
    a typed input spec, and describe() that the registry reopens."""
    make, good, bad, fragment, spec = SOURCE_TABLE[kind]
    src = make(tmp_path)
    assert isinstance(src, ModeSource) and SOURCES[kind] is type(src) and src.kind == kind
    assert src.check_names([good]) == [good]
    with pytest.raises(ValueError, match=fragment) as err:
        src.check_names([src.names()[0], bad])
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match="'dense'"):  # never a mode (the bundle's dense model)
        src.check_names(["dense"])
    if kind != "mnist":  # MNIST is not on disk in this test: its spec is known without it
        assert len(src.mixture(src.names())) == sum(len(src.mode(n).train) for n in src.names())
    assert src.input_spec == spec
    described = src.describe()
    assert described["kind"] == kind
    if kind == "python":
        with pytest.raises(ValueError, match="cannot be reopened"):
            open_source(described)
    else:
        assert type(open_source(described)) is type(src)


def test_open_source_names_the_valid_kinds():
    with pytest.raises(ValueError, match="'zip': unknown; valid: mnist, folder, python"):
        open_source({"kind": "zip"})


def test_mixture_is_implemented_once():
    for cls in SOURCES.values():
        assert "mixture" not in vars(cls), cls


def test_abstract_base_refuses_an_incomplete_source():
    class Half(ModeSource):
        def names(self):
            return ["a"]

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_python_modes_convert_saying_so_once(tmp_path, caplog):
    from taugate.api import _write_modes

    x64 = np.random.default_rng(0).normal(size=(20, 3))
    pair = (x64, np.zeros(20, np.int32))
    with caplog.at_level("WARNING"):
        src = TensorModes({"a": {"train": pair, "test": pair}, "b": {"train": pair, "test": pair}})
        _write_modes({"a": {"train": pair, "test": pair}}, tmp_path / "m")
    assert src.mode("b").test.x.dtype == torch.float32
    notes = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert notes == ["a train: x float64, y int32 converted to float32 and int64 (the model's "
                     "types); so were 3 other split(s)",
                     "modes['a']['train']: x float64, y int32 converted to float32 and int64 "
                     "(the model's types); so were 1 other split(s)"], notes
