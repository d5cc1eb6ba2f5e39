"""Text generation from a language-model bundle (format_version 3): numpy + onnxruntime only.

:class:`Generator` opens one model of the bundle (``dense`` or a mode) in one precision, after
the same checks every bundle file gets (paths inside the bundle, sha256, the operator allowlist
of taugate/bundle/graph_check.py), and decodes with a key/value cache (one
:class:`~taugate.runtime.decoding.Decoding` per generation, also open to callers through
:meth:`Generator.start`): the prompt in one call, then one token per call. Greedy by default;
``temperature`` / ``top_k`` sample with a seeded generator (same seed, same tokens).
"""

from __future__ import annotations

import codecs
import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import onnxruntime as ort

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.fields import MANIFEST_NAME
from taugate.bundle.files import read_verified
from taugate.bundle.graph_check import check_model
from taugate.bundle.lm import LM_FORMAT_VERSION, LMManifest, parse_lm_manifest
from taugate.bundle.names import AUTO
from taugate.bundle.safe_json import UnsafeInputError, loads_strict, read_regular_file
from taugate.runtime.decoding import Decoding

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MIN_ORT = "1.18"  # the first onnxruntime with GroupQueryAttention on CPU


def read_lm_manifest(bundle: str | Path) -> LMManifest:
    """The validated manifest of the LM bundle at ``bundle``."""
    root = Path(bundle)
    try:
        text = read_regular_file(root / MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except (OSError, UnsafeInputError) as exc:
        raise BundleIntegrityError(f"{root.name}: cannot read {MANIFEST_NAME}: "
                                   f"{type(exc).__name__}") from None
    return parse_lm_manifest(loads_strict(text))


def encode(prompt: str | bytes) -> np.ndarray:
    """Token ids of ``prompt``: its UTF-8 bytes (a str) or its bytes."""
    if isinstance(prompt, str):
        prompt = prompt.encode("utf-8", errors="replace")
    if not isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"prompt: expected str or bytes, got {type(prompt).__name__}")
    return np.frombuffer(bytes(prompt), np.uint8).astype(np.int64)


def check_sampling(temperature, top_k, vocab: int) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a finite number >= 0 (0: greedy), got "
                         f"{temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or not 1 <= top_k <= vocab):
        raise ValueError(f"top_k: expected None or an integer in 1..{vocab}, got {top_k!r}")


def pick(logits: np.ndarray, temperature: float, top_k: int | None,
         rng: np.random.Generator) -> np.ndarray:
    """Next token per row of ``logits [B, vocab]``: argmax at temperature 0, else a sample of
    softmax(logits / temperature) over the ``top_k`` largest (all when None)."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p])


def utf8_pieces(tokens: Iterator[int]) -> Iterator[str]:
    """Byte tokens -> text pieces as soon as they decode (UTF-8, invalid bytes replaced).
    Closing the pieces closes ``tokens`` (and frees its generation's cache)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        for token in tokens:
            piece = decoder.decode(bytes([token]))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


class Generator:
    """One model of an LM bundle, ready to decode. Build with :meth:`open`."""

    def __init__(self, session: ort.InferenceSession, manifest: LMManifest, mode: str,
                 precision: str):
        self.session, self.manifest, self.mode, self.precision = session, manifest, mode, precision
        self.shape = manifest.shape

    @classmethod
    def open(cls, bundle: str | Path, mode: str, precision: str = "fp32",
             threads: int = 1) -> Generator:
        """Open ``mode`` (``"dense"`` or a mode name) of the LM bundle at ``bundle`` in
        ``precision``, with ``threads`` intra-op threads (onnxruntime, CPU). ``"auto"``
        returns a :class:`~taugate.runtime.lm_auto.RoutedGenerator` (each prompt in the mode
        the bundle's router names; unknown prompts refused)."""
        if mode == AUTO:
            from taugate.runtime.lm_auto import RoutedGenerator

            return RoutedGenerator.open(bundle, precision, threads)
        manifest = read_lm_manifest(bundle)
        entry = manifest.entry(mode)
        if precision not in entry.graphs:
            raise ValueError(f"precision {precision!r}: {mode} has {sorted(entry.graphs)} in "
                             f"this bundle")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        ref = entry.graphs[precision]
        data = read_verified(Path(bundle), ref)
        check_model(data, LM_FORMAT_VERSION, ref.file)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types (Fail, NotImplemented, ...)
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise RuntimeError(f"{ref.file}: onnxruntime {ort.__version__} cannot load this "
                               f"graph ({reason}); LM bundles need onnxruntime >= {MIN_ORT} "
                               f"(GroupQueryAttention on CPU)") from exc
        return cls(session, manifest, mode, precision)

    # -- decoding ------------------------------------------------------------------------------
    def start(self, batch: int = 1) -> Decoding:
        """A new :class:`~taugate.runtime.decoding.Decoding` of ``batch`` sequences: feed it
        tokens (a prompt, then one token at a time, or teacher-forced text) and read the
        logits after each call."""
        return Decoding(self.session, self.shape, batch)

    def _check(self, tokens: np.ndarray, max_new_tokens) -> None:
        context = self.shape.context
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
        if len(tokens) == 0:
            raise ValueError("prompt: expected at least one byte, got an empty prompt")
        if len(tokens) + max_new_tokens > context:
            raise ValueError(f"prompt ({len(tokens)} tokens) + max_new_tokens "
                             f"({max_new_tokens}) = {len(tokens) + max_new_tokens} exceeds the "
                             f"model's context ({context} tokens); shorten the prompt or ask "
                             f"for fewer tokens")

    def generate(self, prompt: str | bytes, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0) -> Iterator[int]:
        """Yield ``max_new_tokens`` token ids (bytes) one at a time as they are produced:
        greedy at ``temperature`` 0, else sampled (``top_k``: from the k most likely)."""
        tokens = encode(prompt)
        self._check(tokens, max_new_tokens)
        check_sampling(temperature, top_k, self.shape.vocab)
        return self._tokens(tokens, max_new_tokens, float(temperature), top_k, seed)

    def _tokens(self, tokens, max_new_tokens, temperature, top_k, seed) -> Iterator[int]:
        rng = np.random.default_rng(seed)
        decoding = self.start(1)
        logits = decoding._advance(tokens[None, :])
        for i in range(max_new_tokens):
            token = int(pick(logits, temperature, top_k, rng)[0])
            yield token
            if i + 1 < max_new_tokens:
                logits = decoding._advance(np.array([[token]], np.int64))

    def text(self, prompt: str | bytes, max_new_tokens: int, **sampling) -> Iterator[str]:
        """:meth:`generate` as text pieces (UTF-8, invalid bytes replaced), streamed; the
        arguments are checked at the call, before the first piece is asked for."""
        return utf8_pieces(self.generate(prompt, max_new_tokens, **sampling))

    def decode_speed(self, prompt: str | bytes, new_tokens: int, batch: int = 1) -> dict:
        """Greedy decode of ``batch`` copies of ``prompt``: ``ttft_s`` (the prompt's call and
        the first token), ``tokens_per_s`` (every later token of every sequence, per second
        of decode) and ``tokens_per_s_median_step`` (the same from the median step: robust to
        the pauses a shared machine's scheduler adds)."""
        tokens = encode(prompt)
        self._check(tokens, new_tokens)
        if new_tokens < 2:
            raise ValueError(f"new_tokens: expected >= 2 to time decode, got {new_tokens}")
        decoding = self.start(batch)
        ids = np.tile(tokens, (batch, 1))
        start = time.perf_counter()
        nxt = decoding._advance(ids).argmax(-1)
        first = time.perf_counter()
        steps = []
        for _ in range(new_tokens - 1):
            t = time.perf_counter()
            nxt = decoding._advance(nxt[:, None].astype(np.int64)).argmax(-1)
            steps.append(time.perf_counter() - t)
        end = time.perf_counter()
        return {"ttft_s": first - start, "tokens_per_s": batch * (new_tokens - 1) / (end - first),
                "tokens_per_s_median_step": batch / float(np.median(steps)),
                "batch": batch, "prompt_tokens": len(tokens), "new_tokens": new_tokens}
