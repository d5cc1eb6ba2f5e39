"""The mode sources, importable from here too (their home: training/sources/)."""

from __future__ import annotations

from taugate.training.sources import (
    FolderModes,
    MNISTModes,
    ModeData,
    ModeSource,
    Split,
    TensorModes,
    as_split,
    open_source,
)

__all__ = ["FolderModes", "MNISTModes", "ModeData", "ModeSource", "Split", "TensorModes",
           "as_split", "open_source"]
