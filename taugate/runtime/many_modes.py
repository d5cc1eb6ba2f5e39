"""Several modes in one call, on :class:`~taugate.runtime.ModeRuntime`: mixed-mode batches,
every mode on the same rows (taugate/runtime/mixed.py), and automatic routing with unknown-input
flagging (taugate/runtime/routing.py). A mixin: the runtime's own state is used as it is."""

from __future__ import annotations

import numpy as np

from taugate.runtime.mixed import run_all, run_mixed, run_session
from taugate.runtime.routing import AutoResult, Router, Routing, routed_run


class ManyModes:
    """The runtime's methods that run more than one mode per call."""

    def run_mixed(self, modes, x) -> np.ndarray:
        """Logits [N, classes] of a batch whose row i belongs to mode ``modes[i]`` (one name per
        row: a sequence of str or a numpy str array; ``"dense"`` allowed), exactly what
        ``run(modes[i], x[i:i+1])`` gives, in row order. Unknown names raise
        :class:`UnknownModeError` before anything runs (docs/runtime.md, "Several modes in one
        call")."""
        return run_mixed(self, modes, x)

    def run_all(self, x, modes=None) -> dict[str, np.ndarray]:
        """``{mode: logits}`` of every mode (or of ``modes``) on the same rows ``x``, computing
        what the modes share once (the union of their first layers' kept units, on a shared-layout
        fp32 bundle); each value is what ``run(mode, x)`` gives (max abs difference <= 1e-5)."""
        return run_all(self, x, modes)

    def route(self, x) -> list:
        """The mode each row of ``x`` belongs to, by the bundle's router, or ``"unknown"`` for a
        row of none. Raises :class:`RuntimeConfigError` when the bundle has no router."""
        return self.routing(x).modes

    def routing(self, x) -> Routing:
        """:meth:`route` with the router's detail: each row's best mode and its distance."""
        return self._routing().route(self._coerce(x))

    def run_auto(self, x, unknown: str = "refuse") -> AutoResult:
        """Each row of ``x`` run in its routed mode (``run("auto", x)`` returns the logits
        alone): ``.logits``, ``.modes`` (per row) and ``.routing``. ``unknown``: ``"refuse"``
        (rows of no known mode raise :class:`~taugate.runtime.routing.UnknownInputError`) or
        ``"dense"`` (they run on the dense model)."""
        batch = self._coerce(x)
        # the batch is checked once, here: each mode's rows run without a second check
        return routed_run(lambda mode, rows: run_session(self, mode, rows),
                          self._routing().route(batch), batch, unknown, self._classes)

    def _routing(self) -> Router:
        if self._router is None:
            with self._load_lock:
                if self._router is None:
                    self._router = Router.open(self._root, self._manifest, self._plan,
                                               self._config)
        return self._router
