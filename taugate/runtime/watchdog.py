"""One daemon thread that sets ``RunOptions.terminate`` on runs past their deadline.

The probe run at every session load is bounded in time (sessions.py). A ``threading.Timer`` per
probe started a thread per load, and starting a thread waits until it runs: on a loaded
machine that wait was most of a cold mode's first call (about 2 ms of 8 at the median, more at
the tail). One thread serves every deadline instead; arming one is a lock and, only when it is
the earliest, a notify.
"""

from __future__ import annotations

import itertools
import threading
import time


class Watchdog:
    """Deadlines for objects with a ``terminate`` attribute (onnxruntime ``RunOptions``)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, object]] = {}  # token -> (deadline, options)
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, options, timeout_s: float) -> int:
        """Set ``options.terminate = True`` in ``timeout_s`` seconds unless disarmed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            token = next(self._tokens)
            earliest = min((d for d, _ in self._due.values()), default=None)
            self._due[token] = (deadline, options)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="taugate-watchdog",
                                                daemon=True)
                self._thread.start()
            elif earliest is None or deadline < earliest:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._due.pop(token, None)

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, options) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[token]
                        options.terminate = True
                earliest = min((d for d, _ in self._due.values()), default=None)
                self._cond.wait(None if earliest is None else earliest - now)


WATCHDOG = Watchdog()
