"""Modes brought into and taken out of service while a :class:`~taugate.runtime.ModeRuntime`
serves: the runtime side of the model repository extension (Triton's explicit model control).

``load_mode(m)`` re-reads ``manifest.json`` from the bundle on disk (for example after
``taugate export --into`` added ``m``), validates it as ``open`` does, checks that it still
describes the same bundle (format version, input and output, dense model, shared backbone), and
verifies and loads only ``m``'s entry: path and sha256 checks, the graph checks, and (unless the
runtime is lazy) the onnxruntime session with its probe run. Only then is the mode swapped in,
under the load lock that session creation already takes: the hot path of the other modes takes
no lock, so they keep serving. A refused load raises and changes nothing. ``unload_mode(m)``
takes a mode out: its requests then fail as for an unknown mode.

Triton model repository extension:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md
"""

from __future__ import annotations

import logging
from dataclasses import replace

from taugate.bundle.errors import (
    BundleError,
    BundleIntegrityError,
    RuntimeConfigError,
    UnknownModeError,
)
from taugate.bundle.manifest import DENSE, load_manifest, variant_entry
from taugate.runtime.budget import drop

log = logging.getLogger("taugate.runtime")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
UNLOADED = "unloaded"


def incompatible(served, disk) -> str | None:
    """Why the manifest on disk no longer describes the served bundle, or None."""
    checks = (("format_version", served.format_version, disk.format_version),
              ("input", served.input, disk.input), ("output", served.output, disk.output),
              ("dense model sha256", served.dense.sha256, disk.dense.sha256),
              ("shared backbone", served.backbone, disk.backbone))
    for what, old, new in checks:
        if old != new:
            return (f"the bundle on disk has another {what} than the one served: it is another "
                    f"bundle; restart the server to serve it")
    return None


class ModeRepository:
    """Mixin of :class:`~taugate.runtime.ModeRuntime`: load, unload and list modes while
    serving (it uses the runtime's manifest, sessions, files and load lock)."""

    def _disk_manifest(self):
        root, disk = load_manifest(self._root)  # validated as at open
        problem = incompatible(self._manifest, disk)
        if problem:
            raise BundleIntegrityError(problem)
        return disk

    def load_mode(self, mode: str) -> str:
        """Bring ``mode`` into service from the bundle on disk; returns ``"loaded"`` (new, or
        back after an unload), ``"reloaded"`` (its entry changed on disk) or ``"unchanged"``.

        Raises :class:`UnknownModeError` when the bundle on disk has no such mode,
        :class:`RuntimeConfigError` for ``"dense"`` or a mode without this runtime's precision,
        :class:`BundleError` when its manifest or files fail the checks; then nothing changed.
        """
        if mode == DENSE:
            raise RuntimeConfigError(f"{DENSE!r} is loaded at open and stays in service; only "
                                     f"modes are loaded and unloaded")
        disk = self._disk_manifest()
        entry = disk.modes.get(mode) if isinstance(mode, str) else None
        if entry is None:
            shown = ", ".join(repr(m) for m in list(disk.modes)[:20])
            raise UnknownModeError(f"mode {mode!r} is not in the bundle on disk; its modes: "
                                   f"{shown}")
        served = variant_entry(entry, self._precision)
        if served is None:
            raise RuntimeConfigError(f"{mode!r} has no {self._precision} variant in the bundle "
                                     f"on disk")
        with self._load_lock:
            current = self._manifest.modes.get(mode)
            healthy = mode not in self._unavailable and mode not in self._files.changed()
            if current == entry and healthy:
                return "unchanged"
            # verify (and load) without touching the served state: a failure changes nothing
            loaded = None
            if self._lazy:
                self._files.read(served, stamp=False)
            else:
                loaded = self._create(served, stamp=False)
            self._files.read(served)  # watch the file that now serves the mode
            modes = {**self._manifest.modes, mode: entry}
            raw = dict(self._manifest.raw)
            raw["modes"] = {**raw.get("modes", {}), mode: disk.raw["modes"][mode]}
            self._manifest = replace(self._manifest, modes=modes, raw=raw)
            if loaded is None:
                drop(self._sessions, mode, self._budget)
            else:
                self._insert(mode, loaded)
            self._unavailable.pop(mode, None)
            self._retired.pop(mode, None)
        outcome = "loaded" if current is None else "reloaded"
        log.info("mode %r %s from the bundle on disk (%s)", mode, outcome, entry.file)
        return outcome

    def unload_mode(self, mode: str) -> None:
        """Take ``mode`` out of service: later requests fail as for an unknown mode; requests
        already running it finish. Raises :class:`UnknownModeError` when it is not served."""
        if mode == DENSE:
            raise RuntimeConfigError(f"{DENSE!r} stays in service (the reference every mode is "
                                     f"measured on); only modes are loaded and unloaded")
        with self._load_lock:
            if not isinstance(mode, str) or mode not in self._manifest.modes:
                self._entry(mode)  # raises UnknownModeError with the valid choices
            modes = {k: v for k, v in self._manifest.modes.items() if k != mode}
            raw = dict(self._manifest.raw)
            raw["modes"] = {k: v for k, v in raw.get("modes", {}).items() if k != mode}
            self._manifest = replace(self._manifest, modes=modes, raw=raw)
            drop(self._sessions, mode, self._budget)
            self._unavailable.pop(mode, None)
            self._files.forget(mode)
            self._retired[mode] = UNLOADED
        log.info("mode %r unloaded", mode)

    def repository_index(self) -> list[dict]:
        """Every model (the dense one, the served modes, the modes on disk), each
        ``{"name", "state": "READY" | "UNAVAILABLE", "reason"}``; the reason is empty when
        ready and nothing is pending."""
        try:
            disk, disk_error = self._disk_manifest().modes, None
        except BundleError as exc:
            disk, disk_error = {}, str(exc)
        served, down = self._manifest.modes, self.unavailable()
        out = []
        for name in (DENSE, *served, *(m for m in disk if m not in served)):
            reason, state = down.get(name, ""), UNAVAILABLE if name in down else READY
            if name not in served and name != DENSE:
                state = UNAVAILABLE
                reason = (UNLOADED if name in self._retired
                          else "in the bundle on disk, not loaded")
            elif not reason and name != DENSE and disk_error is None:
                if name not in disk:
                    reason = "no longer in the bundle on disk"
                elif disk[name] != served[name]:
                    reason = "the bundle on disk holds a changed entry: load it to serve it"
            out.append({"name": name, "state": state, "reason": reason})
        return out
