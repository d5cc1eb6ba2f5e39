"""The taugate runtime: run a bundle's per-mode ONNX subnetworks with onnxruntime.

numpy + onnxruntime only -- importing this package never imports torch, onnx, or
``taugate.training`` / ``taugate.exporting`` (a test enforces it)::

    from taugate.runtime import ModeRuntime
    rt = ModeRuntime.open("bundle", providers="auto")
    logits = rt.run("rot45", images)      # float32 [N, classes]
    classes = rt.predict("rot45", images)  # int64 [N]
    baseline = rt.run("dense", images)     # the dense model (DENSE)
"""

from __future__ import annotations

from taugate.bundle.errors import (
                                    BundleError,
                                    BundleFormatError,
                                    BundleIntegrityError,
                                    InputError,
                                    InvalidOutputError,
                                    ProviderError,
                                    RuntimeConfigError,
                                    TaugateRuntimeError,
                                    UnknownModeError,
)
from taugate.bundle.manifest import DENSE, SUPPORTED_FORMAT_VERSIONS, Manifest
from taugate.runtime.mode_runtime import ModeRuntime

__all__ = [
                                    "DENSE",
                                    "SUPPORTED_FORMAT_VERSIONS",
                                    "BundleError",
                                    "BundleFormatError",
                                    "BundleIntegrityError",
                                    "InputError",
                                    "InvalidOutputError",
                                    "Manifest",
                                    "ModeRuntime",
                                    "ProviderError",
                                    "RuntimeConfigError",
                                    "TaugateRuntimeError",
                                    "UnknownModeError",
]
