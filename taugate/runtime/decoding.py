"""One generation's state on a language-model graph: its key/value cache and its step binding.

:class:`Decoding` is what :class:`~taugate.runtime.generate.Generator` decodes with, and what
a caller uses to feed tokens of their own choosing: teacher-forced scoring (perplexity), timing
decode steps, or a decoding loop other than greedy/top-k. The cache is allocated once,
context-long, and bound through an IO binding as both each layer's past and its present, so
the graph writes each new position in place and no step copies the cache; the one-token steps
share one binding whose inputs are rewritten in place.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from taugate.bundle.lm import (
    INPUT_IDS,
    LOGITS,
    SEQLENS_K,
    TOTAL_LEN,
    cache_buffers,
    decode_feed,
    past_names,
    present_names,
)


class _StepBinding:
    """The IO binding of one generation's one-token steps, built once: the inputs and the
    logits are numpy buffers wrapped without a copy and rewritten in place, so a step binds
    nothing (binding ~20 values per token cost about as much as a small model's attention)."""

    def __init__(self, session: ort.InferenceSession, values: list, past, presents, batch: int,
                 vocab: int):
        self.ids = np.zeros((batch, 1), np.int64)
        self.seqlens = np.zeros(batch, np.int32)
        self.total = np.zeros((), np.int32)
        self.logits = np.zeros((batch, vocab), np.float32)
        self.binding = session.io_binding()
        self._values = []  # the OrtValues must outlive the binding
        for name, arr in ((INPUT_IDS, self.ids), (SEQLENS_K, self.seqlens),
                          (TOTAL_LEN, self.total)):
            self._values.append(ort.OrtValue.ortvalue_from_numpy(arr))
            self.binding.bind_ortvalue_input(name, self._values[-1])
        self._values.append(ort.OrtValue.ortvalue_from_numpy(self.logits))
        self.binding.bind_ortvalue_output(LOGITS, self._values[-1])
        for p, c, value in zip(past, presents, values):
            self.binding.bind_ortvalue_input(p, value)
            self.binding.bind_ortvalue_output(c, value)


class Decoding:
    """``batch`` sequences being decoded by one session; build with
    :meth:`Generator.start <taugate.runtime.generate.Generator.start>`.

    :meth:`feed` takes the next tokens of every sequence and returns the logits after the
    last of them; :attr:`length` is how many positions the cache holds.
    """

    def __init__(self, session: ort.InferenceSession, shape, batch: int):
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected an integer >= 1, got {batch!r}")
        self.session, self.shape, self.batch = session, shape, batch
        self.length = 0
        self._arrays = list(cache_buffers(shape, batch).values())  # keeps the memory alive
        self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]
        self._past = [n for i in range(shape.layers) for n in past_names(i)]
        self._presents = [n for i in range(shape.layers) for n in present_names(i)]
        self._step: _StepBinding | None = None  # built at the first one-token step

    @property
    def room(self) -> int:
        """Positions left before the model's context is full."""
        return self.shape.context - self.length

    def feed(self, ids) -> np.ndarray:
        """Logits float32 ``[batch, vocab]`` after the tokens ``ids`` (int ``[batch, T]``, or
        ``[T]`` for one sequence), which the cache keeps. Raises ValueError for another shape,
        ids outside the vocabulary, or more tokens than the context has room for."""
        ids = np.asarray(ids)
        if ids.ndim == 1 and self.batch == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[0] != self.batch or ids.shape[1] < 1 \
                or ids.dtype.kind not in "iu":
            raise ValueError(f"ids: expected integers shaped [{self.batch}, T >= 1], got "
                             f"{ids.dtype} {list(ids.shape)}")
        if ids.shape[1] > self.room:
            raise ValueError(f"ids: {ids.shape[1]} tokens after {self.length} exceed the "
                             f"model's context ({self.shape.context} tokens)")
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape.vocab):
            raise ValueError(f"ids: expected token ids in [0, {self.shape.vocab}), got "
                             f"[{ids.min()}, {ids.max()}]")
        return self._advance(ids.astype(np.int64, copy=False))

    def _advance(self, ids: np.ndarray) -> np.ndarray:
        """:meth:`feed` of ids already known good (int64 [batch, T], in range, with room)."""
        return self._one(ids) if ids.shape[1] == 1 else self._many(ids)

    def _many(self, ids: np.ndarray) -> np.ndarray:
        binding = self.session.io_binding()
        for name, arr in decode_feed(ids, self.length).items():
            binding.bind_cpu_input(name, arr)
        binding.bind_output(LOGITS, "cpu")  # first: get_outputs() follows the binding order
        for past, present, value in zip(self._past, self._presents, self._values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self.session.run_with_iobinding(binding)
        self.length += ids.shape[1]
        return binding.get_outputs()[0].numpy()

    def _one(self, ids: np.ndarray) -> np.ndarray:
        step = self._step
        if step is None:
            step = self._step = _StepBinding(self.session, self._values, self._past,
                                             self._presents, self.batch, self.shape.vocab)
        step.ids[:] = ids
        step.seqlens[:] = self.length  # cached + new - 1
        step.total[...] = self.length + 1
        self.session.run_with_iobinding(step.binding)
        self.length += 1
        return step.logits.copy()  # the buffer is rewritten by the next step
