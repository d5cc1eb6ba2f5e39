"""Prepare a photo or drawing of a digit the way MNIST's digits were prepared.

MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/): each digit was size-normalized to fit
a 20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in a 28x28
image so that its centre of mass sits at the centre. Digits are white (255) on black (0). A
digit that fills the frame, or dark ink on white paper, is far from that and is misread.

``mnist_style`` does, in order: grayscale; invert when the background (the median of the
border pixels) is light; stretch so the background is 0 and the darkest-to-brightest ink is
0..255; crop to the ink (pixels above ``ink_level`` of the brightest); fit into 20x20 keeping
the aspect ratio; paste into 28x28 with the centre of mass at the centre. numpy + Pillow only.

Memory stays bounded for any input size: an image whose longer side exceeds :data:`WORK_SIDE`
is first shrunk (area averaging) to that side, so the float work arrays take at most a few MB
whatever the photo's resolution; the digit ends up 20 pixels tall anyway.
"""

from __future__ import annotations

import numpy as np

BOX, SIZE = 20, 28
#: The longest side the preparation works at (larger inputs are shrunk first).
WORK_SIDE = 1024


def shrink(a: np.ndarray) -> np.ndarray:
    """``a`` (2-D) shrunk by area averaging so its longer side is at most :data:`WORK_SIDE`;
    uint8 stays uint8, anything else becomes float32."""
    h, w = a.shape
    scale = WORK_SIDE / max(h, w)
    if scale >= 1:
        return a
    from PIL import Image

    img = Image.fromarray(a if a.dtype == np.uint8 else a.astype(np.float32))
    return np.asarray(img.resize((max(2, round(w * scale)), max(2, round(h * scale))), Image.BOX))


def _resize(patch: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.clip(patch * 255, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(img.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255


def mnist_style(gray: np.ndarray, ink_level: float = 0.2) -> np.ndarray:
    """A uint8 [28, 28] MNIST-like image (white digit on black) from a 2-D grayscale array
    (uint8 0-255 or floats in [0, 1]) of any size. Raises ValueError when no ink is found."""
    a = np.asarray(gray)
    if a.ndim != 2 or min(a.shape) < 2:
        raise ValueError(f"mnist_style: expected a 2-D grayscale image of at least 2x2, got "
                         f"shape {a.shape}")
    a = shrink(a)
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 or a.max() > 1 else 1.0)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: MNIST is light ink on black
        a, border = 1 - a, 1 - border
    a = np.clip(a - np.median(border), 0, None)
    if a.max() <= 0:
        raise ValueError("mnist_style: no ink found (the image is uniform)")
    a /= a.max()
    rows, cols = np.nonzero(a > ink_level)
    a = a[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = a.shape
    scale = BOX / max(h, w)
    a = _resize(a, max(1, round(w * scale)), max(1, round(h * scale)))
    h, w = a.shape
    ys, xs = np.indices(a.shape)
    mass = a.sum()
    cy, cx = (ys * a).sum() / mass, (xs * a).sum() / mass
    # the centre of the 28x28 field is pixel coordinate 13.5 (between pixels 13 and 14)
    top = int(np.clip(round((SIZE - 1) / 2 - cy), 0, SIZE - h))
    left = int(np.clip(round((SIZE - 1) / 2 - cx), 0, SIZE - w))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top: top + h, left: left + w] = a
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
