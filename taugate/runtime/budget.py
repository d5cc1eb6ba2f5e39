"""A byte budget over a :class:`~taugate.runtime.ModeRuntime`'s loaded sessions.

Every open mode materializes its own compacted weights and onnxruntime session, and a session
holds more than its weights (its kernels, graph and, unless many sessions are open, a memory
arena: docs/runtime.md, "Many modes within a memory budget"). So a session's bytes are
*measured*: the
resident set size (``/proc/self/statm``) grows by some amount while each of the first sessions is
created (free pages handed back before and after, so only what the session keeps counts), and
the median of ``growth / weight bytes`` over those (the first session excluded, which
also pays onnxruntime's one-time setup) becomes the factor every session's weight bytes are
charged at. Where the RSS cannot be read, :data:`FALLBACK_FACTOR` is used.

Evicted sessions' memory goes back to the C allocator, which keeps much of it under churn
(loads of modes of differing sizes fragment its heap). So after evicting, glibc's
``malloc_trim(0)`` hands free pages back to the OS (on the cold path only: the next load pays
for fresh pages); where there is no glibc this is skipped.

The budget is kept when a session is inserted: least-recently-used sessions are dropped until
the new one fits (at least the new one stays, whatever its size). A dropped session that a
request is still running stays alive until that request returns (a reference is held).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import numbers
import os
import re
import statistics
import sys

from taugate.bundle.errors import RuntimeConfigError

log = logging.getLogger("taugate.runtime")

AUTO, NONE = "auto", "none"
AUTO_FRACTION = 0.5  # the default budget: this share of the memory available at open
FALLBACK_FACTOR = 3.0  # resident bytes per weight byte where the RSS cannot be read
SAMPLES = 8  # sessions whose RSS growth is measured (after the first)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(value, what: str = "memory_budget") -> int | None:
    """Bytes from an int or a size string (``"512M"``, ``"1.5G"``, ``"2GiB"``, ``"1000000"``;
    K/M/G/T are powers of 1024); ``"none"`` gives None (no byte budget). Raises
    :class:`RuntimeConfigError` naming ``what``, the value and the accepted forms."""
    expected = (f"{what}: expected a positive number of bytes (an int, or a size such as "
                f"'512M', '2G', '1.5GiB'), {AUTO!r} or {NONE!r}, got {value!r}")
    if isinstance(value, bool):
        raise RuntimeConfigError(expected)
    if isinstance(value, numbers.Integral):  # int, numpy integers
        value = int(value)
        if value < 1:
            raise RuntimeConfigError(expected)
        return value
    if not isinstance(value, str):
        raise RuntimeConfigError(expected)
    if value.strip().lower() == NONE:
        return None
    match = _SIZE.fullmatch(value)
    if match is None:
        raise RuntimeConfigError(expected)
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1:
        raise RuntimeConfigError(expected)
    return size


def available_bytes() -> int | None:
    """Memory available to new allocations now (Linux ``MemAvailable``; elsewhere the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def rss_bytes() -> int | None:
    """This process's resident set size (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


MALLOC_TRIM = _malloc_trim()


def release_freed() -> None:
    """Return the C allocator's free pages to the OS (glibc), else nothing."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def fmt(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class MemoryBudget:
    """The byte limit, the measured bytes-per-weight-byte factor, and the charge of each
    loaded session. Methods are called under the runtime's load lock."""

    def __init__(self, limit: int | None, rss=rss_bytes):
        self.limit = limit
        self._rss = rss
        self._samples: list[float] = []
        self._created = 0
        self._warned: set = set()
        self.used = 0  # the charges of the sessions in the runtime's dict

    @classmethod
    def resolve(cls, value) -> MemoryBudget:
        """From ``open``'s ``memory_budget``: ``"auto"`` (the default), ``"none"``, or a size."""
        if isinstance(value, str) and value.strip().lower() == AUTO:
            avail = available_bytes()
            if avail is None:
                log.warning("memory_budget='auto': the available memory cannot be read here; "
                            "no byte budget (pass memory_budget to set one)")
                return cls(None)
            limit = int(avail * AUTO_FRACTION)
            # debug: a library call (predict, info) must not print; `taugate serve` reports it
            log.debug("memory budget for loaded sessions: %s (%d%% of the %s available; "
                     "memory_budget sets it)", fmt(limit), round(100 * AUTO_FRACTION), fmt(avail))
            return cls(limit)
        return cls(parse_size(value))

    @property
    def factor(self) -> float:
        """Resident bytes charged per materialized byte (measured; >= 1)."""
        if not self._samples:
            return FALLBACK_FACTOR
        return max(1.0, statistics.median(self._samples))

    def measure(self, create, nbytes_of):
        """``create()``, sampling the RSS growth it causes (for the first sessions only)."""
        sampling = self._created <= SAMPLES and self._rss is not None
        if sampling:  # free pages returned first and after: the growth is what stays held
            release_freed()
        before = self._rss() if sampling else None
        loaded = create()
        self._created += 1
        if before is not None:
            release_freed()
            after = self._rss()
            nbytes = nbytes_of(loaded)
            if after is not None and self._created > 1 and nbytes > 0:
                self._samples.append(max(0, after - before) / nbytes)
        return loaded

    def estimate(self, nbytes: int) -> int:
        """Bytes a session whose weights and model file take ``nbytes`` is charged."""
        return int(nbytes * self.factor)

    def over(self, charge: int, count: int) -> bool:
        """Whether ``charge`` more bytes would pass the limit with ``count`` sessions loaded."""
        return self.limit is not None and count > 0 and self.used + charge > self.limit

    def too_big(self, mode: str, charge: int) -> None:
        """Log (once per mode) that one session alone exceeds the budget."""
        if self.limit is not None and charge > self.limit and mode not in self._warned:
            self._warned.add(mode)
            log.warning("mode %r alone is estimated at %s, over the memory budget of %s: it "
                        "is kept as the only session loaded", mode, fmt(charge), fmt(self.limit))

    def report(self) -> dict:
        """``{"limit", "used", "factor", "samples"}``: the budget as the runtime sees it."""
        return {"limit": self.limit, "used": self.used, "factor": self.factor,
                "samples": len(self._samples)}


def admit(sessions: dict, mode: str, loaded, budget: MemoryBudget,
          max_sessions: int | None) -> list[str]:
    """Put ``loaded`` in ``sessions`` as ``mode``'s session, first dropping the least recently
    used others while ``max_sessions`` or the byte budget would be passed; returns the dropped
    names. Threads already running a dropped session hold a reference: their runs finish."""
    old = sessions.pop(mode, None)
    if old is not None:
        budget.used -= old.charge
    loaded.charge = budget.estimate(loaded.nbytes)
    budget.too_big(mode, loaded.charge)
    dropped = []
    while sessions and ((max_sessions is not None and len(sessions) >= max_sessions)
                        or budget.over(loaded.charge, len(sessions))):
        oldest = min(sessions, key=lambda k: sessions[k].last_used)
        budget.used -= sessions.pop(oldest).charge
        dropped.append(oldest)
    sessions[mode] = loaded
    budget.used += loaded.charge
    if dropped:
        release_freed()  # the dropped sessions are freed now, unless a request still runs one
    return dropped


def drop(sessions: dict, mode: str, budget: MemoryBudget) -> None:
    """Take ``mode``'s session out of ``sessions`` (if loaded), releasing its charge."""
    old = sessions.pop(mode, None)
    if old is not None:
        budget.used -= old.charge
