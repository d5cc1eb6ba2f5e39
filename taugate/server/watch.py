"""``taugate serve --watch SECONDS``: poll the bundle's ``manifest.json`` and put what changed
into service by itself -- the repository extension's load and unload, without a client.

Every ``interval_s`` the manifest's sha256 is compared with the last one seen (one small read);
when it changed, each mode that is new or whose entry changed is loaded
(:meth:`ModeRuntime.load_mode`: verified like at open; a refused one is logged and retried at
the next change), and each served mode no longer listed is unloaded. An unreadable or invalid
manifest changes nothing (an export in progress swaps the bundle atomically anyway).
"""

from __future__ import annotations

import hashlib
import logging
import threading

from taugate.bundle.manifest import MANIFEST_NAME, load_manifest
from taugate.runtime import BundleError, TaugateRuntimeError

log = logging.getLogger("taugate.server")


def manifest_digest(bundle_dir) -> str | None:
    """sha256 of the bundle's manifest.json, or None when it cannot be read."""
    try:
        return hashlib.sha256((bundle_dir / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


def sync(runtime) -> dict[str, str]:
    """Bring ``runtime`` in line with the bundle on disk once; returns mode -> outcome
    (``loaded``, ``reloaded``, ``unloaded`` or ``refused: <reason>``)."""
    try:
        _, disk = load_manifest(runtime.bundle_dir)
    except BundleError as exc:
        log.warning("--watch: the manifest on disk cannot be used, nothing changed: %s", exc)
        return {}
    served, out = runtime.manifest.modes, {}
    for mode, entry in disk.modes.items():
        if served.get(mode) == entry:
            continue
        try:
            out[mode] = runtime.load_mode(mode)
        except TaugateRuntimeError as exc:
            out[mode] = f"refused: {exc}"
            log.error("--watch: mode %r not loaded: %s", mode, exc)
    for mode in [m for m in served if m not in disk.modes]:
        runtime.unload_mode(mode)
        out[mode] = "unloaded"
    if out:
        log.info("--watch: %s", ", ".join(f"{m} {o.split(':')[0]}" for m, o in out.items()))
    return out


class ManifestWatcher:
    """A daemon thread running :func:`sync` whenever the manifest's sha256 changes."""

    def __init__(self, runtime, interval_s: float):
        if not isinstance(interval_s, (int, float)) or isinstance(interval_s, bool) \
                or not interval_s > 0:
            raise ValueError(f"--watch: expected a number of seconds > 0, got {interval_s!r}")
        self.runtime = runtime
        self.interval_s = float(interval_s)
        self._seen = manifest_digest(runtime.bundle_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taugate-watch", daemon=True)

    def check(self) -> dict[str, str]:
        """One poll: :func:`sync` when the manifest changed since the last poll."""
        digest = manifest_digest(self.runtime.bundle_dir)
        if digest is None or digest == self._seen:
            return {}
        self._seen = digest
        return sync(self.runtime)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive one bad poll
                log.exception("--watch: poll failed")

    def start(self) -> ManifestWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
