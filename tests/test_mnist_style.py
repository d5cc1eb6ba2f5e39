"""taugate/mnist_style.py and `taugate predict --mnist-style` on a synthetic "photo"."""

from __future__ import annotations

import numpy as np
import pytest

from taugate.mnist_style import mnist_style

PIL = pytest.importorskip("PIL")


def photo(h=300, w=400, top=40, left=250, stroke=(150, 40), paper=225, ink=30, seed=0):
    """Dark ink on light, slightly noisy paper: an upright bar (a '1') off-centre in a big frame."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(paper, 6, (h, w)), 0, 255)
    sh, sw = stroke
    img[top: top + sh, left: left + sw] = ink
    return img.astype(np.uint8)


def com(a):
    ys, xs = np.indices(a.shape)
    m = a.astype(np.float64)
    return (ys * m).sum() / m.sum(), (xs * m).sum() / m.sum()


@pytest.mark.parametrize("kwargs", [{}, {"stroke": (40, 150)}, {"top": 0, "left": 0},
                                    {"paper": 20, "ink": 240}])  # already light on dark
def test_mnist_style_geometry(kwargs):
    out = mnist_style(photo(**kwargs))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0, "background is black"
    assert out.max() >= 250, "ink is white"
    rows, cols = np.nonzero(out > 64)
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert 19 <= extent <= 20, "the longer side fits the 20x20 box"
    sh, sw = kwargs.get("stroke", (150, 40))
    ratio = (rows.max() - rows.min() + 1) / (cols.max() - cols.min() + 1)
    assert ratio == pytest.approx(sh / sw, rel=0.25), "aspect ratio kept"
    cy, cx = com(out)
    assert abs(cy - 13.5) <= 0.75 and abs(cx - 13.5) <= 0.75, "centre of mass at the centre"


def test_mnist_style_float_input_and_errors():
    a = photo().astype(np.float32) / 255
    assert np.array_equal(mnist_style(a), mnist_style(photo()))
    with pytest.raises(ValueError, match="no ink"):
        mnist_style(np.full((50, 50), 200, np.uint8))
    with pytest.raises(ValueError, match="2-D grayscale"):
        mnist_style(np.zeros((3, 28, 28), np.uint8))


def test_predict_mnist_style_png(tiny_bundle, tmp_path, capsys):
    from PIL import Image

    from taugate.cli import main
    from taugate.runtime import ModeRuntime

    path = tmp_path / "photo.png"
    Image.fromarray(photo()).convert("RGB").save(path)
    assert main(["predict", str(tiny_bundle), "--mode", "rot0", "--mnist-style", str(path)]) == 0
    got = int(capsys.readouterr().out.strip())
    want = int(ModeRuntime.open(tiny_bundle).predict("rot0", mnist_style(photo()))[0])
    assert got == want
