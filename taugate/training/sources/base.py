"""What a mode source is: the data types (:class:`Split`, :class:`Mode`, :class:`ModeData`) and
the abstract :class:`ModeSource` every source implements.

"Modes are data, not angles" (DESIGN.md): a mode is an input distribution with its own train /
calibration / test splits and free-form facts. A source knows its valid mode names without
loading any data (:meth:`ModeSource.check_names`), so a bad name fails before a dataset is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from taugate.bundle.names import check_mode_name
from taugate.bundle.schema import InputSpec


@dataclass(frozen=True)
class Mode:
    """An input mode by name; a rotation of MNIST has its ``angle`` (degrees, counter-clockwise),
    any other mode ``angle=None`` and its facts in ``ModeData.facts``."""

    name: str
    angle: float | None = None

    @property
    def facts(self) -> dict:
        """Free-form facts about the mode (a rotation: its source and angle)."""
        if self.angle is None:
            return {}
        return {"source": "mnist-rotation", "angle": self.angle}

    @classmethod
    def parse(cls, name: str) -> Mode:
        """``"rot45"`` -> Mode("rot45", 45.0); any angle, e.g. ``rot-30`` or ``rot22.5``."""
        from taugate.bundle.names import rotation_angle

        angle = rotation_angle(name)
        if angle is None:
            raise ValueError(
                f"mode {name!r}: expected 'rot<degrees>', e.g. 'rot0', 'rot45', 'rot-30', 'rot22.5'"
            )
        return cls(name=name, angle=angle)

    @classmethod
    def from_angle(cls, angle: float) -> Mode:
        return cls(name=f"rot{angle:g}", angle=float(angle))


@dataclass
class Split:
    """Inputs (float32 ``[N, ...]``) and class ids (int64 ``[N]``)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class ModeData:
    mode: Mode
    train: Split
    calibration: Split
    test: Split
    facts: dict | None = None  # free-form; default: the mode's own (a rotation: its angle)

    def __post_init__(self) -> None:
        if self.facts is None:
            self.facts = dict(self.mode.facts)

    @property
    def name(self) -> str:
        return self.mode.name


@dataclass(frozen=True)
class DataFacts:
    """What a model family fits itself to: per-sample shape, classes, scalar normalization."""

    shape: tuple[int, ...]
    classes: int
    mean: float
    std: float


class ModeSource(ABC):
    """Where modes come from. Subclasses set ``kind`` (the registry key of ``describe()``)."""

    kind: ClassVar[str] = ""
    labels: tuple[str, ...] | None = None  # class names, when the source knows them

    @abstractmethod
    def names(self) -> list[str]:
        """The default modes (what ``taugate train`` adapts to without ``--modes``)."""

    @abstractmethod
    def mode(self, name: str) -> ModeData:
        """The train / calibration / test splits of mode ``name``."""

    @abstractmethod
    def describe(self) -> dict:
        """A JSON object with ``kind`` that :func:`~taugate.training.sources.open_source`
        reopens (recorded in a run's run.json)."""

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec:
        """The model input every mode of this source shares."""

    def name_hint(self) -> str:
        """What a valid mode name of this source looks like (for error messages)."""
        return f"one of {', '.join(self.names())}"

    def check_names(self, names) -> list[str]:
        """``names`` as a list when every one is a mode of this source, else a ValueError that
        names each bad one and the valid choices. Loads no data."""
        names = list(names)
        for name in names:
            check_mode_name(name)
        valid = set(self.names())
        bad = [n for n in names if n not in valid]
        if bad:
            raise ValueError(f"mode{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}: "
                             f"not a mode of this source; expected {self.name_hint()}")
        return names

    def mixture(self, names) -> Split:
        """The training splits of several modes concatenated (the foundation's data)."""
        parts = [self.mode(n).train for n in names]
        return Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))

    def data_facts(self, names) -> DataFacts | None:
        """Shape, classes and normalization of the mixture of ``names`` (what a built-in family
        fits itself to); None when the families' defaults already fit (MNIST)."""
        mix = self.mixture(names)
        classes = max(2, int(max(int(self.mode(m).test.y.max()) for m in names) + 1),
                      int(mix.y.max()) + 1)
        return DataFacts(tuple(int(d) for d in mix.x.shape[1:]), classes, float(mix.x.mean()),
                         float(mix.x.std()) or 1.0)

    @classmethod
    def reopen(cls, described: dict, data_root: str | None = None) -> ModeSource:
        """The source ``describe()`` recorded (``data_root``: where its data lives now)."""
        raise ValueError(f"mode source {described.get('kind')!r} cannot be reopened from disk; "
                         f"pass the data again from Python")
