"""``.npz`` files for ``taugate predict``: a tokens bundle's ``input_ids`` and (optionally)
``attention_mask`` arrays, or any bundle's samples as ``x`` -- the layout of a mode folder's
``test.npz``, whose labels ``y`` are ignored.

Read with bounds, as ``.npy`` files are: only a regular file is opened, no pickles, each member's
``.npy`` header must fit in the bytes the archive declares for it (the decompressed size, which
also caps what decompressing can produce), and at most :data:`MAX_NPZ_BYTES` in all.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

#: The most bytes an ``.npz`` may hold once decompressed (all members together).
MAX_NPZ_BYTES = 1 << 30
TOKEN_FIELDS = ("input_ids", "attention_mask")
IGNORED = ("y",)  # a mode folder's labels


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    from numpy.lib import format as npy_format

    with archive.open(info) as f:
        version = npy_format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) \
            else npy_format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError("an object array (a pickle), which taugate never loads")
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > info.file_size:
            raise ValueError(f"{info.filename}: its header claims {list(shape)} {dtype} "
                             f"({claimed:,} bytes) but the archive holds {info.file_size:,}")
    with archive.open(info) as f:
        return npy_format.read_array(f, allow_pickle=False)


def load_npz(path: Path, tokens: bool, open_regular):
    """The inputs in ``path``: for a ``tokens`` bundle a dict ``{"input_ids", ["attention_mask"]}``
    of arrays, else the array ``x``; ValueError naming what was found and what is expected."""
    expected = (f"the arrays {TOKEN_FIELDS[0]!r} and optionally {TOKEN_FIELDS[1]!r}" if tokens
                else "one array 'x' (the samples)")
    wanted = TOKEN_FIELDS if tokens else ("x",)
    try:
        with open_regular(path) as raw, zipfile.ZipFile(raw) as archive:
            members = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
            unknown = sorted(set(members) - set(wanted) - set(IGNORED))
            if unknown or wanted[0] not in members:
                got = ", ".join(repr(n[:40]) for n in list(members)[:8]) or "no arrays"
                raise ValueError(f"holds {got}; expected {expected} (and optionally labels "
                                 f"'y', ignored)")
            total = sum(members[n].file_size for n in wanted if n in members)
            if total > MAX_NPZ_BYTES:
                raise ValueError(f"its arrays take {total:,} bytes once decompressed; at most "
                                 f"{MAX_NPZ_BYTES:,} are read")
            arrays = {n: _member(archive, members[n]) for n in wanted if n in members}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, SyntaxError, TypeError, OverflowError,
            ValueError, NotImplementedError) as exc:
        raise ValueError(f"{path}: cannot read as an .npz of {expected}: {exc}") from None
    return arrays if tokens else arrays["x"]
