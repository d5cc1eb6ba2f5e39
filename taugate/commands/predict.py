"""Classify images with one mode of a bundle.

Inputs: ``.npy`` files (any shape and dtype the runtime accepts: float32/float64 in [0, 1] or
uint8 0-255, shaped [N, 784], [N, 28, 28], [N, 1, 28, 28] or one image) and image files (PNG,
or anything Pillow reads): converted to grayscale ('L') and, unless already 28x28, resized with
``Image.resize((28, 28), Image.BILINEAR)``. MNIST digits are white on black; pass ``--invert``
for black-on-white images. Prints one class id per line (files in order, images in order), or
with ``--json`` a list of {file, index, class, logits}.
"""

from __future__ import annotations

import json
from pathlib import Path

HELP = "classify .npy or PNG images with one mode of a bundle"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_providers(text: str):
    """'auto' / one name / 'a,b' -> what ModeRuntime.open accepts."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--providers: expected auto, a provider or a comma-separated list, "
                         f"got {text!r}")
    return items[0] if len(items) == 1 else items


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".npy arrays or PNG images")
    p.add_argument("--mode", required=True, help="mode to run (or 'dense' for the dense model)")
    p.add_argument("--invert", action="store_true",
                   help="invert image files (for black digits on white; MNIST is white on black)")
    p.add_argument("--mnist-style", action="store_true",
                   help="prepare image files as MNIST's digits were: grayscale, invert if the "
                        "background is light, crop to the ink, fit into 20x20 keeping the "
                        "aspect ratio, centre of mass at the centre of 28x28 (for photos)")
    p.add_argument("--json", action="store_true", help="print JSON with logits")
    p.add_argument("--providers", default="auto",
                   help="auto (default), cpu, cuda, directml, or a comma-separated list")


def load_image(path: Path, invert: bool = False, mnist_style: bool = False):
    """A uint8 [28, 28] array from an image file (grayscale, bilinear resize, optional invert;
    or with ``mnist_style`` the preparation of taugate/mnist_style.py)."""
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError(f"{path}: reading images needs Pillow: pip install pillow (or "
                           f"'taugate[train]')") from None
    import numpy as np

    try:
        with Image.open(path) as img:
            gray = img.convert("L")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read as an image: {exc}") from exc
    if mnist_style:
        from taugate.mnist_style import mnist_style as prepare

        try:
            return prepare(np.asarray(gray, dtype=np.uint8))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    if gray.size != (28, 28):
        gray = gray.resize((28, 28), Image.BILINEAR)
    pixels = np.asarray(gray, dtype=np.uint8)
    return 255 - pixels if invert else pixels


def load_file(path: Path, invert: bool = False, mnist_style: bool = False):
    """The array in ``path``: ``.npy`` as stored (no pickles), images via :func:`load_image`."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot read as a .npy array: {exc}") from exc
    if suffix in IMAGE_SUFFIXES:
        return load_image(path, invert, mnist_style)
    raise ValueError(f"{path}: unsupported file type {suffix or '(none)'}; expected .npy or an "
                     f"image ({', '.join(sorted(IMAGE_SUFFIXES))})")


def run(args) -> int:
    from taugate.runtime import InputError, ModeRuntime

    rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers), lazy=True)
    results = []
    for name in args.files:
        path = Path(name)
        x = load_file(path, args.invert, args.mnist_style)
        try:
            logits = rt.run(args.mode, x)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        for i, row in enumerate(logits):
            results.append({"file": str(path), "index": i, "class": int(row.argmax()),
                            "logits": [float(v) for v in row]})
    if args.json:
        print(json.dumps({"mode": args.mode, "predictions": results}, indent=2))
    else:
        print("\n".join(str(r["class"]) for r in results))
    return 0
