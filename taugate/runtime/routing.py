"""Automatic routing: which mode each row belongs to, and rows of no known mode.

A bundle may carry a router (docs/bundle-format.md, "The router"): a small ONNX graph from the
flat input to one score per mode and a distance to the known modes' inputs. ``route`` names the
best-scoring mode of each row, or :data:`UNKNOWN` when its distance exceeds the manifest's
threshold. ``run_auto`` runs each row in its routed mode (one call per mode present) and, by
``unknown`` policy, refuses rows of no known mode (:class:`UnknownInputError`) or runs them on
the dense model. numpy + onnxruntime only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from taugate.bundle.errors import (
    BundleIntegrityError,
    InputError,
    InvalidOutputError,
    RuntimeConfigError,
)
from taugate.bundle.files import read_verified
from taugate.bundle.graph_check import check_model
from taugate.bundle.names import AUTO, DENSE
from taugate.bundle.schema import RouterSpec
from taugate.runtime.providers import create_session, needs_run_lock

UNKNOWN = "unknown"  # route()'s answer for a row of no known mode
POLICIES = ("refuse", "dense")  # what run_auto does with unknown rows


class UnknownInputError(InputError):
    """Rows that belong to none of the bundle's modes, under the ``"refuse"`` policy."""


@dataclass(frozen=True)
class Routing:
    """The router's answer for a batch: per-row ``modes`` (names or ``"unknown"``), the index of
    each row's best mode in ``RouterSpec.modes``, its distance and the threshold."""

    modes: list
    best: np.ndarray  # int64 [N]
    distance: np.ndarray  # float32 [N]
    threshold: float | None

    @property
    def unknown_rows(self) -> list[int]:
        return [i for i, m in enumerate(self.modes) if m == UNKNOWN]


@dataclass(frozen=True)
class AutoResult:
    """``run_auto``'s answer: logits float32 [N, classes], the mode each row ran in (its routed
    mode, or ``"unknown"`` for a row sent to the dense model) and the routing itself."""

    logits: np.ndarray
    modes: list
    routing: Routing


class Router:
    """The bundle's router session. Create with :meth:`open`; ``route(batch)`` is thread-safe."""

    def __init__(self, spec: RouterSpec, session, features: int, lock, decides: bool = True):
        self.spec = spec
        self._session = session
        self._features = features
        self._lock = lock
        self._k = len(spec.modes)
        # row answer -> name: index k stands for "unknown" (see route)
        self._lookup = np.array([*spec.modes, UNKNOWN], dtype=object)
        # a graph answering best_mode (the mode chosen inside it) or, fitted before it,
        # mode_scores (the mode chosen here: numpy's argmax, the same first-highest rule)
        self._decides = decides
        self._outputs = [RouterSpec.BEST if decides else RouterSpec.SCORES, RouterSpec.DISTANCE]

    @classmethod
    def open(cls, root, manifest, plan, config) -> Router:
        """Verify (path, sha256, operator allowlist) and load the router of ``manifest``."""
        spec = manifest.router
        if spec is None:
            raise RuntimeConfigError(
                "this bundle has no router, so mode 'auto' and route() are not available; fit "
                "one with `taugate route BUNDLE --run RUN` (or `taugate export --router`)")
        where = f"router: file {spec.file!r}"
        data = read_verified(root, spec)
        check_model(data, manifest.format_version, where)
        try:
            session, _ = create_session(data, plan, config, where)
        except Exception as exc:
            raise BundleIntegrityError(f"{where}: onnxruntime cannot load it: {exc}") from exc
        features = manifest.input.features
        lock = threading.Lock() if needs_run_lock(session.get_providers()) else None
        return cls(spec, session, features, lock, _answers(session, features, where))

    def route(self, batch: np.ndarray) -> Routing:
        """Route a checked batch (float32 [N, *shape], as the runtime's input checker gives)."""
        n, k = batch.shape[0], self._k
        feed = {RouterSpec.INPUT: batch.reshape(n, self._features)}
        if self._lock is None:
            first, distance = self._session.run(self._outputs, feed)
        else:
            with self._lock:
                first, distance = self._session.run(self._outputs, feed)
        if self._decides:
            best = first
            # one reduction for both ends: a negative index is above k as uint64
            bad = best.shape != (n,) or best.view(np.uint64).max() >= k
        else:
            bad = first.shape != (n, k) or not np.isfinite(first).all()
            best = None if bad else first.argmax(axis=1)
        if bad or distance.shape != (n, 1) or not np.isfinite(distance).all():
            got = (f"{first.shape} {first.dtype}" + (f" from {first.min()} to {first.max()}"
                                                       if first.size else "")) if bad else "ok"
            raise InvalidOutputError(
                f"router: expected {self._outputs[0]!r} "
                + (f"indices [{n}] in [0, {k})" if self._decides else f"finite scores [{n}, {k}]")
                + f" and finite distances [{n}, 1], got {got} and {distance.shape}")
        distance = distance.reshape(n)
        threshold = self.spec.threshold
        index = best if threshold is None else np.where(distance > threshold, k, best)
        return Routing(self._lookup[index].tolist(), best, distance, threshold)


def _answers(session, features: int, where: str) -> bool:
    """Whether the router graph answers ``best_mode`` (True) or ``mode_scores`` (False), after
    checking its input and outputs; anything else is refused, naming what it has."""
    ins = [(i.name, i.shape) for i in session.get_inputs()]
    outs = {o.name: o.type for o in session.get_outputs()}
    if len(ins) == 1 and ins[0][0] == RouterSpec.INPUT and ins[0][1][-1] == features and \
            outs.get(RouterSpec.DISTANCE) == "tensor(float)" and len(outs) == 2:
        if outs.get(RouterSpec.BEST) == "tensor(int64)":
            return True
        if outs.get(RouterSpec.SCORES) == "tensor(float)":
            return False
    raise BundleIntegrityError(
        f"{where}: expected input {RouterSpec.INPUT!r} float [batch, {features}] and outputs "
        f"{RouterSpec.BEST!r} int64 [batch] (or, from older routers, {RouterSpec.SCORES!r} "
        f"float [batch, modes]) and {RouterSpec.DISTANCE!r} float [batch, 1]; got inputs {ins}, "
        f"outputs {outs}")


def check_policy(unknown: str) -> str:
    if unknown not in POLICIES:
        raise RuntimeConfigError(f"unknown: expected one of {', '.join(POLICIES)} (what to do "
                                 f"with rows of no known mode), got {unknown!r}")
    return unknown


def rows_to_run(routing: Routing, unknown: str) -> list:
    """The mode each row runs in under ``unknown`` policy (``"dense"`` for unknown rows), or
    :class:`UnknownInputError` naming the unknown rows under ``"refuse"``."""
    rows = routing.unknown_rows
    if rows and check_policy(unknown) == "refuse":
        shown = ", ".join(map(str, rows[:20])) + (f", ... ({len(rows) - 20} more)"
                                                  if len(rows) > 20 else "")
        raise UnknownInputError(
            f"{len(rows)} of {len(routing.modes)} rows belong to none of the bundle's modes "
            f"(router distance above its threshold {routing.threshold:.4g}): rows {shown}; "
            f"expected inputs like the modes' own (or run them with unknown='dense')")
    return [DENSE if m == UNKNOWN else m for m in routing.modes]


def groups(rows: list) -> dict:
    """Mode -> int64 indices of its rows, in first-seen order."""
    out: dict = {}
    for i, m in enumerate(rows):
        out.setdefault(m, []).append(i)
    return {m: np.asarray(ix, np.int64) for m, ix in out.items()}


def run_rows(run, x: np.ndarray, rows: list, classes: int) -> np.ndarray:
    """Logits of each row ``i`` of ``x`` in mode ``rows[i]``, one ``run(mode, x)`` per mode."""
    parts = groups(rows)
    if len(parts) == 1:
        return run(rows[0], x)
    out = np.empty((x.shape[0], classes), np.float32)
    for mode, ix in parts.items():
        out[ix] = run(mode, x[ix])
    return out


def routed_run(run, routing: Routing, batch: np.ndarray, unknown: str, classes: int
               ) -> AutoResult:
    """:class:`AutoResult` of ``batch`` (checked) routed by ``routing`` under ``unknown``."""
    rows = rows_to_run(routing, check_policy(unknown))
    return AutoResult(run_rows(run, batch, rows, classes), routing.modes, routing)


__all__ = ["AUTO", "POLICIES", "UNKNOWN", "AutoResult", "Router", "Routing", "UnknownInputError",
           "check_policy", "routed_run", "rows_to_run", "run_rows"]
