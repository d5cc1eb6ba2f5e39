"""The language-model bundle (``format_version`` 3, docs/bundle-format.md): manifest and feeds.

An LM bundle holds one decode graph per model (``dense`` and each mode) and precision; each
graph takes ``input_ids``, ``seqlens_k``, ``total_sequence_length`` and a key/value cache and
returns the last position's logits and the cache (exporting/lm_graph.py). This module is the
reader's side of that contract, standard library + numpy: :func:`parse_lm_manifest` validates
the manifest, :func:`decode_feed` builds the inputs a graph expects for ``T`` new tokens after
``P`` cached ones and :func:`cache_buffers` the context-long cache updated in place. Readers of
formats 1-2 refuse version 3 by its number (bundle/manifest.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.bundle.errors import BundleFormatError
from taugate.bundle.fields import fail, file_ref, get_field, is_int
from taugate.bundle.names import DENSE, mode_name_error
from taugate.bundle.schema import BUNDLE_FORMAT, PRECISIONS, FileRef

LM_FORMAT_VERSION = 3
KIND = "lm"
TOKENIZERS = ("bytes",)  # one token per byte: ids 0..255
INPUT_IDS, LOGITS = "input_ids", "logits"
SEQLENS_K, TOTAL_LEN = "seqlens_k", "total_sequence_length"


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_{layer}", f"past_value_{layer}"


def present_names(layer: int) -> tuple[str, str]:
    return f"present_key_{layer}", f"present_value_{layer}"


@dataclass(frozen=True)
class LMShape:
    """The decoder's sizes a runtime needs (the manifest's ``lm`` object)."""

    vocab: int
    dim: int
    layers: int
    heads: int
    context: int
    tokenizer: str = "bytes"

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass(frozen=True)
class LMEntry:
    """``dense`` or one mode: a graph per precision and the facts the exporter recorded."""

    name: str
    graphs: dict  # precision -> FileRef
    facts: dict


@dataclass(frozen=True)
class LMRouterRef:
    """The bundle's prompt router (the manifest's optional ``router``): its file and the modes
    it names, which are exactly the bundle's modes (runtime/lm_router.py reads it)."""

    file: FileRef
    classes: tuple


@dataclass(frozen=True)
class LMManifest:
    created_by: str
    shape: LMShape
    dense: LMEntry
    modes: dict  # name -> LMEntry
    router: LMRouterRef | None = None  # bundles exported without one route nothing

    def entry(self, mode: str) -> LMEntry:
        """``dense`` or a mode; a ValueError naming the choices for any other name."""
        if mode == DENSE:
            return self.dense
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r}: no such mode in this bundle; choose one of "
                             f"{[DENSE, *sorted(self.modes)]}")
        return self.modes[mode]


def is_lm_manifest(data) -> bool:
    return isinstance(data, dict) and data.get("format_version") == LM_FORMAT_VERSION \
        and data.get("kind") == KIND


def _shape(d: dict) -> LMShape:
    lm = get_field(d, "lm", "manifest", dict, "an object of the decoder's sizes")
    sizes = {}
    for key in ("vocab", "dim", "layers", "heads", "context"):
        value = get_field(lm, key, "lm", int, "an integer >= 1")
        if not is_int(value, 1):
            raise fail(f"lm.{key}", "an integer >= 1", value)
        sizes[key] = value
    if sizes["dim"] % sizes["heads"]:
        raise fail("lm.heads", f"a divisor of dim ({sizes['dim']})", sizes["heads"])
    tok = get_field(lm, "tokenizer", "lm", str, f"one of {list(TOKENIZERS)}")
    if tok not in TOKENIZERS:
        raise fail("lm.tokenizer", f"one of {list(TOKENIZERS)}", tok)
    if tok == "bytes" and sizes["vocab"] != 256:
        raise fail("lm.vocab", "256 for the 'bytes' tokenizer", sizes["vocab"])
    return LMShape(**sizes, tokenizer=tok)


def _entry(name: str, d, where: str) -> LMEntry:
    if not isinstance(d, dict):
        raise fail(where, "an object", d)
    raw = get_field(d, "graphs", where, dict, "an object mapping precision -> {file, sha256}")
    if "fp32" not in raw or set(raw) - set(PRECISIONS):
        raise fail(f"{where}.graphs", f"'fp32' and optionally others of {list(PRECISIONS)}",
                   sorted(raw))
    graphs = {p: file_ref(name, ref, f"{where}.graphs.{p}") for p, ref in raw.items()}
    return LMEntry(name, graphs, {k: v for k, v in d.items() if k != "graphs"})


def parse_lm_manifest(data) -> LMManifest:
    """Validate a parsed LM manifest; raises :class:`BundleFormatError` naming the field."""
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"manifest.json: format: expected {BUNDLE_FORMAT!r}: not a "
                                f"taugate bundle")
    if not is_lm_manifest(data):
        raise BundleFormatError(f"manifest.json: expected a language-model bundle "
                                f"(format_version {LM_FORMAT_VERSION}, kind {KIND!r}), got "
                                f"format_version {data.get('format_version')!r}, kind "
                                f"{data.get('kind')!r}")
    created_by = get_field(data, "created_by", "manifest", str, "a string")
    dense = _entry(DENSE, get_field(data, "dense", "manifest", dict, "an object"), "dense")
    raw = get_field(data, "modes", "manifest", dict, "an object mapping mode names")
    modes = {}
    for name, entry in raw.items():
        error = mode_name_error(name)
        if error:
            raise BundleFormatError(f"modes: {error}")
        modes[name] = _entry(name, entry, f"modes.{name}")
    return LMManifest(created_by, _shape(data), dense, modes, _router(data.get("router"), modes))


def _router(d, modes: dict) -> LMRouterRef | None:
    if d is None:
        return None
    ref = file_ref("router", d, "router")
    classes = get_field(d, "classes", "router", list, "a list of the bundle's mode names")
    if not all(isinstance(c, str) for c in classes) or sorted(classes) != sorted(modes) \
            or len(set(classes)) != len(classes):
        raise fail("router.classes", f"the bundle's modes {sorted(modes)}, each once", classes)
    return LMRouterRef(ref, tuple(classes))


def graph_refs(manifest: LMManifest) -> list[FileRef]:
    return [ref for e in (manifest.dense, *manifest.modes.values()) for ref in e.graphs.values()]


def decode_feed(ids: np.ndarray, past_len: int) -> dict:
    """``input_ids``, ``seqlens_k`` and ``total_sequence_length`` for ``ids [B, T]`` after
    ``past_len`` cached positions (every row of the batch as long)."""
    b, t = ids.shape
    return {INPUT_IDS: np.ascontiguousarray(ids, np.int64),
            SEQLENS_K: np.full(b, past_len + t - 1, np.int32),
            TOTAL_LEN: np.array(past_len + t, np.int32)}


def cache_buffers(shape: LMShape, batch: int) -> dict:
    """Per past input, a zeroed context-long cache ``[batch, heads, context, head_dim]``: bound
    as both a layer's past and its present, the graph writes new positions in place."""
    return {n: np.zeros((batch, shape.heads, shape.context, shape.head_dim), np.float32)
            for i in range(shape.layers) for n in past_names(i)}
