"""safetensors bytes from numpy arrays (the writer twin of :mod:`taugate.bundle.safetensors`).

numpy + stdlib only, so export stays torch-free. Tensors are laid out by decreasing item size
(then name) and the header is padded to a multiple of 8, so every tensor starts aligned to its
item size and the reader's ``np.frombuffer`` views need no copy.
"""

from __future__ import annotations

import json

import numpy as np

CODES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
         np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
         np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("?"): "BOOL"}


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """The safetensors file holding ``tensors`` (name -> array) and string ``metadata``."""
    arrays = {}
    for name, value in tensors.items():
        arr = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        if arr.dtype.newbyteorder("<") not in CODES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} not supported; valid: "
                             f"{', '.join(str(d) for d in CODES)}")
        arrays[name] = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header, offset = {}, 0
    for name in order:
        arr = arrays[name]
        header[name] = {"dtype": CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(len(text) + 8) % 8)
    return b"".join([len(text).to_bytes(8, "little"), text,
                     *(arrays[name].tobytes() for name in order)])
