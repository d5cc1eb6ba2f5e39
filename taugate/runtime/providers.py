"""Execution-provider choice and session options.

``"auto"`` picks DirectML, then CUDA, then CPU among ``onnxruntime.get_available_providers()``.
That list only says what the onnxruntime *build* contains, not that a device works, so after a
session is created :func:`create_session` checks ``session.get_providers()``: with ``"auto"`` a
provider that was not taken is logged and the session is recreated on CPU; with an explicit
list it is a :class:`ProviderError`.

DirectML (https://onnxruntime.ai/docs/execution-providers/DirectML-ExecutionProvider.html)
supports neither memory patterns nor parallel execution: sessions need
``enable_mem_pattern = False`` and ``execution_mode = ORT_SEQUENTIAL``, and only one thread may
call ``run`` on a DirectML session at a time (:func:`needs_run_lock`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import onnxruntime as ort

from taugate.bundle.errors import ProviderError, RuntimeConfigError

log = logging.getLogger("taugate.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DML = "DmlExecutionProvider"
PREFERENCE = (DML, CUDA, CPU)  # the order "auto" tries
ALIASES = {"cpu": CPU, "cuda": CUDA, "directml": DML, "dml": DML}
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

ProviderSpec = Union[str, Sequence[Union[str, tuple]]]  # "auto" | "cpu" | [name or (name, opts)]


@dataclass
class SessionConfig:
    """How sessions are built. Either the fields or a full ``session_options``, not both."""

    intra_op_num_threads: int | None = None  # threads inside one operator; None = ort default
    inter_op_num_threads: int | None = None  # threads across operators; None = ort default
    graph_optimization_level: str | None = None  # one of OPTIMIZATION_LEVELS; None = "all"
    session_options: Any = None  # an onnxruntime.SessionOptions used as is (DirectML: adjusted)
    # many sessions may be loaded at once: each goes without its own CPU memory arena (an
    # arena per session held ~1 MB beyond a width-1024 mode's weights; its batch-1 to 256
    # speed is unchanged). Not applied to a caller's session_options.
    many_sessions: bool = False

    def __post_init__(self) -> None:
        for name in ("intra_op_num_threads", "inter_op_num_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise RuntimeConfigError(f"{name}: expected None or an integer >= 0 "
                                         f"(0 = onnxruntime default), got {value!r}")
        level = self.graph_optimization_level
        if level is not None and level not in OPTIMIZATION_LEVELS:
            raise RuntimeConfigError(f"graph_optimization_level: expected one of "
                                     f"{sorted(OPTIMIZATION_LEVELS)} or None, got {level!r}")
        if self.session_options is not None:
            if not isinstance(self.session_options, ort.SessionOptions):
                raise RuntimeConfigError(f"session_options: expected an onnxruntime."
                                         f"SessionOptions, got {type(self.session_options)}")
            given = [n for n in ("intra_op_num_threads", "inter_op_num_threads",
                                 "graph_optimization_level") if getattr(self, n) is not None]
            if given:
                raise RuntimeConfigError(f"pass either session_options or {given}, not both "
                                         f"(set them on the SessionOptions instead)")


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask onnxruntime for, in order, and whether the user chose them."""

    providers: tuple  # entries: provider name or (name, provider options dict)
    explicit: bool  # an explicit list is enforced; "auto" may fall back to CPU

    @property
    def names(self) -> tuple:
        return tuple(p if isinstance(p, str) else p[0] for p in self.providers)


CPU_PLAN = ProviderPlan((CPU,), explicit=False)


def _canonical(name) -> str:
    if not isinstance(name, str):
        raise ProviderError(f"providers: expected provider names (str) or (name, options) "
                            f"tuples, got {name!r}")
    known = ort.get_all_providers()
    if name in known:
        return name
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]
    raise ProviderError(f"providers: unknown provider {name!r}; valid: 'auto', aliases "
                        f"{sorted(ALIASES)}, or onnxruntime names {known}")


def resolve_providers(spec: ProviderSpec = "auto") -> ProviderPlan:
    """Turn ``"auto"``, one name/alias, or a list of names / (name, options) into a plan."""
    available = list(ort.get_available_providers())
    if isinstance(spec, str) and spec.lower() == "auto":
        chosen = [p for p in PREFERENCE if p in available]
        if CPU not in chosen:  # every onnxruntime build has CPU; keep it as the last resort
            chosen.append(CPU)
        # Only the best one plus CPU: CPU covers any operator the accelerator lacks.
        plan = (chosen[0], CPU) if chosen[0] != CPU else (CPU,)
        return ProviderPlan(plan, explicit=False)
    entries = [spec] if isinstance(spec, str) else list(spec)
    if not entries:
        raise ProviderError("providers: expected 'auto' or a non-empty list, got []")
    out = []
    for entry in entries:
        if isinstance(entry, tuple):
            if len(entry) != 2 or not isinstance(entry[1], dict):
                raise ProviderError(f"providers: expected (name, options dict), got {entry!r}")
            name, opts = _canonical(entry[0]), entry[1]
        else:
            name, opts = _canonical(entry), None
        if name not in available:
            raise ProviderError(f"providers: {name} is not available in this onnxruntime build; "
                                f"available: {available}")
        out.append(name if opts is None else (name, opts))
    return ProviderPlan(tuple(out), explicit=True)


def build_session_options(config: SessionConfig, plan: ProviderPlan) -> ort.SessionOptions:
    """SessionOptions from ``config``, adjusted for DirectML when the plan uses it."""
    opts = config.session_options if config.session_options is not None else ort.SessionOptions()
    if config.session_options is None:
        if config.intra_op_num_threads is not None:
            opts.intra_op_num_threads = config.intra_op_num_threads
        if config.inter_op_num_threads is not None:
            opts.inter_op_num_threads = config.inter_op_num_threads
        if config.graph_optimization_level is not None:
            level = OPTIMIZATION_LEVELS[config.graph_optimization_level]
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if config.many_sessions:
            opts.enable_cpu_mem_arena = False
    if DML in plan.names:
        opts.enable_mem_pattern = False
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def needs_run_lock(providers_in_use: Sequence[str]) -> bool:
    """True when a session may only be run by one thread at a time (DirectML)."""
    return DML in providers_in_use


def _fresh_options(opts: ort.SessionOptions) -> ort.SessionOptions:
    """A new SessionOptions with ``opts``' common settings: external initializers are added to
    the options object, so a shared one (a caller's ``session_options``) must not receive them."""
    fresh = ort.SessionOptions()
    for attr in ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level",
                 "execution_mode", "enable_mem_pattern", "enable_cpu_mem_arena",
                 "log_severity_level", "enable_profiling"):
        setattr(fresh, attr, getattr(opts, attr))
    return fresh


def create_session(model: bytes, plan: ProviderPlan, config: SessionConfig, label: str,
                   initializers: dict | None = None):
    """Create an InferenceSession for ``model``; returns (session, plan actually used).

    ``initializers`` (name -> numpy array) replace the graph's external-data initializers
    (``SessionOptions.add_external_initializers``: onnxruntime copies them into the graph at
    load, so the arrays may be freed once the session exists).

    With an ``"auto"`` plan, a provider that fails or is not taken falls back to CPU (logged
    as a warning); the returned plan is then :data:`CPU_PLAN` so later sessions skip the retry.
    Errors of onnxruntime itself (a model it cannot load) propagate unchanged.
    """
    opts = build_session_options(config, plan)
    if initializers:
        opts = _fresh_options(opts)
        names = list(initializers)
        opts.add_external_initializers(
            names, [ort.OrtValue.ortvalue_from_numpy(initializers[n]) for n in names])
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=list(plan.providers))
    except Exception as exc:
        if plan.explicit or plan.names == (CPU,):
            raise
        log.warning("%s: creating a session with %s failed (%s); retrying with %s only",
                    label, list(plan.names), exc, CPU)
        return create_session(model, CPU_PLAN, config, label, initializers)
    taken = list(session.get_providers())
    missing = [name for name in plan.names if name not in taken]
    if not missing:
        return session, plan
    if plan.explicit:
        raise ProviderError(f"{label}: onnxruntime did not take provider(s) {missing} (the "
                            f"session uses {taken}); the device or its driver may be missing. "
                            f"Use providers='auto' to fall back to CPU")
    log.warning("%s: provider(s) %s are in this onnxruntime build but were not taken (session "
                "uses %s); falling back to %s", label, missing, taken, CPU)
    return create_session(model, CPU_PLAN, config, label, initializers)
