"""The data types and the built-in MNIST source, importable from here too (their home:
training/sources/)."""

from __future__ import annotations

from taugate.training.sources.base import Mode, ModeData, Split
from taugate.training.sources.mnist import DATA_ENV, DataConfig, MNISTModes, default_root, rotate

__all__ = ["DATA_ENV", "DataConfig", "MNISTModes", "Mode", "ModeData", "Split", "default_root",
           "rotate"]
