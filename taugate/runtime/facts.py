"""What a :class:`~taugate.runtime.ModeRuntime` tells about itself: its modes, manifest,
precision, providers, loaded sessions and their bytes, the memory budget and each model's facts.

A mixin of read-only views over the runtime's state (``_manifest``, ``_sessions``, ``_plan``,
``_budget``, ...), kept apart from the code that opens, loads and runs sessions.
"""

from __future__ import annotations

from taugate.bundle.manifest import Manifest


class RuntimeFacts:
    """Read-only views of a runtime's state; ``info`` resolves names with its ``_entry``."""

    @property
    def modes(self) -> list[str]:
        """Mode names in manifest order (the dense model is reachable as ``"dense"``)."""
        return list(self._manifest.modes)

    @property
    def manifest(self) -> Manifest:
        """The validated manifest (``.raw`` holds the JSON as written)."""
        return self._manifest

    @property
    def precision(self) -> str:
        """The precision every model is served in (``"fp32"`` or ``"int8"``)."""
        return self._precision

    @property
    def bundle_dir(self):
        return self._root

    @property
    def providers(self) -> list[str]:
        """Providers of the most recently created session (what onnxruntime really took), or
        the planned ones while no session exists yet (``lazy=True``)."""
        return list(self._providers_in_use or self._plan.names)

    @property
    def loaded_modes(self) -> list[str]:
        """Names (modes and possibly ``"dense"``) whose sessions are loaded now."""
        return list(self._sessions)

    def resident_bytes(self) -> dict[str, int]:
        """Bytes held for each loaded session: its model file plus materialized initializers
        (onnxruntime's own arena is not visible from Python)."""
        return {name: loaded.nbytes for name, loaded in list(self._sessions.items())}

    def memory(self) -> dict:
        """The memory budget: ``limit`` (bytes; None: none), ``used`` (the loaded sessions'
        charges), ``factor`` (resident bytes per materialized byte, measured), ``samples``."""
        return self._budget.report()

    @property
    def labels(self) -> tuple:
        return self._manifest.output.labels

    def info(self, mode: str) -> dict:
        """Manifest facts of ``mode`` (or ``"dense"``) plus ``mac_ratio`` (dense MACs / mode
        MACs: how many times fewer, 2.0 for half the MACs; the CLI tables print it as
        ``"2.00x fewer"``), ``facts`` (the mode's free-form facts; format 1: its angle) and whether it is
        loaded. ``kept_indices`` and ``materialize`` are left out (see
        ``manifest.modes[m].facts``)."""
        entry = self._entry(mode)
        facts = {k: v for k, v in entry.facts.items() if k not in ("kept_indices", "materialize")}
        dense_macs = self._manifest.dense.macs
        facts.update(name=entry.name, macs=entry.macs, loaded=mode in self._sessions,
                     mac_ratio=dense_macs / entry.macs if dense_macs and entry.macs else None)
        if entry is not self._manifest.dense:
            facts["facts"] = dict(entry.mode_facts)
        return facts
