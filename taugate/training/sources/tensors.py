"""Modes given from Python: tensors, ``(x, y)`` pairs or torch Datasets per split."""

from __future__ import annotations

import logging

import torch

from taugate.bundle.names import check_mode_name
from taugate.bundle.schema import InputSpec
from taugate.training.sources.base import Mode, ModeData, ModeSource, Split

log = logging.getLogger(__name__)


def as_split(obj, what: str = "split", converted: list | None = None) -> Split:
    """A Split from a Split, an ``(x, y)`` pair of tensors/arrays, or a torch ``Dataset`` of
    ``(x, y)`` items; x becomes float32 and y int64 (each conversion is appended to
    ``converted``, so the caller can say so once)."""
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
    if converted is not None and (x.dtype != torch.float32 or y.dtype != torch.int64):
        converted.append(f"{what}: x {str(x.dtype).replace('torch.', '')}, "
                         f"y {str(y.dtype).replace('torch.', '')}")
    x, y = x.to(torch.float32), y.to(torch.int64)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{what}: expected x [N, ...] and y [N], got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    return Split(x.contiguous(), y)


class TensorModes(ModeSource):
    """``{name: {"train": ..., "test": ..., "calibration": ...}}`` where each split is an
    ``(x, y)`` pair or a torch Dataset; optional ``facts`` per mode. Without ``calibration`` a
    seeded 10 % of train is held out. It cannot be reopened from disk (``describe()`` says
    ``python``)."""

    kind = "python"

    def __init__(self, modes: dict, facts: dict | None = None, split_seed: int = 0):
        self._modes: dict[str, ModeData] = {}
        converted: list[str] = []
        for name, splits in modes.items():
            check_mode_name(name)
            train = as_split(splits["train"], f"{name} train", converted)
            test = as_split(splits["test"], f"{name} test", converted)
            if splits.get("calibration") is not None:
                cal = as_split(splits["calibration"], f"{name} calibration", converted)
            else:
                n_cal = max(1, len(train) // 10)
                perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
                cal = Split(train.x[perm[:n_cal]], train.y[perm[:n_cal]])
                train = Split(train.x[perm[n_cal:]], train.y[perm[n_cal:]])
            self._modes[name] = ModeData(Mode(name), train, cal, test,
                                         facts={"source": "python", **(facts or {}).get(name, {})})
        if not self._modes:
            raise ValueError("modes: expected at least one mode, got none")
        if converted:
            log.warning("%s converted to float32 and int64 (the model's types)%s", converted[0],
                        f"; so were {len(converted) - 1} other split(s)" if len(converted) > 1
                        else "")
        first = next(iter(self._modes.values()))
        self._input_spec = InputSpec.plain(first.train.x.shape[1:])

    @property
    def input_spec(self) -> InputSpec:
        return self._input_spec

    def names(self) -> list[str]:
        return list(self._modes)

    def mode(self, name: str) -> ModeData:
        if name not in self._modes:
            raise ValueError(f"mode {name!r}: not given; modes: {', '.join(self._modes)}")
        return self._modes[name]

    def describe(self) -> dict:
        return {"kind": self.kind}
