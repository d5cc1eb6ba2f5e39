"""The MNIST source: parsing, rotation, seeded splits, clear errors for a missing dataset, and
mode names checked without reading MNIST."""

from __future__ import annotations

import pytest
import torch

from taugate.training.sources.mnist import DataConfig, MNISTModes, Mode, rotate


@pytest.mark.parametrize(
    "name, angle",
    [("rot0", 0.0), ("rot45", 45.0), ("rot-30", -30.0), ("rot22.5", 22.5), ("rot90", 90.0)],
)
def test_mode_parse(name, angle):
    assert Mode.parse(name) == Mode(name, angle)
    assert Mode.from_angle(angle).angle == angle


@pytest.mark.parametrize("bad", ["45", "rot", "rotate45", "rot45deg", ""])
def test_mode_parse_rejects(bad):
    with pytest.raises(ValueError, match="expected 'rot<degrees>'"):
        Mode.parse(bad)


def test_rotate_90_is_a_transpose_flip():
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[0, 2, 5] = 255  # row 2, column 5
    flat = rotate(img, 90).reshape(28, 28)
    # counter-clockwise by 90 degrees: (r, c) -> (27 - c, r)
    assert flat[27 - 5, 2] == pytest.approx(1.0, abs=1e-4)
    assert float(flat.sum()) == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(rotate(img, 0).reshape(28, 28), img[0].float() / 255)


def test_missing_dataset_message(tmp_path):
    source = MNISTModes(DataConfig(root=str(tmp_path), download=False))  # reads nothing yet
    with pytest.raises(FileNotFoundError) as info:
        source.mode("rot0")
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "TAUGATE_DATA" in msg and "--data-root" in msg


def test_splits_are_seeded_and_disjoint(data_root):
    cfg = DataConfig(root=data_root, calibration_size=500, limit_train=3000, limit_test=200)
    a, b = MNISTModes(cfg), MNISTModes(cfg)
    ma, mb = a.mode("rot45"), b.mode("rot45")
    assert (len(ma.train), len(ma.calibration), len(ma.test)) == (2500, 500, 200)
    assert torch.equal(ma.train.x, mb.train.x) and torch.equal(ma.calibration.y, mb.calibration.y)
    assert set(a._cal_idx.tolist()).isdisjoint(a._train_idx.tolist())
    assert ma.train.x.dtype == torch.float32 and ma.train.x.shape[1] == 784
    assert 0.0 <= float(ma.train.x.min()) and float(ma.train.x.max()) <= 1.0
    # the same images in both modes, only rotated
    m0 = a.mode("rot0")
    assert torch.equal(m0.train.y, ma.train.y) and not torch.equal(m0.train.x, ma.train.x)
    assert len(a.mixture(["rot0", "rot45"])) == 5000


def test_train_names_a_bad_mode_before_reading_mnist(tmp_path, monkeypatch, capsys):
    """`taugate train --modes rot45,sideways` fails at once, naming `sideways` and what an
    MNIST mode looks like, with no dataset anywhere (TAUGATE_DATA unset, no download)."""
    import time

    from taugate.cli import main

    monkeypatch.delenv("TAUGATE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    start = time.perf_counter()
    code = main(["train", "--out", str(tmp_path / "run"), "--modes", "rot45,sideways",
                 "--no-download", "--quiet", "--device", "cpu"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code != 0 and "'sideways'" in err and "rot<degrees>" in err and "invert" in err
    assert "MNIST could not be read" not in err and "rot45'" not in err
    assert elapsed < 5, elapsed
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()


def test_bench_without_mnist_says_so(tmp_path):
    """MNIST is read at the first mode, so `taugate bench` still reports it missing."""
    from pathlib import Path

    from taugate.bundle.manifest import load_manifest
    from taugate.commands.bench import mnist_data

    _, manifest = load_manifest(Path(__file__).parent / "data" / "v1_bundle")
    data, note = mnist_data(manifest, list(manifest.modes), str(tmp_path))
    assert data == {} and "MNIST not found" in note
