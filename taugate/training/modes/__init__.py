"""Mode sources: where a mode's train / calibration / test splits come from.

"Modes are data, not angles" (DESIGN.md). A :class:`ModeSource` is anything with
``mode(name) -> ModeData`` (three :class:`~taugate.training.data.Split` s plus free-form
``facts``), ``mixture(names) -> Split`` (the foundation's data), ``names()`` (its default
modes), ``describe()`` (a JSON dict to reopen it), and ``input_spec`` / ``labels`` (the bundle
v2 input spec and optional class labels). Built in: :class:`MNISTModes` (rotations and
corruptions), :class:`FolderModes` (``MODES/<mode>/{train,test[,calibration]}.npz``) and
:class:`TensorModes` (tensors or torch Datasets from Python).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from taugate.training.data import DataConfig, MNISTModes, Mode, ModeData, Split
from taugate.training.modes.folder import FolderModes
from taugate.training.modes.reading import ModeFolderError


@runtime_checkable
class ModeSource(Protocol):
    def mode(self, name: str) -> ModeData: ...
    def mixture(self, names) -> Split: ...
    def names(self) -> list[str]: ...


def as_split(obj, what: str = "split") -> Split:
    """A Split from a Split, an ``(x, y)`` pair of tensors/arrays, or a torch ``Dataset`` of
    ``(x, y)`` items."""
    if isinstance(obj, Split):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = (torch.as_tensor(v) for v in obj)
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        items = [obj[i] for i in range(len(obj))]
        if not items:
            raise ValueError(f"{what}: the dataset is empty")
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = torch.as_tensor([int(b) for _, b in items])
    else:
        raise TypeError(f"{what}: expected a Split, an (x, y) pair or a torch Dataset, got "
                        f"{type(obj).__name__}")
    x, y = x.to(torch.float32), y.to(torch.int64)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{what}: expected x [N, ...] and y [N], got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    return Split(x.contiguous(), y)


class TensorModes:
    """Modes given from Python: ``{name: {"train": ..., "test": ..., "calibration": ...}}``
    where each split is an ``(x, y)`` pair or a torch Dataset; optional ``facts`` per mode.
    Without ``calibration`` a seeded 10 % of train is held out."""

    def __init__(self, modes: dict, facts: dict | None = None, split_seed: int = 0):
        self._modes: dict[str, ModeData] = {}
        for name, splits in modes.items():
            from taugate.bundle.names import check_mode_name

            check_mode_name(name)
            train = as_split(splits["train"], f"{name} train")
            test = as_split(splits["test"], f"{name} test")
            if splits.get("calibration") is not None:
                cal = as_split(splits["calibration"], f"{name} calibration")
            else:
                n_cal = max(1, len(train) // 10)
                perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
                cal = Split(train.x[perm[:n_cal]], train.y[perm[:n_cal]])
                train = Split(train.x[perm[n_cal:]], train.y[perm[n_cal:]])
            self._modes[name] = ModeData(Mode(name), train, cal, test,
                                         facts={"source": "python", **(facts or {}).get(name, {})})
        first = next(iter(self._modes.values()))
        self.input_spec = {"name": "input", "dtype": "float32",
                           "shape": ["batch", *first.train.x.shape[1:]], "range": None,
                           "layout": None}
        self.labels = None

    def names(self) -> list[str]:
        return list(self._modes)

    def mode(self, name: str) -> ModeData:
        if name not in self._modes:
            raise ValueError(f"mode {name!r}: not given; modes: {', '.join(self._modes)}")
        return self._modes[name]

    def mixture(self, names) -> Split:
        parts = [self.mode(n).train for n in names]
        return Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    def describe(self) -> dict:
        return {"kind": "python"}  # cannot be reopened from disk


def open_source(describe: dict, data_root: str | None = None):
    """Reopen a source from its ``describe()`` dict (what a run directory records)."""
    kind = describe.get("kind")
    if kind == "mnist":
        cfg = dict(describe.get("data") or {})
        if data_root is not None:
            cfg["root"] = data_root
        return MNISTModes(DataConfig(**cfg))
    if kind == "folder":
        root = data_root if data_root is not None else describe["root"]
        return FolderModes(root, describe.get("calibration_fraction", 0.1),
                           describe.get("split_seed", 0))
    raise ValueError(f"mode source {kind!r} cannot be reopened from disk (valid: mnist, folder); "
                     f"pass the data again from Python")


__all__ = ["FolderModes", "MNISTModes", "ModeData", "ModeFolderError", "ModeSource", "Split",
           "TensorModes", "as_split", "open_source"]
