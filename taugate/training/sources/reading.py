"""Reading a mode folder's files with bounds: an error naming the file, never a hang or a blow-up.

* :func:`open_regular`: a file is opened only when it is a regular file. A symlink is followed
  (the folder is the user's own data, read with their permissions; a link lets several modes
  share one dataset), but what it points to must be a regular file too: a FIFO (which would
  block forever), a device such as ``/dev/zero`` (endless), a socket or a directory is refused.
  The type is checked before opening and again on the open descriptor (opened non-blocking),
  so a file swapped in between cannot block either.
* :class:`NpzReader`: an ``.npz`` is read member by member with ``numpy.lib.format``; each
  member's ``.npy`` header (dtype, shape) is read before its data, and the bytes the header
  claims must fit in the bytes the zip directory says the member holds, which in turn must fit
  in what its compression can produce from its compressed bytes (1 for stored members,
  :data:`MAX_DEFLATE_RATIO` for deflated ones, the only methods ``np.savez`` and
  ``np.savez_compressed`` write), which must fit in the file. So an array never takes more
  memory than about a thousand times the file's size on disk, and a forged header claiming
  terabytes is refused before anything is allocated. Object arrays (pickles) are never loaded.
* :func:`read_facts`: ``facts.json`` with the rules the runtime applies to ``manifest.json``
  (:func:`taugate.bundle.safe_json.loads_strict`), so facts accepted here are never refused
  after export.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from taugate.bundle.safe_json import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    UnsafeInputError,
    loads_strict,
)
from taugate.bundle.safe_json import open_regular as open_checked

#: Deflate's largest expansion (about 1032:1): a deflated member claiming more is forged.
MAX_DEFLATE_RATIO = 1032
#: facts.json's largest size in bytes.
MAX_FACTS_BYTES = 1 << 20
#: facts.json's deepest nesting: the manifest holds it as ``manifest.modes.<mode>.facts``,
#: three levels below the manifest's own object, and reads the whole manifest with MAX_DEPTH.
FACTS_MAX_DEPTH = MAX_DEPTH - 3

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
                RuntimeError, NotImplementedError, OverflowError, TypeError, SyntaxError)


class ModeFolderError(ValueError):
    """A file of a mode folder that cannot be used; the message starts with the file's path."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)),
                f"not a file (mode {stat.filemode(mode)})")


def open_regular(path: Path):
    """``path`` opened for binary reading when it (or what a symlink names) is a regular file;
    ModeFolderError otherwise (FileNotFoundError when nothing is there)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ModeFolderError(f"{path}: a link to a missing file ({os.readlink(path)}); "
                                  f"point it at a regular file or remove it") from None
        raise
    except OSError as exc:  # a link loop, permission denied, a name too long
        raise ModeFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModeFolderError(f"{path}: not a regular file ({_kind(info.st_mode)}); a mode "
                              f"folder holds regular files only")
    try:  # checked again on the open descriptor: nothing can be swapped in since the stat
        return open_checked(path)
    except UnsafeInputError as exc:
        raise ModeFolderError(f"{exc}; a mode folder holds regular files only") from None
    except OSError as exc:
        raise ModeFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_facts(path: Path) -> dict:
    """The JSON object in ``path`` (see the module docstring), ModeFolderError otherwise."""
    with open_regular(path) as f:
        data = f.read(MAX_FACTS_BYTES + 1)
    if len(data) > MAX_FACTS_BYTES:
        raise ModeFolderError(f"{path}: larger than {MAX_FACTS_BYTES} bytes (the limit for "
                              f"facts); keep facts short or remove the file")
    try:
        facts = loads_strict(data.decode("utf-8"), max_depth=FACTS_MAX_DEPTH)
    except UnicodeDecodeError as exc:
        raise ModeFolderError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                              f"save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ModeFolderError(f"{path}: not valid JSON ({exc}); write a JSON object or "
                              f"remove the file") from None
    except ValueError as exc:  # safe_json's refusals: the manifest would refuse these facts
        raise ModeFolderError(f"{path}: {exc}; facts are copied into the bundle's manifest, "
                              f"which accepts finite numbers of at most {MAX_NUMBER_CHARS} "
                              f"characters, unique keys and nesting up to {FACTS_MAX_DEPTH} "
                              f"levels") from None
    if not isinstance(facts, dict):
        raise ModeFolderError(f"{path}: expected a JSON object, got {type(facts).__name__}")
    return facts


class NpzReader:
    """The ``.npy`` members of an ``.npz`` file, headers first (see the module docstring).
    Use as a context manager; every failure is a ModeFolderError naming the file."""

    def __init__(self, path: Path, hint: str):
        self.path, self.hint = path, hint
        self._file = open_regular(path)
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except _READ_ERRORS as exc:
            self._file.close()
            raise self.error(f"not a readable .npz file (not a zip archive: {exc}); "
                             f"{hint}") from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename.endswith(".npy"):
                key = info.filename[:-4]
                if key in self.members:
                    self.close()
                    raise self.error(f"holds two members named {info.filename!r}; {hint}")
                self.members[key] = info

    def error(self, what: str) -> ModeFolderError:
        return ModeFolderError(f"{self.path}: {what}")

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype member ``key`` claims, checked against its sizes."""
        info = self.members[key]
        stored = info.compress_type == zipfile.ZIP_STORED
        if not stored and info.compress_type != zipfile.ZIP_DEFLATED:
            raise self.error(f"{key}: compression method {info.compress_type}, not stored or "
                             f"deflated; {self.hint}")
        ratio = 1 if stored else MAX_DEFLATE_RATIO
        if info.compress_size > self._size or info.file_size > ratio * info.compress_size + 64:
            raise self.error(f"{key}: the zip directory claims {info.file_size} bytes from "
                             f"{info.compress_size} compressed bytes in a file of "
                             f"{self._size}; the archive is damaged or forged")
        try:
            with self._zip.open(info) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} (expected 1.0 or 2.0)")
                header_bytes = f.tell()
        except _READ_ERRORS as exc:
            raise self.error(f"{key}: not a readable .npy member ({exc}); {self.hint}") from None
        if dtype.hasobject:
            raise self.error(f"{key} is a pickled object array, which taugate never loads; "
                             f"store plain numeric arrays: {self.hint}")
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > info.file_size - header_bytes:
            raise self.error(f"{key}: its header claims {list(shape)} {dtype} "
                             f"({claimed} bytes), but the member holds "
                             f"{info.file_size - header_bytes} bytes of data; the file is "
                             f"damaged or forged")
        return tuple(shape), dtype

    def array(self, key: str) -> np.ndarray:
        """Member ``key``'s array (call :meth:`header` first: it bounds the allocation)."""
        try:
            with self._zip.open(self.members[key]) as f:
                return npy_format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise self.error(f"{key}: not a readable .npy member ({exc}); {self.hint}") from None
