"""Text generation from a language-model bundle (format_version 3): numpy + onnxruntime only.

:class:`Generator` opens one model of the bundle (``dense`` or a mode) in one precision, after
the same checks every bundle file gets (paths inside the bundle, sha256, the operator allowlist
of taugate/bundle/graph_check.py), and decodes with a key/value cache: the prompt in one call,
then one token per call. The cache is allocated once per generation, context-long, and bound
through an IO binding as both each layer's past and its present, so the graph writes each new
position in place and no step copies the cache; the one-token steps of a generation share
one binding whose inputs are rewritten in place. Greedy by default; ``temperature`` / ``top_k`` sample with a
seeded generator (same seed, same tokens).
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
from taugate.bundle.lm import (
    INPUT_IDS,
    LM_FORMAT_VERSION,
    LOGITS,
    SEQLENS_K,
    TOTAL_LEN,
    LMManifest,
    cache_buffers,
    decode_feed,
    parse_lm_manifest,
    past_names,
    present_names,
)
from taugate.bundle.names import AUTO
from taugate.bundle.safe_json import UnsafeInputError, loads_strict, read_regular_file

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


class _Cache:
    """One generation's key/value cache: context-long buffers (numpy, wrapped without a copy
    as ``OrtValue``) and how many positions they hold."""

    def __init__(self, shape, batch: int):
        self.arrays = list(cache_buffers(shape, batch).values())  # keeps the memory alive
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        self.batch, self.length = batch, 0
        self.step: _StepBinding | None = None  # built at the first one-token step


class _StepBinding:
    """The IO binding of one generation's one-token steps, built once: the inputs and the
    logits are numpy buffers wrapped without a copy and rewritten in place, so a step binds
    nothing (binding ~20 values per token cost about as much as a small model's attention)."""

    def __init__(self, session: ort.InferenceSession, cache: _Cache, past, presents, vocab: int):
        b = cache.batch
        self.ids = np.zeros((b, 1), np.int64)
        self.seqlens = np.zeros(b, np.int32)
        self.total = np.zeros((), np.int32)
        self.logits = np.zeros((b, vocab), np.float32)
        self.binding = session.io_binding()
        self._values = []  # the OrtValues must outlive the binding
        for name, arr in ((INPUT_IDS, self.ids), (SEQLENS_K, self.seqlens),
                          (TOTAL_LEN, self.total)):
            self._values.append(ort.OrtValue.ortvalue_from_numpy(arr))
            self.binding.bind_ortvalue_input(name, self._values[-1])
        self._values.append(ort.OrtValue.ortvalue_from_numpy(self.logits))
        self.binding.bind_ortvalue_output(LOGITS, self._values[-1])
        for p, c, value in zip(past, presents, cache.values):
            self.binding.bind_ortvalue_input(p, value)
            self.binding.bind_ortvalue_output(c, value)


class Generator:
    """One model of an LM bundle, ready to decode. Build with :meth:`open`."""

    def __init__(self, session: ort.InferenceSession, manifest: LMManifest, mode: str,
                 precision: str):
        self.session, self.manifest, self.mode, self.precision = session, manifest, mode, precision
        self.shape = manifest.shape
        self._past = [n for i in range(self.shape.layers) for n in past_names(i)]
        self._outputs = [LOGITS] + [n for i in range(self.shape.layers) for n in present_names(i)]

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
    def _run(self, ids: np.ndarray, cache: _Cache) -> np.ndarray:
        """``ids [B, T]`` after ``cache.length`` cached positions: the last logits; the cache
        grows in place."""
        if ids.shape[1] == 1:
            return self._step(ids, cache)
        binding = self.session.io_binding()
        for name, arr in decode_feed(ids, cache.length).items():
            binding.bind_cpu_input(name, arr)
        binding.bind_output(LOGITS, "cpu")  # first: get_outputs() follows the binding order
        for past, present, value in zip(self._past, self._outputs[1:], cache.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self.session.run_with_iobinding(binding)
        cache.length += ids.shape[1]
        return binding.get_outputs()[0].numpy()

    def _step(self, ids: np.ndarray, cache: _Cache) -> np.ndarray:
        """One token per sequence (``ids [B, 1]``) through the generation's step binding."""
        if ids.shape[0] != cache.batch:  # numpy would broadcast one row over the batch
            raise ValueError(f"ids: expected {cache.batch} rows (the cache's batch), got "
                             f"{ids.shape[0]}")
        step = cache.step
        if step is None:
            step = cache.step = _StepBinding(self.session, cache, self._past,
                                             self._outputs[1:], self.shape.vocab)
        step.ids[:] = ids
        step.seqlens[:] = cache.length  # cached + new - 1
        step.total[...] = cache.length + 1
        self.session.run_with_iobinding(step.binding)
        cache.length += 1
        return step.logits.copy()  # the buffer is rewritten by the next step

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
        cache = _Cache(self.shape, 1)
        logits = self._run(tokens[None, :], cache)
        for i in range(max_new_tokens):
            token = int(pick(logits, temperature, top_k, rng)[0])
            yield token
            if i + 1 < max_new_tokens:
                logits = self._run(np.array([[token]], np.int64), cache)

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
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected an integer >= 1, got {batch!r}")
        ids = np.tile(tokens, (batch, 1))
        cache = _Cache(self.shape, batch)
        start = time.perf_counter()
        nxt = self._run(ids, cache).argmax(-1)
        first = time.perf_counter()
        steps = []
        for _ in range(new_tokens - 1):
            t = time.perf_counter()
            nxt = self._run(nxt[:, None].astype(np.int64), cache).argmax(-1)
            steps.append(time.perf_counter() - t)
        end = time.perf_counter()
        return {"ttft_s": first - start, "tokens_per_s": batch * (new_tokens - 1) / (end - first),
                "tokens_per_s_median_step": batch / float(np.median(steps)),
                "batch": batch, "prompt_tokens": len(tokens), "new_tokens": new_tokens}
