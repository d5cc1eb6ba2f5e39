"""A bundle's files on disk: the path and sha256 checks, verified reads (with the operator
checks for model files), stamps that tell when a served file's content changed after ``open``,
and the materialized weights of shared-backbone modes. numpy + onnxruntime-free helpers + stdlib."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path, PureWindowsPath

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.graph_check import check_model
from taugate.bundle.materialize import build_initializers
from taugate.bundle.safe_json import UnsafeInputError, read_regular_file
from taugate.bundle.safetensors import read_safetensors

MAX_MODEL_BYTES = 2 * 1024 ** 3  # a model file larger than protobuf's limit is refused


def _windows_drive(rel: str) -> bool:
    """Whether ``rel`` names a Windows drive or share (``C:x``, ``\\\\server\\share``): only
    a path holding ``:`` or starting with a separator can, so others skip pathlib's parse."""
    return (rel[:1] in ("/", "\\") or ":" in rel) and bool(PureWindowsPath(rel).drive)


def resolve_file(root: Path, entry) -> str:
    """The absolute path of ``entry.file``, refusing paths that leave ``root``.

    String functions rather than pathlib: pathlib interns every path component, and the
    interpreter's table of interned strings never shrinks (1,000 modes' file names grew it by
    a megabyte)."""
    rel = entry.file
    where = f"{entry.name}: file {rel!r}"
    if not rel or rel.startswith("/") or _windows_drive(rel):
        raise BundleIntegrityError(f"{where}: expected a relative path inside the bundle, got an "
                                   f"absolute path")
    if ".." in _SEPARATORS.split(rel):  # the parts on both / and \
        raise BundleIntegrityError(f"{where}: '..' is not allowed: files must stay inside the "
                                   f"bundle directory")
    if "\0" in rel or len(rel) > 1024:
        raise BundleIntegrityError(f"{entry.name}: file {rel[:100]!r}: expected a relative path "
                                   f"of at most 1024 characters without NUL bytes")
    try:
        base = os.path.realpath(root)
        path = os.path.realpath(os.path.join(base, rel))  # follows symlinks
        try:
            is_file = stat.S_ISREG(os.stat(path).st_mode)
        except OSError as exc:  # as Path.resolve() and Path.is_file() answer
            if exc.errno == errno.ELOOP:
                raise RuntimeError(f"Symlink loop from {exc.filename!r}") from None
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF):
                raise
            is_file = False
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, name too long
        raise BundleIntegrityError(f"{where}: cannot resolve the path: {exc}") from None
    if path != base and not path.startswith(os.path.join(base, "")):
        raise BundleIntegrityError(f"{where}: resolves to {path}, outside the bundle directory "
                                   f"{base} (a symlink pointing out?)")
    if not is_file:
        raise BundleIntegrityError(f"{where}: missing from bundle {str(root)!r}")
    return path


_SEPARATORS = re.compile(r"[\\/]")


def read_verified(root: Path, entry) -> bytes:
    """The bytes of ``entry``'s file after the path and sha256 checks.

    Returning the bytes that were hashed (rather than a path) means what gets loaded is exactly
    what was checked, even if the file changes afterwards.
    """
    return _read_at(resolve_file(root, entry), entry)


def _read_at(path: str, entry) -> bytes:
    """:func:`read_verified` of a path :func:`resolve_file` gave."""
    try:
        data = read_regular_file(path, MAX_MODEL_BYTES)
    except (OSError, UnsafeInputError) as exc:
        raise BundleIntegrityError(f"{entry.name}: file {entry.file!r}: cannot read: "
                                   f"{exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise BundleIntegrityError(f"{entry.name}: file {entry.file!r}: sha256 mismatch: manifest "
                                   f"says {entry.sha256}, file has {digest} (corrupted or "
                                   f"modified after export)")
    return data


def verify_files(root: Path, manifest) -> None:
    """Path + sha256 checks of every file the manifest lists (models, backbone, mode weights)."""
    for entry in manifest.files():
        read_verified(root, entry)


class BundleFiles:
    """Verified reads of one bundle's files, and the stamps of the files that serve its modes."""

    def __init__(self, root: Path, manifest):
        self.root = root
        self.manifest = manifest
        # name -> (entry, stat key of the bytes that hash to entry.sha256): the served files
        self._stamps: dict[str, tuple] = {}
        self._differs: dict[str, tuple] = {}  # name -> (stat key, reason): hashed, not equal
        self._backbone = None  # name -> array, read (and hashed) once, on first need
        # (sha256, materialized names) of model bytes check_model accepted: the check is a pure
        # function of the bytes, and bytes that hash to the same sha256 are the same bytes, so
        # a mode loaded again (an LRU reload, a lazy open's first use) is not parsed again
        self._checked: set[tuple] = set()
        self._names: dict[frozenset, frozenset] = {}

    def read(self, entry, stamp: bool = True) -> bytes:
        """The verified bytes of ``entry``'s file (path + sha256 + operator checks); ``stamp``:
        remember its stat for :meth:`changed` (the file that serves the mode)."""
        path = resolve_file(self.root, entry)
        data = _read_at(path, entry)
        if stamp:
            try:
                self._stamps[entry.name] = (entry, _stat_key(os.stat(path)))
                self._differs.pop(entry.name, None)
            except OSError:
                pass
        materialized = frozenset(step.name for step in entry.materialize or ())
        key = (entry.sha256, materialized)  # _read_at: data hashes to entry.sha256
        if key not in self._checked:
            check_model(data, self.manifest.format_version,
                        f"{entry.name}: file {entry.file!r}", materialized)
            # the modes of a shared backbone materialize the same names: one set for all
            self._checked.add((entry.sha256, self._names.setdefault(materialized, materialized)))
        return data

    def initializers(self, entry) -> dict | None:
        """The initializers of a weightless graph (name -> array), or None for a graph that
        holds its weights."""
        if entry.materialize is None:
            return None
        if self._backbone is None and self.manifest.backbone is not None:
            ref = self.manifest.backbone
            self._backbone = read_safetensors(read_verified(self.root, ref), ref.file)[0]
        mode = {}
        if entry.weights is not None:
            mode = read_safetensors(read_verified(self.root, entry.weights),
                                    entry.weights.file)[0]
        return build_initializers(entry.materialize, self._backbone or {}, mode,
                                  f"{entry.name}: file {entry.file!r}")

    def forget(self, name: str) -> None:
        """Stop watching the file of ``name`` (a mode taken out of service)."""
        self._stamps.pop(name, None)
        self._differs.pop(name, None)

    def changed(self) -> dict[str, str]:
        """Names whose stamped file changed or vanished since it was read, with the reason.

        A file whose stat changed is hashed again (once per new stat) and compared with the
        manifest's sha256: a bundle replaced by a byte-identical copy (new inodes and mtimes)
        stays healthy; different bytes, an unreadable file or a non-regular one do not.
        """
        out = {}
        for name, (entry, key) in list(self._stamps.items()):
            file = entry.file
            try:
                st = os.stat(self.root / file)
            except OSError as exc:
                out[name] = f"file {file!r} is gone since open: {exc.strerror}"
                continue
            new = _stat_key(st)
            if new == key:
                continue
            seen = self._differs.get(name)
            if seen is not None and seen[0] == new:
                out[name] = seen[1]
                continue
            reason = _content_differs(self.root, entry)
            if reason is None:  # same bytes under a new stat: stamp them
                self._stamps[name] = (entry, new)
                self._differs.pop(name, None)
            else:
                self._differs[name] = (new, reason)
                out[name] = reason
        return out


def _content_differs(root: Path, entry) -> str | None:
    """Why ``entry``'s file no longer holds the bytes hashing to ``entry.sha256``, or None.

    The path checks of :func:`resolve_file`, then a streamed hash (no FIFO waited on, at most
    MAX_MODEL_BYTES read)."""
    changed = f"file {entry.file!r} changed since open"
    try:
        path = resolve_file(root, entry)
    except BundleIntegrityError as exc:
        return f"{changed}: {exc}"
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return f"{changed}: cannot read it: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MODEL_BYTES:
            return f"{changed}: not a regular file of at most {MAX_MODEL_BYTES} bytes"
        digest, total = hashlib.sha256(), 0
        while total <= MAX_MODEL_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
    except OSError as exc:
        return f"{changed}: cannot read it: {exc.strerror}"
    finally:
        os.close(fd)
    return None if digest.hexdigest() == entry.sha256 else f"{changed} (its sha256 differs)"


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
