"""The bundle schema (format_version 1 and 2): load ``manifest.json``, validate it, and check files.

Standard library only. The writer is ``taugate.exporting.writer``; this module is the reader's
side of that contract and trusts nothing it reads: every field is type-checked, every file path
must stay inside the bundle directory (no absolute paths, no ``..``, no symlink pointing out),
and every file must match its sha256.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from taugate.bundle.errors import BundleError, BundleFormatError
from taugate.bundle.fields import (
    MANIFEST_NAME,
    fail,
    file_ref,
    get_field,
    int_list,
    is_int,
)
from taugate.bundle.files import MAX_MODEL_BYTES, read_verified, resolve_file, verify_files
from taugate.bundle.names import DENSE, mode_name_error  # DENSE: the dense baseline's name
from taugate.bundle.safe_json import (
    UnsafeInputError,
    loads_strict,
    lone_surrogate_error,
    read_regular_file,
)
from taugate.bundle.schema import (
    BUNDLE_FORMAT,
    PRECISIONS,
    FileRef,
    InputSpec,
    Manifest,
    MaterializeStep,
    ModelEntry,
    OutputSpec,
    RouterSpec,
)
from taugate.bundle.steps import parse_materialize

SUPPORTED_FORMAT_VERSIONS = (1, 2)
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # read at most this much of manifest.json


MAX_SAMPLE_RANK = 16  # axes after the batch axis
MAX_SAMPLE_VALUES = 2 ** 31 - 1  # values per sample (input features, output classes)


def _batch_shape(spec: dict, where: str, what: str, any_rank: bool) -> tuple:
    """The per-sample shape after a dynamic batch axis: ``[batch, n, ...]``, dims >= 1, at most
    :data:`MAX_SAMPLE_RANK` of them and :data:`MAX_SAMPLE_VALUES` values per sample."""
    shape = get_field(spec, "shape", where, list, f"[batch, {what}]")
    rank_ok = 2 <= len(shape) <= MAX_SAMPLE_RANK + 1 if any_rank else len(shape) == 2
    if not rank_ok or not isinstance(shape[0], str) or not all(is_int(v, 1) for v in shape[1:]) \
            or math.prod(shape[1:]) > MAX_SAMPLE_VALUES:
        want = (f"['batch', {what}, ...] (at most {MAX_SAMPLE_RANK} sizes after the batch axis)"
                if any_rank else f"['batch', {what}]")
        raise fail(f"{where}.shape", f"{want} with sizes >= 1 and at most {MAX_SAMPLE_VALUES} "
                    f"values per sample", shape)
    return tuple(shape[1:])


def _tensor_spec(d: dict, where: str, what: str, any_rank: bool) -> tuple[dict, str, str, tuple]:
    """The ``input``/``output`` object: its dict, name, dtype (float32) and per-sample shape."""
    spec = get_field(d, where, "manifest", dict, "an object")
    name = get_field(spec, "name", where, str, "a string")
    dtype = get_field(spec, "dtype", where, str, "'float32'")
    if dtype != "float32" and not (where == "input" and dtype == "int64"):
        raise fail(f"{where}.dtype", "'float32' (or 'int64' for a tokens input)", dtype)
    return spec, name, dtype, _batch_shape(spec, where, what, any_rank)


def _range(spec: dict, optional: bool) -> tuple[float, float] | None:
    rng = get_field(spec, "range", "input", list, "[low, high]" + (" or null" if optional else ""),
               optional=optional)
    if rng is None:
        return None
    if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                for v in rng) or not rng[0] < rng[1]:
        raise fail("input.range", "[low, high] numbers with low < high", rng)
    return float(rng[0]), float(rng[1])


def _parse_input_v1(d: dict) -> InputSpec:
    spec, name, dtype, shape = _tensor_spec(d, "input", "features", any_rank=False)
    if dtype != "float32":
        raise fail("input.dtype", "'float32' (format 1)", dtype)
    rng = _range(spec, optional=False)
    image = get_field(spec, "image_shape", "input", list, "[height, width] or null", optional=True)
    if image is not None and (len(image) != 2 or not all(is_int(v, 1) for v in image)
                              or image[0] * image[1] != shape[0]):
        raise fail("input.image_shape", f"null or [h, w] with h*w == {shape[0]}", image)
    layout = None if image is None else {"kind": "image", "channels": 1, "height": image[0],
                                         "width": image[1]}
    return InputSpec(name, dtype, shape, rng, layout, uint8_pixels=True)


LAYOUT_KINDS = ("image", "tokens")
#: a tokens input's rows: [batch, 2, length], row 0 the token ids, row 1 the attention mask
TOKEN_FIELDS = ("input_ids", "attention_mask")


def input_fields(d: dict) -> tuple[str, str, tuple, tuple[float, float] | None, dict | None]:
    """Validate ``d["input"]`` (the format 2 rules): (name, dtype, shape, range, layout)."""
    spec, name, dtype, shape = _tensor_spec(d, "input", "n", any_rank=True)
    rng = _range(spec, optional=True)
    layout = get_field(spec, "layout", "input", dict, "an object or null", optional=True)
    if layout is not None:
        if layout.get("kind") not in LAYOUT_KINDS:
            raise fail("input.layout.kind", f"one of {list(LAYOUT_KINDS)}", layout.get("kind"))
        if layout["kind"] == "tokens":
            return name, dtype, shape, rng, _tokens_layout(layout, dtype, shape, rng)
        dims = [layout.get(k) for k in ("channels", "height", "width")]
        n = 1
        for v in shape:
            n *= v
        if not all(is_int(v, 1) for v in dims) or dims[0] * dims[1] * dims[2] != n:
            raise fail("input.layout", f"channels, height, width >= 1 with channels*height*"
                        f"width == {n} (the per-sample size)", layout)
        layout = {"kind": "image", "channels": dims[0], "height": dims[1], "width": dims[2]}
    if dtype != "float32":
        raise fail("input.dtype", "'float32' (int64 only with a tokens layout)", dtype)
    return name, dtype, shape, rng, layout


def _tokens_layout(layout: dict, dtype: str, shape: tuple, rng) -> dict:
    """A tokens layout: int64 ``[batch, 2, length]`` (ids, mask), ``vocab`` >= 1 or null."""
    length, vocab = layout.get("length"), layout.get("vocab")
    if dtype != "int64" or rng is not None:
        raise fail("input", "dtype 'int64' and range null with a tokens layout",
                   {"dtype": dtype, "range": rng})
    if not is_int(length, 1) or tuple(shape) != (2, length):
        raise fail("input.layout", f"length >= 1 with shape ['batch', 2, length], got shape "
                   f"{list(shape)}", layout)
    if vocab is not None and not is_int(vocab, 1):
        raise fail("input.layout.vocab", "an integer >= 1 or null", vocab)
    return {"kind": "tokens", "fields": list(TOKEN_FIELDS), "length": length, "vocab": vocab}


def _parse_input_v2(d: dict) -> InputSpec:
    name, dtype, shape, rng, layout = input_fields(d)
    return InputSpec(name, dtype, shape, rng, layout,
                     uint8_pixels=layout is not None and rng == (0.0, 1.0))


def output_fields(d: dict, version: int = 2) -> tuple[str, str, int, tuple | None]:
    """Validate ``d["output"]``: (name, dtype, classes, labels or None)."""
    spec, name, dtype, shape = _tensor_spec(d, "output", "classes", any_rank=False)
    labels = get_field(spec, "labels", "output", list, "a list of strings", optional=version >= 2)
    if labels is not None and (len(labels) != shape[0]
                               or not all(isinstance(v, str) for v in labels)):
        raise fail("output.labels", f"{shape[0]} strings (one per class)", labels)
    return name, dtype, shape[0], tuple(labels) if labels is not None else None


def _parse_output(d: dict, version: int) -> OutputSpec:
    return OutputSpec(*output_fields(d, version))


def _parse_model(name: str, d: dict, where: str, is_mode: bool, version: int,
                 has_backbone: bool = False, memo: dict | None = None) -> ModelEntry:
    if not isinstance(d, dict):
        raise fail(where, "an object", d)
    ref = file_ref(name, d, where)
    macs = get_field(d, "macs", where, int, "a non-negative integer")
    if macs < 0:
        raise fail(f"{where}.macs", "a non-negative integer", macs)
    mode_facts: dict = {}
    if is_mode:
        get_field(d, "method", where, str, "a string", optional=version >= 2)
        if version == 1:
            mode_facts = {"angle": get_field(d, "angle", where, (int, float), "a number")}
        else:
            facts = get_field(d, "facts", where, dict, "an object or null", optional=True)
            mode_facts = {} if facts is None else facts  # the parsed JSON, read only (no copy)
        kept, total = int_list(d, "units_kept", where), int_list(d, "units_total", where)
        if len(kept) != len(total) or any(k > t for k, t in zip(kept, total)):
            raise fail(f"{where}.units_kept", f"one count <= units_total {total} per layer", kept)
        for key in ("calibration_accuracy", "test_accuracy", "dense_test_accuracy"):
            get_field(d, key, where, (int, float), "a number or null", optional=True)
        get_field(d, "kept_indices", where, list, "a list of index lists", optional=True)
    weights, steps = (None, None) if version == 1 else parse_materialize(name, d, where,
                                                                          has_backbone, memo)
    entry = ModelEntry(name, ref.file, ref.sha256, macs, d, mode_facts, weights, steps)
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
        raise fail(where, "an object mapping precision names", variants)
    v = variants.get(precision)
    if v is None:
        return None
    where = f"{where}.{precision}"
    ref = file_ref(entry.name, v, where)
    if v.get("precision", precision) != precision:
        raise fail(f"{where}.precision", repr(precision), v.get("precision"))
    # a variant is a self-contained graph: nothing to materialize
    return replace(entry, file=ref.file, sha256=ref.sha256, weights=None, materialize=None)


_ROUTER_KEYS = {"file", "sha256", "modes", "threshold", "percentile", "facts"}


def parse_router(d, modes) -> RouterSpec:
    """Validate the manifest's ``router`` object against the bundle's ``modes`` (names): a
    router must name exactly the bundle's modes, each once."""
    if not isinstance(d, dict) or not set(d) <= _ROUTER_KEYS:
        raise fail("router", f"an object with keys from {sorted(_ROUTER_KEYS)}", d)
    ref = file_ref("router", d, "router")
    names = get_field(d, "modes", "router", list, "a list of the bundle's mode names")
    if sorted(map(str, names)) != sorted(modes) or len(set(names)) != len(names) \
            or not all(isinstance(n, str) for n in names):
        raise fail("router.modes", f"the bundle's modes {sorted(modes)}, each once (a router "
                    f"fitted for other modes: fit it again with `taugate route`)", names)
    numbers = {}
    for key in ("threshold", "percentile"):
        v = get_field(d, key, "router", (int, float), "a finite number or null", optional=True)
        if v is not None and not math.isfinite(v):
            raise fail(f"router.{key}", "a finite number or null", v)
        numbers[key] = None if v is None else float(v)
    if numbers["percentile"] is not None and not 0 < numbers["percentile"] <= 100:
        raise fail("router.percentile", "a number in (0, 100] or null", numbers["percentile"])
    facts = get_field(d, "facts", "router", dict, "an object or null", optional=True) or {}
    return RouterSpec(ref.file, ref.sha256, tuple(names), numbers["threshold"],
                      numbers["percentile"], dict(facts))


def parse_manifest(data) -> Manifest:
    """Validate a parsed manifest (pure); raises :class:`BundleFormatError` naming the field."""
    if not isinstance(data, dict):
        raise fail("top level", "a JSON object", type(data).__name__)
    error = lone_surrogate_error(data)  # such a string breaks every later print or JSON answer
    if error:
        raise BundleFormatError(f"{MANIFEST_NAME}: {error}")
    fmt = data.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleFormatError(f"{MANIFEST_NAME}: format: expected {BUNDLE_FORMAT!r}, got "
                                f"{fmt!r}: not a taugate bundle")
    version = data.get("format_version")
    # type() is int: 1.0 == 1 and True == 1 in Python, but neither is a format version
    if version == 3 and data.get("kind") == "lm":
        raise BundleFormatError(
            f"{MANIFEST_NAME}: a language-model bundle (format_version 3, kind 'lm'): it is "
            f"read by taugate.runtime.generate.Generator (taugate predict BUNDLE --prompt TEXT), "
            f"not by ModeRuntime")
    if type(version) is not int or version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
        raise BundleFormatError(
            f"{MANIFEST_NAME}: format_version {version!r} is not supported by this runtime "
            f"(supported: {supported}); upgrade taugate or re-export the bundle")
    created_by = get_field(data, "created_by", "manifest", str, "a string")
    inp = _parse_input_v1(data) if version == 1 else _parse_input_v2(data)
    out = _parse_output(data, version)
    family, targets, backbone = "mlp", (), None
    if version >= 2:
        family = get_field(data, "family", "manifest", str, "a string such as 'mlp', 'vit', 'user'")
        targets = tuple(get_field(data, "targets", "manifest", list, "a list of module paths",
                             optional=True) or ())
        if not all(isinstance(t, str) for t in targets):
            raise fail("targets", "a list of module paths (strings)", list(targets))
        raw_backbone = data.get("backbone")
        backbone = None if raw_backbone is None else file_ref("backbone", raw_backbone,
                                                               "backbone")
    has_backbone = backbone is not None
    memo: dict = {}  # the steps built from each parsed step (taugate/bundle/steps.py)
    dense = _parse_model(DENSE, get_field(data, "dense", "manifest", dict, "an object"), "dense",
                         is_mode=False, version=version, has_backbone=has_backbone, memo=memo)
    raw_modes = get_field(data, "modes", "manifest", dict, "an object mapping mode names")
    if not raw_modes:
        raise fail("modes", "at least one mode", raw_modes)
    modes = {}
    for name, entry in raw_modes.items():
        error = mode_name_error(name)  # the exporter's rule (taugate/bundle/names.py)
        if error:
            raise BundleFormatError(f"{MANIFEST_NAME}: modes: {error}")
        modes[name] = _parse_model(name, entry, f"modes.{name}", is_mode=True, version=version,
                                   has_backbone=has_backbone, memo=memo)
    router = None
    if version >= 2 and data.get("router") is not None:
        router = parse_router(data["router"], list(modes))
    return Manifest(fmt, version, created_by, inp, out, dense, modes, data, family, targets,
                    backbone, router)


def load_manifest(bundle: str | os.PathLike) -> tuple[Path, Manifest]:
    """Read and validate ``bundle/manifest.json``; ``bundle`` may also name the manifest file.

    Returns (bundle directory, manifest). Checks no model file: see :func:`verify_files`.
    """
    root = Path(bundle)
    try:
        if root.is_file() and root.name == MANIFEST_NAME:
            root = root.parent
        is_dir = root.is_dir()
    except (OSError, ValueError) as exc:  # NUL byte, name too long, symlink loop
        raise BundleError(f"bundle {str(root)[:200]!r}: unusable path: {exc}") from None
    if not is_dir:
        raise BundleError(f"bundle {str(root)[:200]!r}: not a directory (expected a bundle "
                          f"directory holding {MANIFEST_NAME})")
    path = root / MANIFEST_NAME
    try:
        # a regular file, not a symlink (out of the bundle or not), a FIFO or a device
        text = read_regular_file(path, MAX_MANIFEST_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {str(root)!r}: no {MANIFEST_NAME}: is this a taugate "
                          f"bundle?") from None
    except (OSError, UnicodeDecodeError, UnsafeInputError) as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    try:
        data = loads_strict(text, share=True)  # raw is read; changes are made on copies
    except ValueError as exc:  # invalid JSON, duplicate keys, nesting, numbers
        raise BundleFormatError(f"{path}: invalid JSON: {exc}") from exc
    return root, parse_manifest(data)


__all__ = ["BUNDLE_FORMAT", "DENSE", "MANIFEST_NAME", "MAX_MODEL_BYTES", "PRECISIONS",
           "SUPPORTED_FORMAT_VERSIONS", "FileRef", "InputSpec", "Manifest", "MaterializeStep",
           "ModelEntry", "OutputSpec", "RouterSpec", "load_manifest", "parse_manifest", "read_verified",
           "resolve_file", "variant_entry", "verify_files"]
