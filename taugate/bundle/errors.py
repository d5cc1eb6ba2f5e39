"""The runtime's exception hierarchy: one base class, one subclass per kind of refusal.

Each class also derives from the matching builtin (``ValueError``, ``KeyError``,
``RuntimeError``) so callers that catch builtins keep working. Messages name the file or value
received, what was expected, and the valid choices.
"""

from __future__ import annotations


class TaugateRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class RuntimeConfigError(TaugateRuntimeError, ValueError):
    """An argument of ``ModeRuntime.open`` (or a session config field) is invalid."""


class BundleError(TaugateRuntimeError, ValueError):
    """The bundle cannot be used (missing directory or manifest, unreadable JSON, ...)."""


class BundleFormatError(BundleError):
    """The manifest does not follow a bundle format this runtime knows."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, leaves the bundle directory, fails its sha256 check, cannot be
    loaded by onnxruntime, or disagrees with the manifest."""


class UnknownModeError(TaugateRuntimeError, KeyError):
    """A mode name that the bundle does not contain."""

    def __str__(self) -> str:
        # KeyError.__str__ returns repr(arg), which would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class InputError(TaugateRuntimeError, ValueError):
    """An input batch has an unsupported shape, dtype or value range."""


class ProviderError(TaugateRuntimeError, RuntimeError):
    """An execution provider was asked for that is unknown, unavailable, or was not taken."""


class InvalidOutputError(TaugateRuntimeError, RuntimeError):
    """A model produced output that is not float32 logits ``[N, classes]`` with finite values
    (a broken or hostile bundle: the caller's input was fine)."""
