"""One onnxruntime session's checks and run path: the bounded probe run at load, the output
check every ``run`` makes, the session's I/O against the manifest, and the callable that
``ModeRuntime.run`` calls (the public ``InferenceSession.run``, or opt-in its C++ ``run``).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import onnxruntime as ort

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.manifest import Manifest, ModelEntry
from taugate.runtime.providers import CPU
from taugate.runtime.watchdog import WATCHDOG

log = logging.getLogger("taugate.runtime")

PROBE_TIMEOUT_S = 10.0  # the probe run at load gets this long, then onnxruntime is told to stop
_INF = float("inf")


def bounded_run(run, output_names: list, feed: dict, timeout_s: float):
    """``run(output_names, feed, run_options)`` stopped after ``timeout_s`` seconds:
    onnxruntime checks ``RunOptions.terminate`` between operators and fails the run."""
    options = ort.RunOptions()
    token = WATCHDOG.arm(options, timeout_s)
    try:
        return run(output_names, feed, options)
    finally:
        WATCHDOG.disarm(token)


def output_error(out, n: int, classes: int) -> str | None:
    """Why ``out`` is not float32 logits [n, classes] with finite values, or None.

    Finiteness is decided by one float32 dot product compared with inf (a Python comparison,
    false for NaN: about 0.7 us at batch 1, several times cheaper than
    ``np.isfinite(out).all()``): it is inf/NaN when any value is, and also when a magnitude
    exceeds ~1e19, which no meaningful logit does. ``ModeRuntime`` inlines the passing case.
    """
    if type(out) is not np.ndarray or out.shape != (n, classes) or out.dtype != np.float32:
        return (f"expected float32 logits of shape [{n}, {classes}], got "
                f"{getattr(out, 'dtype', type(out).__name__)} of shape {getattr(out, 'shape', '?')}")
    flat = out.ravel()
    # no np.errstate here: entering one costs ~1.2 us per run (4x the dot itself); numpy's
    # overflow RuntimeWarning can only appear on the failure path, which raises anyway
    if not flat.dot(flat) < _INF:  # NaN compares False
        return "the logits contain NaN, inf or values beyond 1e19"
    return None


def probe_input(sample_shape, rows: int = 1) -> np.ndarray:
    """A valid batch of ``rows`` samples: 0.5 everywhere, or for a tokens input (int64
    ``[2, L]``: ids, mask, ``sample_shape`` given as the spec) id 0 with mask 1."""
    layout = getattr(sample_shape, "layout", None)
    if layout and layout.get("kind") == "tokens":
        x = np.zeros((rows, *sample_shape.shape), np.int64)
        x[:, 1] = 1
        return x
    shape = getattr(sample_shape, "shape", sample_shape)
    return np.full((rows, *np.atleast_1d(shape)), 0.5, np.float32)


def session_runner(session, input_name: str, output_names: list, sample_shape,
                   classes: int, where: str, internal: bool = False):
    """The callable ``run`` uses: ``(output_names, feed) -> outputs``.

    First a probe run (two rows of 0.5), bounded by :data:`PROBE_TIMEOUT_S`: it must finish
    and give float32 [2, classes] finite logits, else :class:`BundleIntegrityError`.

    With ``internal`` (opt-in: ``ModeRuntime.open(..., internal_run=True)``), for a CPU-only
    session this is the C++ ``run`` that ``InferenceSession.run`` wraps (its
    private ``_sess``). The wrapper's own Python work -- checking that the feed names every
    model input, that no OrtValue belongs to another device, retrying on another provider after
    an ``EPFail`` -- cannot apply to the one-array feed ``ModeRuntime.run`` builds on a CPU-only
    session, and costs about 0.5 us per call (~4% of a batch-1 run of the paper backbone).
    Because ``_sess`` is not public API, it is used only after a probe call gives exactly the
    public ``run``'s result; otherwise (not asked for, another onnxruntime, another provider)
    the public ``run`` is used.
    """
    probe = {input_name: probe_input(sample_shape, 2)}
    try:
        expected = bounded_run(session.run, output_names, probe, PROBE_TIMEOUT_S)[0]
    except Exception as exc:  # whatever the model does, the bundle is refused
        raise BundleIntegrityError(f"{where}: the probe run at load failed (or took over "
                                   f"{PROBE_TIMEOUT_S:g} s): {exc}") from None
    problem = output_error(expected, 2, classes)
    if problem:
        raise BundleIntegrityError(f"{where}: the probe run at load gave invalid output: "
                                   f"{problem}")
    inner = getattr(getattr(session, "_sess", None), "run", None) if internal else None
    if not callable(inner) or list(session.get_providers()) != [CPU]:
        return session.run
    try:
        same = np.array_equal(bounded_run(inner, output_names, probe, PROBE_TIMEOUT_S)[0],
                              expected)
    except Exception:  # any failure means: not the API we know
        same = False
    if not same:
        log.debug("onnxruntime's internal run differs from InferenceSession.run; using the latter")
        return session.run
    return lambda names, feed: inner(names, feed, None)


def _dynamic(dim) -> bool:
    return dim is None or isinstance(dim, str)


def check_session(session, entry: ModelEntry, manifest: Manifest) -> None:
    """Compare a session's inputs, outputs and metadata with the manifest."""
    where = f"{entry.name}: file {entry.file!r}"
    spec_in, spec_out = manifest.input, manifest.output
    inputs, outputs = session.get_inputs(), session.get_outputs()
    got_in = [(i.name, i.type, list(i.shape)) for i in inputs]
    in_type = "tensor(int64)" if spec_in.dtype == "int64" else "tensor(float)"
    if (len(inputs) != 1 or inputs[0].name != spec_in.name or inputs[0].type != in_type
            or len(inputs[0].shape) != 1 + len(spec_in.shape) or not _dynamic(inputs[0].shape[0])
            or tuple(inputs[0].shape[1:]) != spec_in.shape):
        raise BundleIntegrityError(f"{where}: model inputs {got_in} disagree with the manifest: "
                                   f"expected one {spec_in.dtype} input {spec_in.name!r} of "
                                   f"shape "
                                   f"[batch, {', '.join(map(str, spec_in.shape))}]")
    got_out = [(o.name, o.type, list(o.shape)) for o in outputs]
    if (not outputs or outputs[0].name != spec_out.name or outputs[0].type != "tensor(float)"
            or len(outputs[0].shape) != 2 or not _dynamic(outputs[0].shape[0])
            or outputs[0].shape[1] != spec_out.classes):
        raise BundleIntegrityError(f"{where}: model outputs {got_out} disagree with the "
                                   f"manifest: expected float output {spec_out.name!r} of shape "
                                   f"[batch, {spec_out.classes}]")
    meta = session.get_modelmeta().custom_metadata_map
    expected = {"taugate.mode": entry.name, "taugate.format_version": str(manifest.format_version)}
    wrong = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise BundleIntegrityError(f"{where}: model metadata {wrong} disagrees with the "
                                   f"manifest: expected {expected}")


class Loaded:
    """A live session and what its hot path needs: ``run(output_names, feed)``."""

    __slots__ = ("charge", "keep", "last_used", "lock", "nbytes", "run", "session")

    def __init__(self, session, lock: threading.Lock | None, run, keep=None, nbytes: int = 0):
        self.session = session
        self.lock = lock
        self.run = run
        self.last_used = 0
        # materialized initializers, kept only where onnxruntime may build the session again
        # from its options (a provider fallback); it copies them into the session
        self.keep = keep
        self.nbytes = nbytes  # the model file's bytes plus its materialized initializers'
        self.charge = 0  # bytes counted against the memory budget (budget.py)
