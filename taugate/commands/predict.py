"""Classify inputs with one mode of a bundle, following the bundle's input spec.

Inputs: ``.npy`` files, any shape and dtype the bundle's input spec accepts (``[N, *shape]`` or
one sample; see ``taugate info`` for the spec), ``.npz`` files (a tokens bundle's ``input_ids``
and ``attention_mask``, or samples ``x``: :mod:`taugate.commands.predict_npz`), and -- only when the manifest's input has an
image layout -- image files (PNG, or anything Pillow reads): converted to grayscale ('L') for one
channel or RGB for three and, unless already the layout's size, resized with
``Image.resize((width, height), Image.BILINEAR)``. MNIST digits are white on black; pass
``--invert`` for black-on-white images. Prints one class id per line (files in order, samples in
order), or with ``--json`` a list of {file, index, class, logits}.

Files are read with bounds, and any file that breaks them is one error line (exit status 2),
never a hang or a huge allocation: only regular files are opened (a FIFO or a device is
refused); an ``.npy`` header's shape and dtype must fit in the file's size before anything is
allocated (no pickles); an image's size is read from its header and one of more than
:data:`MAX_IMAGE_PIXELS` pixels is refused before it is decoded. ``--mnist-style`` decodes JPEGs
at a reduced scale and works at most at 1024 pixels a side (``taugate.mnist_style.WORK_SIDE``),
so its memory is bounded by the decoded image.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

HELP = "classify .npy, .npz (token ids) or PNG images with one mode of a bundle"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: The most pixels an image file may have (50 megapixels: more than a 48 MP phone camera).
MAX_IMAGE_PIXELS = 50_000_000


class ImageTooLargeError(ValueError):
    """An image file with more than :data:`MAX_IMAGE_PIXELS` pixels (refused before decoding)."""


def parse_providers(text: str):
    """'auto' / one name / 'a,b' -> what ModeRuntime.open accepts."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--providers: expected auto, a provider or a comma-separated list, "
                         f"got {text!r}")
    return items[0] if len(items) == 1 else items


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help=".npy arrays, .npz (input_ids, attention_mask for token bundles) or "
                        "PNG images")
    p.add_argument("--mode", required=True,
                   help="mode to run ('dense' for the dense model; 'auto': each row in the mode "
                        "the bundle's router names, reported per row)")
    p.add_argument("--unknown", choices=["refuse", "dense"], default="refuse",
                   help="with --mode auto: refuse rows of no known mode (default) or run them "
                        "on the dense model")
    p.add_argument("--invert", action="store_true",
                   help="invert image files (for black digits on white; MNIST is white on black)")
    p.add_argument("--mnist-style", action="store_true",
                   help="prepare image files as MNIST's digits were: grayscale, invert if the "
                        "background is light, crop to the ink, fit into 20x20 keeping the "
                        "aspect ratio, centre of mass at the centre of 28x28 (for photos)")
    p.add_argument("--json", action="store_true", help="print JSON with logits")
    p.add_argument("--providers", default="auto",
                   help="auto (default), cpu, cuda, directml, or a comma-separated list")
    from taugate.commands.predict_lm import add_lm_arguments

    add_lm_arguments(p)


def open_regular(path: Path):
    """``path`` opened for binary reading if it (or what a symlink names) is a regular file;
    ValueError for a FIFO, a device or a directory (never blocks)."""
    from taugate.bundle.safe_json import UnsafeInputError
    from taugate.bundle.safe_json import open_regular as open_checked

    try:
        return open_checked(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnsafeInputError as exc:
        raise ValueError(f"{exc}; expected a .npy array or an image file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot open: {exc.strerror or exc}") from None


def load_npy(path: Path):
    """The array in the ``.npy`` file ``path``: its header is read first, and a shape and dtype
    that need more bytes than the file holds (a forged or truncated file) are refused before
    anything is allocated; object arrays (pickles) are refused."""
    from numpy.lib import format as npy_format

    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            version = npy_format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version[0]}.{version[1]} (expected 1.0 "
                                 f"or 2.0, what np.save writes for numeric arrays)")
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) \
                else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                raise ValueError("an object array (a pickle), which taugate never loads")
            claimed, held = math.prod(shape) * dtype.itemsize, size - f.tell()
            if claimed > held:
                raise ValueError(f"its header claims {list(shape)} {dtype} ({claimed:,} bytes) "
                                 f"but the file holds {held:,} bytes of data")
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError, OverflowError) as exc:
            raise ValueError(f"{path}: cannot read as a .npy array: {exc}") from None


def load_image(path: Path, invert: bool = False, layout: dict | None = None,
               mnist_style: bool = False):
    """A uint8 image array for ``layout`` (default MNIST's 1x28x28): [H, W] for one channel,
    [C, H, W] for three (bilinear resize, optional invert; or with ``mnist_style`` the
    preparation of taugate/mnist_style.py, for a 1x28x28 layout)."""
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError(f"{path}: reading images needs Pillow: pip install pillow (or "
                           f"'taugate[train]')") from None
    import numpy as np

    layout = layout or {"kind": "image", "channels": 1, "height": 28, "width": 28}
    channels, size = layout["channels"], (layout["width"], layout["height"])
    if channels not in (1, 3):
        raise ValueError(f"{path}: the bundle's image input has {channels} channels; image files "
                         f"can feed 1 (grayscale) or 3 (RGB): pass a .npy array instead")
    if mnist_style and (channels, size) != (1, (28, 28)):
        raise ValueError(f"{path}: --mnist-style prepares 1x28x28 digits; this bundle's image "
                         f"input is {channels}x{size[1]}x{size[0]}")
    from taugate.mnist_style import WORK_SIDE

    limit = f"image files are limited to {MAX_IMAGE_PIXELS:,} pixels: downscale it first"
    f = open_regular(path)
    try:
        with f, warnings.catch_warnings():
            # Pillow warns (then fails) on pixel counts far above ours: both end as one line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                width, height = img.size  # from the header: nothing decoded yet
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageTooLargeError(f"{path}: {width}x{height} is "
                                             f"{width * height:,} pixels; {limit}")
                if mnist_style:
                    img.draft("L", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at 1/2..1/8 scale
                img = img.convert("L" if channels == 1 else "RGB")
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{path}: {exc}; {limit}") from None
    except (OSError, SyntaxError, EOFError, ValueError) as exc:  # Pillow's "not an image"
        raise ValueError(f"{path}: cannot read as an image: {exc}") from None
    if mnist_style:
        from taugate.mnist_style import mnist_style as prepare

        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.BOX)  # what mnist_style would shrink to
        try:
            return prepare(np.asarray(img, dtype=np.uint8))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    if img.size != size:
        img = img.resize(size, Image.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)
    if channels == 3:
        pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return 255 - pixels if invert else pixels


def load_file(path: Path, invert: bool = False, layout: dict | None = None,
              images: bool = True, mnist_style: bool = False):
    """The array in ``path``: ``.npy`` as stored (no pickles), ``.npz`` via
    :func:`taugate.commands.predict_npz.load_npz` (a tokens layout: a dict of ``input_ids`` and
    ``attention_mask``), images via :func:`load_image` (``images``: whether the bundle's input
    takes images at all)."""
    tokens = bool(layout) and layout.get("kind") == "tokens"
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_npy(path)
    if suffix == ".npz":
        from taugate.commands.predict_npz import load_npz

        return load_npz(path, tokens, open_regular)
    if suffix in IMAGE_SUFFIXES:
        if not images:
            raise ValueError(f"{path}: this bundle's input has no image layout (see `taugate "
                             f"info`): pass its samples as a .npy array")
        return load_image(path, invert, layout, mnist_style)
    raise ValueError(f"{path}: unsupported file type {suffix or '(none)'}; expected .npy, .npz "
                     f"or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")


def run(args) -> int:
    from taugate.runtime import InputError, ModeRuntime

    if args.prompt is not None or not args.files:
        from taugate.commands.predict_lm import run_lm

        return run_lm(args)

    rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers), lazy=True)
    results = []
    for name in args.files:
        path = Path(name)
        spec = rt.manifest.input
        x = load_file(path, args.invert, spec.layout, images=spec.image_shape is not None,
                      mnist_style=args.mnist_style)
        try:
            if isinstance(x, dict):  # token ids and masks: one packed array
                x = rt.checker.coerce(x)
            if args.mode == "auto":
                auto = rt.run_auto(x, unknown=args.unknown)
                logits, modes = auto.logits, auto.modes
            else:
                logits, modes = rt.run(args.mode, x), None
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        for i, row in enumerate(logits):
            results.append({"file": str(path), "index": i, "class": int(row.argmax()),
                            "logits": [float(v) for v in row]})
            if modes is not None:
                results[-1]["mode"] = modes[i]
    if args.json:
        print(json.dumps({"mode": args.mode, "predictions": results}, indent=2))
    else:
        print("\n".join(str(r["class"]) + (f" {r['mode']}" if "mode" in r else "")
                        for r in results))
    return 0
