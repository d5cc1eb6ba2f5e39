"""Several modes in one call: ``run_mixed`` (row i in mode ``modes[i]``) and ``run_all`` (every
mode on the same rows), behind :meth:`ModeRuntime.run_mixed` and :meth:`ModeRuntime.run_all`.

``run_mixed`` validates the rows once, maps their names to numbers with one cached dictionary
and sorts them by mode once; then either one graph holding every mode answers the whole batch
in one call (:mod:`mixed_graph`), or each mode's rows, one contiguous slice of a sorted copy,
run through its session and are scattered into one preallocated output. ``run_all`` computes what the modes share once: see :mod:`shared_layer`
(docs/runtime.md, "Several modes in one call").
"""

from __future__ import annotations

import numpy as np

from taugate.bundle.errors import (
    InputError,
    InvalidOutputError,
    RuntimeConfigError,
    UnknownModeError,
)
from taugate.bundle.names import DENSE
from taugate.runtime.mixed_graph import mixed_graph
from taugate.runtime.sessions import output_error


def run_session(rt, mode: str, batch: np.ndarray) -> np.ndarray:
    """``rt.run`` on an already validated float32 batch (no second coercion)."""
    loaded = rt._sessions.get(mode)
    if loaded is None:
        loaded = rt._load(mode)
    return rt._run_loaded(mode, loaded, batch)


def _empty(rt, x) -> np.ndarray | None:
    """``[0, classes]`` logits when ``x`` holds no rows (of the right sample shape), else None."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) == 0 or shape[0] != 0:
        return None
    if tuple(shape[1:]) != tuple(rt.manifest.input.shape) and len(shape) != 1:
        raise InputError(f"x: an empty batch must have shape [0, "
                         f"{', '.join(map(str, rt.manifest.input.shape))}], got {list(shape)}")
    return np.empty((0, rt._classes), np.float32)


def _known(rt) -> tuple[dict, list]:
    """Every name ``run`` serves here (the modes, ``"dense"`` where it has this precision) ->
    its position, and those names in order; cached per runtime and rebuilt when the manifest is replaced (adding or
    unloading a mode replaces it)."""
    manifest = rt._manifest
    cached = rt.__dict__.get("_mixed_names")
    if cached is None or cached[0] is not manifest:
        names = [m for m in (*manifest.modes, DENSE) if _serves(rt, m)]
        cached = (manifest, {m: i for i, m in enumerate(names)}, names)
        rt.__dict__["_mixed_names"] = cached
    return cached[1], cached[2]


def _serves(rt, name: str) -> bool:
    try:
        rt._served(name)
    except (UnknownModeError, RuntimeConfigError):
        return False
    return True


def _codes(rt, modes, n: int) -> tuple[list, np.ndarray]:
    """The distinct mode names and each row's index into them."""
    if isinstance(modes, (str, bytes)):
        raise InputError(f"modes: expected one mode name per row (a sequence of str), got a "
                         f"single {type(modes).__name__} {modes!r}; use run(mode, x) for one mode")
    if isinstance(modes, list) and len(modes) == n and \
            all(isinstance(m, str) for m in modes):
        values = modes  # a list of names as it is (no object-array round trip)
    else:
        arr = np.asarray(modes, dtype=object) if not isinstance(modes, np.ndarray) else modes
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InputError(f"modes: expected {n} names (one per row of x), got shape "
                             f"{list(arr.shape)}")
        values = arr.tolist()
    known, ordered = _known(rt)
    try:  # one C-level dict lookup per row against every servable name
        codes = np.fromiter(map(known.__getitem__, values), np.intp, n)
    except (KeyError, TypeError):  # an unknown or unhashable name: found and worded below
        codes = None
    if codes is not None:
        present = np.flatnonzero(np.bincount(codes, minlength=len(known)))
        if len(present) == 1:
            return [values[0]], np.zeros(n, np.intp)
        remap = np.empty(len(known), np.intp)
        remap[present] = np.arange(len(present))
        return [ordered[i] for i in present.tolist()], remap[codes]
    index: dict = {}
    codes = np.fromiter((index.setdefault(m, len(index)) for m in values), np.intp, n)
    names = list(index)
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"modes: expected str names, got {type(name).__name__} {name!r}")
        try:
            rt._served(name)
        except UnknownModeError as exc:
            row = int(np.flatnonzero(codes == index[name])[0])
            raise UnknownModeError(f"modes[{row}]: {exc.args[0]}") from None
    return names, codes


def run_mixed(rt, modes, x) -> np.ndarray:
    """Logits [N, classes] where row i comes from mode ``modes[i]``; see the module docstring."""
    empty = _empty(rt, x)
    if empty is not None:
        _codes(rt, modes, 0)
        return empty
    batch = rt._coerce(x)
    n = batch.shape[0]
    names, codes = _codes(rt, modes, n)
    if len(names) == 1:
        return run_session(rt, names[0], batch)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(names))).tolist()
    graph = mixed_graph(rt)
    if graph is not None and graph.serves(names):
        out = graph.run(batch, names, bounds, order)
        problem = output_error(out, n, rt._classes)
        if problem is not None:
            raise InvalidOutputError(f"modes {names}: the models produced invalid output: "
                                     f"{problem}")
        return out
    rows = batch[order]  # one copy: each mode's rows are now one contiguous slice
    out = np.empty((n, rt._classes), np.float32)
    start = 0
    for k, end in enumerate(bounds):
        out[order[start:end]] = run_session(rt, names[k], rows[start:end])
        start = end
    return out


def run_all(rt, x, modes=None) -> dict:
    """``{mode: logits}`` for every mode (or ``modes``) on the same rows, sharing the first
    layer where the bundle allows it (:mod:`taugate.runtime.shared_layer`), else one ``run``
    per mode."""
    from taugate.runtime.shared_layer import plan_for

    names = rt.modes if modes is None else list(modes)
    if isinstance(modes, str):
        raise InputError(f"modes: expected a list of mode names, got the str {modes!r}")
    for name in names:
        rt._served(name) if isinstance(name, str) else rt._entry(name)
    empty = _empty(rt, x)
    if empty is not None:
        return {name: empty.copy() for name in names}
    batch = rt._coerce(x)
    plan = plan_for(rt, tuple(dict.fromkeys(names)))
    out = plan.run(rt, batch)
    return {name: out[name] for name in names}
