"""Mode sources: where a mode's train / calibration / test splits come from.

Every source is a :class:`ModeSource` (sources/base.py). Built in: :class:`MNISTModes`
(rotations and corruptions), :class:`FolderModes` (``MODES/<mode>/{train,test[,calibration]}.npz``)
and :class:`TensorModes` (tensors or torch Datasets from Python). ``SOURCES`` maps the ``kind``
a run.json records to the class that reopens it.
"""

from __future__ import annotations

from taugate.training.sources.base import DataFacts, Mode, ModeData, ModeSource, Split
from taugate.training.sources.folder import FolderModes
from taugate.training.sources.mnist import DataConfig, MNISTModes
from taugate.training.sources.tensors import TensorModes, as_split

SOURCES: dict[str, type[ModeSource]] = {
    "mnist": MNISTModes,
    "folder": FolderModes,
    "python": TensorModes,
}


def open_source(described: dict, data_root: str | None = None) -> ModeSource:
    """Reopen a source from its ``describe()`` object (what a run directory records);
    ``data_root`` overrides where its data lives."""
    kind = described.get("kind") if isinstance(described, dict) else None
    if kind not in SOURCES:
        raise ValueError(f"mode source {kind!r}: unknown; valid: {', '.join(SOURCES)}")
    return SOURCES[kind].reopen(described, data_root)


__all__ = ["SOURCES", "DataConfig", "DataFacts", "FolderModes", "MNISTModes", "Mode", "ModeData",
           "ModeSource", "Split", "TensorModes", "as_split", "open_source"]
