"""The bundle schema (format_version 1): load ``manifest.json``, validate it, and check files.

Standard library only. The writer is ``taugate.export.bundle``; this module is the reader's
side of that contract and trusts nothing it reads: every field is type-checked, every file path
must stay inside the bundle directory (no absolute paths, no ``..``, no symlink pointing out),
and every file must match its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from taugate.runtime.errors import BundleError, BundleFormatError, BundleIntegrityError

BUNDLE_FORMAT = "taugate-bundle"
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
DENSE = "dense"  # the name under which the dense baseline model is reachable
PRECISIONS = ("fp32", "int8")  # fp32: the entry's own file; others: entry["variants"][p]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``name`` float32 [batch, features], values in ``range``."""

    name: str
    dtype: str
    features: int
    range: tuple[float, float]
    image_shape: tuple[int, int] | None  # e.g. (28, 28) when features == 784


@dataclass(frozen=True)
class OutputSpec:
    """The model output: ``name`` float32 logits [batch, classes]."""

    name: str
    dtype: str
    classes: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class ModelEntry:
    """One model file of the bundle (the dense baseline or a mode) and its manifest facts."""

    name: str
    file: str  # relative to the bundle directory, POSIX separators
    sha256: str
    macs: int
    facts: dict = field(default_factory=dict)  # the manifest entry as written


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. ``raw`` is the parsed JSON as written."""

    format: str
    format_version: int
    created_by: str
    input: InputSpec
    output: OutputSpec
    dense: ModelEntry
    modes: dict  # name -> ModelEntry, in manifest order
    raw: dict = field(repr=False, default_factory=dict)

    def entry(self, name: str) -> ModelEntry | None:
        """The entry of mode ``name`` (or of the dense model for ``DENSE``); None if unknown."""
        return self.dense if name == DENSE else self.modes.get(name)


def _fail(where: str, what: str, got) -> BundleFormatError:
    return BundleFormatError(f"{MANIFEST_NAME}: {where}: expected {what}, got {got!r}")


def _get(d: dict, key: str, where: str, kind, what: str, optional: bool = False):
    if key not in d:
        if optional:
            return None
        raise BundleFormatError(f"{MANIFEST_NAME}: {where}: missing field {key!r}")
    value = d[key]
    if optional and value is None:
        return None
    # bool is an int subclass; a true/false where a number belongs is a schema error.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise _fail(f"{where}.{key}", what, value)
    return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _int_list(d: dict, key: str, where: str) -> list[int]:
    value = _get(d, key, where, list, "a list of non-negative integers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise _fail(f"{where}.{key}", "a list of non-negative integers", value)
    return value


def _batch_shape(spec: dict, where: str, what: str) -> list:
    """``[batch, n]`` with a positive integer n (the batch axis is dynamic)."""
    shape = _get(spec, "shape", where, list, f"[batch, {what}]")
    if len(shape) != 2 or not isinstance(shape[1], int) or isinstance(shape[1], bool) \
            or shape[1] < 1:
        raise _fail(f"{where}.shape", f"[batch, {what}] with {what} >= 1", shape)
    return shape


def _tensor_spec(d: dict, where: str, what: str) -> tuple[dict, str, str, list]:
    """The ``input``/``output`` object: its dict, name, dtype (float32) and [batch, n] shape."""
    spec = _get(d, where, "manifest", dict, "an object")
    name = _get(spec, "name", where, str, "a string")
    dtype = _get(spec, "dtype", where, str, "'float32'")
    if dtype != "float32":
        raise _fail(f"{where}.dtype", "'float32'", dtype)
    return spec, name, dtype, _batch_shape(spec, where, what)


def _parse_input(d: dict) -> InputSpec:
    spec, name, dtype, shape = _tensor_spec(d, "input", "features")
    rng = _get(spec, "range", "input", list, "[low, high]")
    if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in rng) or not rng[0] < rng[1]:
        raise _fail("input.range", "[low, high] numbers with low < high", rng)
    image = _get(spec, "image_shape", "input", list, "[height, width] or null", optional=True)
    if image is not None and (len(image) != 2 or not all(isinstance(v, int) and v > 0
                                                         for v in image)
                              or image[0] * image[1] != shape[1]):
        raise _fail("input.image_shape", f"null or [h, w] with h*w == {shape[1]}", image)
    return InputSpec(name, dtype, shape[1], (float(rng[0]), float(rng[1])),
                     tuple(image) if image is not None else None)


def _parse_output(d: dict) -> OutputSpec:
    spec, name, dtype, shape = _tensor_spec(d, "output", "classes")
    labels = _get(spec, "labels", "output", list, "a list of strings")
    if len(labels) != shape[1] or not all(isinstance(v, str) for v in labels):
        raise _fail("output.labels", f"{shape[1]} strings (one per class)", labels)
    return OutputSpec(name, dtype, shape[1], tuple(labels))


def _parse_model(name: str, d: dict, where: str, is_mode: bool) -> ModelEntry:
    if not isinstance(d, dict):
        raise _fail(where, "an object", d)
    file = _get(d, "file", where, str, "a relative path inside the bundle")
    sha = _get(d, "sha256", where, str, "64 lowercase hex characters")
    if not _SHA256.match(sha):
        raise _fail(f"{where}.sha256", "64 lowercase hex characters", sha)
    macs = _get(d, "macs", where, int, "a non-negative integer")
    if macs < 0:
        raise _fail(f"{where}.macs", "a non-negative integer", macs)
    if is_mode:
        _get(d, "method", where, str, "a string")
        _get(d, "angle", where, (int, float), "a number")
        kept, total = _int_list(d, "units_kept", where), _int_list(d, "units_total", where)
        if len(kept) != len(total) or any(k > t for k, t in zip(kept, total)):
            raise _fail(f"{where}.units_kept", f"one count <= units_total {total} per layer", kept)
        for key in ("calibration_accuracy", "test_accuracy"):
            _get(d, key, where, (int, float), "a number or null", optional=True)
        _get(d, "kept_indices", where, list, "a list of index lists", optional=True)
    entry = ModelEntry(name, file, sha, macs, dict(d))
    for precision in PRECISIONS[1:]:
        variant_entry(entry, precision)  # malformed variants fail at load, not at first use
    return entry


def variant_entry(entry: ModelEntry, precision: str) -> ModelEntry | None:
    """``entry`` served in ``precision``: itself for fp32, else its ``variants[precision]``
    file (same name, MACs and facts); None when the bundle has no such variant.

    Raises :class:`BundleFormatError` for a malformed ``variants`` object."""
    if precision == "fp32":
        return entry
    variants = entry.facts.get("variants")
    where = f"{'dense' if entry.name == DENSE else 'modes.' + entry.name}.variants"
    if variants is None:
        return None
    if not isinstance(variants, dict):
        raise _fail(where, "an object mapping precision names", variants)
    v = variants.get(precision)
    if v is None:
        return None
    where = f"{where}.{precision}"
    if not isinstance(v, dict):
        raise _fail(where, "an object", v)
    file = _get(v, "file", where, str, "a relative path inside the bundle")
    sha = _get(v, "sha256", where, str, "64 lowercase hex characters")
    if not _SHA256.match(sha):
        raise _fail(f"{where}.sha256", "64 lowercase hex characters", sha)
    if v.get("precision", precision) != precision:
        raise _fail(f"{where}.precision", repr(precision), v.get("precision"))
    return ModelEntry(entry.name, file, sha, entry.macs, entry.facts)


def parse_manifest(data) -> Manifest:
    """Validate a parsed manifest (pure); raises :class:`BundleFormatError` naming the field."""
    if not isinstance(data, dict):
        raise _fail("top level", "a JSON object", type(data).__name__)
    fmt = data.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleFormatError(f"{MANIFEST_NAME}: format: expected {BUNDLE_FORMAT!r}, got "
                                f"{fmt!r}: not a taugate bundle")
    version = data.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
        raise BundleFormatError(
            f"{MANIFEST_NAME}: format_version {version!r} is not supported by this runtime "
            f"(supported: {supported}); upgrade taugate or re-export the bundle")
    created_by = _get(data, "created_by", "manifest", str, "a string")
    inp, out = _parse_input(data), _parse_output(data)
    dense = _parse_model(DENSE, _get(data, "dense", "manifest", dict, "an object"), "dense",
                         is_mode=False)
    raw_modes = _get(data, "modes", "manifest", dict, "an object mapping mode names")
    if not raw_modes:
        raise _fail("modes", "at least one mode", raw_modes)
    modes = {}
    for name, entry in raw_modes.items():
        if not name or name == DENSE or name.strip() != name:
            raise _fail("modes", f"non-empty mode names without surrounding spaces, other than "
                        f"{DENSE!r} (reserved for the dense model)", name)
        modes[name] = _parse_model(name, entry, f"modes.{name}", is_mode=True)
    return Manifest(fmt, version, created_by, inp, out, dense, modes, data)


def load_manifest(bundle: str | os.PathLike) -> tuple[Path, Manifest]:
    """Read and validate ``bundle/manifest.json``; ``bundle`` may also name the manifest file.

    Returns (bundle directory, manifest). Checks no model file: see :func:`verify_files`.
    """
    root = Path(bundle)
    if root.is_file() and root.name == MANIFEST_NAME:
        root = root.parent
    if not root.is_dir():
        raise BundleError(f"bundle {str(root)!r}: not a directory (expected a bundle directory "
                          f"holding {MANIFEST_NAME})")
    path = root / MANIFEST_NAME
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {str(root)!r}: no {MANIFEST_NAME}: is this a taugate "
                          f"bundle?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleFormatError(f"{path}: invalid JSON: {exc}") from exc
    return root, parse_manifest(data)


def resolve_file(root: Path, entry: ModelEntry) -> Path:
    """The absolute path of ``entry.file``, refusing paths that leave ``root``."""
    rel = entry.file
    where = f"{entry.name}: file {rel!r}"
    if not rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() \
            or PureWindowsPath(rel).drive:
        raise BundleIntegrityError(f"{where}: expected a relative path inside the bundle, got an "
                                   f"absolute path")
    if ".." in PureWindowsPath(rel).parts:  # splits on both / and \
        raise BundleIntegrityError(f"{where}: '..' is not allowed: files must stay inside the "
                                   f"bundle directory")
    base = root.resolve()
    path = (root / rel).resolve()  # follows symlinks
    if path != base and base not in path.parents:
        raise BundleIntegrityError(f"{where}: resolves to {path}, outside the bundle directory "
                                   f"{base} (a symlink pointing out?)")
    if not path.is_file():
        raise BundleIntegrityError(f"{where}: missing from bundle {str(root)!r}")
    return path


def read_verified(root: Path, entry: ModelEntry) -> bytes:
    """The bytes of ``entry``'s file after the path and sha256 checks.

    Returning the bytes that were hashed (rather than a path) means what gets loaded is exactly
    what was checked, even if the file changes afterwards.
    """
    path = resolve_file(root, entry)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise BundleIntegrityError(f"{entry.name}: file {entry.file!r}: sha256 mismatch: manifest "
                                   f"says {entry.sha256}, file has {digest} (corrupted or "
                                   f"modified after export)")
    return data


def verify_files(root: Path, manifest: Manifest) -> None:
    """Path + sha256 checks of every model file (dense and all modes, with their variants)."""
    for entry in (manifest.dense, *manifest.modes.values()):
        read_verified(root, entry)
        for precision in PRECISIONS[1:]:
            variant = variant_entry(entry, precision)
            if variant is not None:
                read_verified(root, variant)
