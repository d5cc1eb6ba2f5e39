"""ModeRuntime: a checked bundle, one onnxruntime session per mode, ``run(mode, x) -> logits``.

``open`` either returns a working runtime or raises (nothing half-loaded): the manifest is
validated, every file passes the path and sha256 checks, and -- unless ``lazy=True`` -- every
model is loaded by onnxruntime and its inputs, outputs and metadata compared with the manifest.
The sessions created by that check are kept (within ``max_sessions`` and ``memory_budget``), so
nothing is loaded twice.

Sessions are created once per mode under a lock (double-checked); once loaded, a mode costs a
dict lookup per call, without any lock, whatever the number of modes. ``max_sessions`` and ``memory_budget`` bound
how many stay loaded (least-recently-used eviction, budget.py). ``run`` is safe from many threads: CPU and
CUDA sessions run concurrently; DirectML sessions get a lock each (one run at a time).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading

import numpy as np

from taugate.bundle.errors import (
    BundleError,
    BundleIntegrityError,
    InvalidOutputError,
    RuntimeConfigError,
    TaugateRuntimeError,
    UnknownModeError,
)
from taugate.bundle.files import BundleFiles
from taugate.bundle.manifest import (
    DENSE,
    PRECISIONS,
    Manifest,
    ModelEntry,
    load_manifest,
    read_verified,
    variant_entry,
)
from taugate.runtime.budget import AUTO as AUTO_BUDGET
from taugate.runtime.budget import MemoryBudget, admit, release_freed
from taugate.runtime.facts import RuntimeFacts
from taugate.runtime.inputs import InputSpecChecker
from taugate.runtime.many_modes import ManyModes
from taugate.runtime.providers import (
    CPU,
    ProviderSpec,
    SessionConfig,
    create_session,
    needs_run_lock,
    resolve_providers,
)
from taugate.runtime.repository import ModeRepository
from taugate.runtime.routing import AUTO, Router
from taugate.runtime.sessions import (
    Loaded,
    check_session,
    output_error,
    probe_input,
    session_runner,
)

log = logging.getLogger("taugate.runtime")

_NDARRAY = np.ndarray
_FLOAT32 = np.dtype(np.float32)
_INF = float("inf")


MANY_SESSIONS = 16  # above this many loaded sessions, each gets 1 onnxruntime thread by default


class ModeRuntime(ModeRepository, ManyModes, RuntimeFacts):
    """Run the modes of a taugate bundle. Create with :meth:`ModeRuntime.open`.

    The dense baseline is reachable as mode :data:`DENSE` (``"dense"``), e.g.
    ``rt.run("dense", x)`` or ``rt.run_dense(x)``; it is not listed in :attr:`modes`.
    """

    def __init__(self, root, manifest: Manifest, plan, config: SessionConfig,
                 max_sessions: int | None, validate: bool, precision: str = "fp32",
                 budget: MemoryBudget | None = None):
        self._root = root
        self._precision = precision
        self._internal_run = False  # open(internal_run=True): the C++ run (sessions.py)
        self._manifest = manifest
        self._plan = plan
        self._config = config
        self._max_sessions = max_sessions
        self._budget = budget or MemoryBudget(None)
        self._sessions: dict[str, Loaded] = {}
        self._load_lock = threading.Lock()
        self._clock = itertools.count(1)  # next() is atomic under the GIL: no lock for LRU
        self._providers_in_use: list[str] | None = None
        self._in_name = manifest.input.name
        self._out_names = [manifest.output.name]
        self._classes = manifest.output.classes
        self._files = BundleFiles(root, manifest)  # verified reads, stamps, materialization
        self._unavailable: dict[str, str] = {}  # name -> why it failed to load after open
        self._retired: dict[str, str] = {}  # name -> why it is out of service (unload_mode)
        self._lazy = False
        self._opened = False
        self._router: Router | None = None  # loaded on first use (routing.py)
        self.checker = InputSpecChecker.from_spec(manifest.input)
        self._coerce = self.checker.coerce if validate else self.checker.reshape_only

    @classmethod
    def open(cls, bundle: str | os.PathLike, providers: ProviderSpec = "auto", *,
             max_sessions: int | None = None, validate: bool = True, lazy: bool = False,
             session_options=None, intra_op_num_threads: int | None = None,
             inter_op_num_threads: int | None = None,
             graph_optimization_level: str | None = None,
             precision: str = "fp32", internal_run: bool = False,
             memory_budget: int | str = AUTO_BUDGET) -> ModeRuntime:
        """Open and check the bundle at ``bundle`` (a directory or its manifest.json).

        providers: ``"auto"`` (DirectML > CUDA > CPU, falling back to CPU with a warning), one
            name/alias (``"cpu"``, ``"cuda"``, ``"directml"``), or an explicit list (enforced).
        max_sessions: how many sessions stay loaded (LRU eviction); None = all.
        memory_budget: bytes the loaded sessions may hold (an int, or a size such as
            ``"512M"``, ``"2G"``): loading one more drops the least recently used until it fits.
            A session's bytes are measured (budget.py). ``"auto"`` (default): half of the
            memory available at open, logged; ``"none"``: no byte budget.
        validate: check and coerce inputs (dtype, shape, range); False = reshape only, for
            callers who pass float32 [N, features] in range themselves.
        lazy: defer onnxruntime loading and the model I/O checks to each mode's first use;
            the path and sha256 checks of all files still happen here.
        session_options / intra_op_num_threads / inter_op_num_threads /
            graph_optimization_level ("disable", "basic", "extended", "all"): passed to
            onnxruntime (a full SessionOptions excludes the other three). When more than
            :data:`MANY_SESSIONS` sessions can be loaded at once and none of these is given,
            each session gets one intra-op and one inter-op thread (not one per core each).
        precision: ``"fp32"`` (the modes' own graphs) or ``"int8"`` (each mode's int8
            variant, ``taugate export --precision int8``). Every mode must have the variant
            (else :class:`RuntimeConfigError` naming those without); the dense model is served
            in that precision when the bundle has its variant, and ``run("dense")`` raises
            :class:`RuntimeConfigError` otherwise. Nothing falls back silently.
        internal_run: on CPU-only sessions, call onnxruntime's C++ ``run`` (its private
            ``_sess``) instead of ``InferenceSession.run``, saving ~0.5 us per call; used only
            where a probe call gives exactly the public run's result (opt-in: not public API).
        """
        if precision not in PRECISIONS:
            raise RuntimeConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got "
                                     f"{precision!r}")
        if max_sessions is not None and (not isinstance(max_sessions, int)
                                         or isinstance(max_sessions, bool) or max_sessions < 1):
            raise RuntimeConfigError(f"max_sessions: expected None or an integer >= 1, got "
                                     f"{max_sessions!r}")
        SessionConfig(intra_op_num_threads, inter_op_num_threads, graph_optimization_level,
                      session_options)  # validate the arguments before reading anything
        budget = MemoryBudget.resolve(memory_budget)
        plan = resolve_providers(providers)
        root, manifest = load_manifest(bundle)
        sessions = min(max_sessions or len(manifest.modes) + 1, len(manifest.modes) + 1)
        if sessions > MANY_SESSIONS and session_options is None and intra_op_num_threads is None \
                and inter_op_num_threads is None:
            # Each session owns a thread pool of one thread per core by default: with thousands
            # of modes, opening took minutes (200 modes: 28 s vs 0.5 s at one thread, 2 cores).
            # A server with many modes gets its parallelism from concurrent requests instead.
            intra_op_num_threads = inter_op_num_threads = 1
            log.info("%d sessions (> %d): onnxruntime threads per session bounded to 1 "
                     "(pass intra_op_num_threads to choose)", sessions, MANY_SESSIONS)
        config = SessionConfig(intra_op_num_threads, inter_op_num_threads,
                               graph_optimization_level, session_options,
                               many_sessions=sessions > MANY_SESSIONS)
        missing = [m for m, e in manifest.modes.items() if variant_entry(e, precision) is None]
        if missing:
            raise RuntimeConfigError(
                f"precision {precision!r}: modes {missing} have no {precision} variant in "
                f"{str(root)!r} (export with `taugate export --precision fp32,{precision}`, or "
                f"open with precision='fp32')")
        rt = cls(root, manifest, plan, config, max_sessions, bool(validate), precision, budget)
        rt._internal_run = bool(internal_run)
        rt._lazy = bool(lazy)
        try:
            if lazy:
                served = {(n, variant_entry(manifest.entry(n), precision).file)
                          for n in (DENSE, *manifest.modes)
                          if variant_entry(manifest.entry(n), precision) is not None}
                for ref in manifest.files():  # every listed file, whatever the precision
                    if isinstance(ref, ModelEntry):  # + operator checks; stamped if served
                        rt._files.read(ref, stamp=(ref.name, ref.file) in served)
                    else:
                        read_verified(root, ref)
            else:
                for name in (DENSE, *manifest.modes):
                    if variant_entry(manifest.entry(name), precision) is not None:
                        rt._load(name)
                if manifest.router is not None:
                    rt._routing()
        except BaseException:
            rt.close()
            raise
        rt._opened = True
        # reading and checking every file (thousands with many modes) leaves tens of MB of
        # freed pages in the C allocator: 35 -> 14 MB resident above baseline, 1,000 modes
        release_freed()
        return rt

    # -- the hot path ------------------------------------------------------------------------

    def run(self, mode: str, x) -> np.ndarray:
        """Logits, float32 [N, classes], of mode ``mode`` (or ``"dense"``) for inputs ``x``.

        ``x``: see :mod:`taugate.runtime.inputs` (float32/float64 in [0, 1] or uint8, shaped
        [N, 784], [N, 28, 28], [N, 1, 28, 28] or one image). Raises :class:`UnknownModeError`,
        :class:`InputError`.
        """
        loaded = self._sessions.get(mode)
        if loaded is None:
            if mode == AUTO:
                return self.run_auto(x).logits
            loaded = self._load(mode)
        return self._run_loaded(mode, loaded, self._coerce(x))

    def _run_loaded(self, mode: str, loaded: Loaded, batch: np.ndarray) -> np.ndarray:
        """One session run on an already validated batch, its output checked (the one run path:
        ``run``, mixed batches and every-mode calls all end here)."""
        loaded.last_used = next(self._clock)
        lock = loaded.lock
        if lock is None:
            out = loaded.run(self._out_names, {self._in_name: batch})[0]
        else:
            with lock:
                out = loaded.run(self._out_names, {self._in_name: batch})[0]
        # output_error's common case inline (a call and a numpy ufunc on a scalar cost ~0.6 us
        # at batch 1); any doubt goes to output_error, which decides and words the error
        if type(out) is _NDARRAY and out.dtype is _FLOAT32 \
                and out.shape == (batch.shape[0], self._classes):
            flat = out.ravel()
            if flat.dot(flat) < _INF:  # False for NaN; inf for inf or |value| > ~1e19
                return out
        problem = output_error(out, batch.shape[0], self._classes)
        if problem is not None:
            raise InvalidOutputError(f"mode {mode!r}: the model produced invalid output: "
                                     f"{problem}")
        return out

    def predict(self, mode: str, x) -> np.ndarray:
        """Class ids, int64 [N], of mode ``mode`` for inputs ``x``."""
        return self.run(mode, x).argmax(axis=1).astype(np.int64, copy=False)

    def run_dense(self, x) -> np.ndarray:
        """Logits of the dense baseline model (the reference every speedup is measured on)."""
        return self.run(DENSE, x)

    # -- loading -----------------------------------------------------------------------------

    def _entry(self, mode: str) -> ModelEntry:
        entry = self._manifest.entry(mode) if isinstance(mode, str) else None
        if entry is None:
            names = list(self._manifest.modes)
            shown = ", ".join(repr(n) for n in names[:20])
            more = f", ... ({len(names) - 20} more)" if len(names) > 20 else ""
            raise UnknownModeError(f"unknown mode {mode!r}; valid: {shown}{more} "
                                   f"(and {DENSE!r} for the dense model)")
        return entry

    def _served(self, mode: str) -> ModelEntry:
        """The entry whose file serves ``mode`` in this runtime's precision."""
        entry = self._entry(mode)
        served = variant_entry(entry, self._precision)
        if served is None:
            raise RuntimeConfigError(f"{mode!r} has no {self._precision} variant in this bundle "
                                     f"(open with precision='fp32' to run it)")
        return served

    def _load(self, mode: str) -> Loaded:
        self._served(mode)  # an unknown mode is refused without waiting for the lock
        with self._load_lock:
            loaded = self._sessions.get(mode)
            if loaded is not None:  # another thread loaded it while we waited
                return loaded
            entry = self._served(mode)  # again: unload_mode may have retired it meanwhile
            try:
                loaded = self._budget.measure(lambda: self._create(entry), lambda s: s.nbytes)
            except BundleError as exc:
                if self._opened:  # a file changed or vanished since open: the mode is down
                    self._unavailable[mode] = str(exc)
                    log.error("mode %r is unavailable: %s", mode, exc)
                raise
            self._unavailable.pop(mode, None)
            self._insert(mode, loaded)
            return loaded

    def _insert(self, mode: str, loaded: Loaded) -> None:
        """Keep ``loaded`` as ``mode``'s session (under the load lock), evicting the least
        recently used past ``max_sessions`` or the memory budget."""
        loaded.last_used = next(self._clock)
        for name in admit(self._sessions, mode, loaded, self._budget, self._max_sessions):
            log.debug("evicted session of mode %r (max_sessions, memory budget)", name)

    def _create(self, entry: ModelEntry, stamp: bool = True) -> Loaded:
        data = self._files.read(entry, stamp=stamp)
        label = f"{entry.name} ({entry.file})"
        initializers = self._files.initializers(entry)
        try:
            session, self._plan = create_session(data, self._plan, self._config, label,
                                                 initializers)
        except TaugateRuntimeError:
            raise
        except Exception as exc:
            raise BundleIntegrityError(
                f"{entry.name}: file {entry.file!r}: onnxruntime cannot load it (providers "
                f"{list(self._plan.names)}): {exc}") from exc
        check_session(session, entry, self._manifest)
        in_use = list(session.get_providers())
        self._providers_in_use = in_use
        log.debug("loaded mode %r from %s with providers %s", entry.name, entry.file, in_use)
        run = session_runner(session, self._in_name, self._out_names, self._manifest.input,
                             self._classes, f"{entry.name}: file {entry.file!r}",
                             internal=self._internal_run)
        nbytes = len(data) + sum(a.nbytes for a in (initializers or {}).values())
        # onnxruntime copies them into the session; kept where it may rebuild it (a fallback)
        return Loaded(session, threading.Lock() if needs_run_lock(in_use) else None, run,
                      None if in_use == [CPU] else initializers, nbytes)

    def unavailable(self) -> dict[str, str]:
        """Modes (or ``"dense"``) that cannot be served now, with the reason: those whose load
        failed after ``open``, and those whose file changed or vanished since it was verified
        (a stat per file; when it changed, the sha256 of the bytes: a byte-identical
        replacement stays healthy). Empty when the bundle is healthy."""
        out = self._files.changed()
        out.update(self._unavailable)  # a failed load says more than a changed stat
        return out

    def warmup(self, modes=None) -> None:
        """Load and run each mode once (all modes when ``modes`` is None; add ``"dense"`` to the
        list to include the dense model). With ``max_sessions`` below the number of modes only
        the most recent stay loaded."""
        spec = self._manifest.input
        zero = (probe_input(spec) if spec.token_length else
                np.full((1, *spec.shape), spec.range[0] if spec.range else 0.0, np.float32))
        for mode in (self.modes if modes is None else modes):
            self.run(mode, zero)

    def close(self) -> None:
        """Drop every session (they are garbage-collected once no thread is running them)."""
        with self._load_lock:
            self._sessions.clear()
            self._budget.used = 0

    def __enter__(self) -> ModeRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- facts -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"ModeRuntime({str(self._root)!r}, modes={len(self._manifest.modes)}, "
                f"loaded={len(self._sessions)}, providers={self.providers})")
