"""Modes as datasets: MNIST at any rotation angle or corruption, with seeded train /
calibration / test splits (the built-in mode source; folders and others: training/modes/).

A *mode* is an input distribution: a rotation of MNIST by a fixed angle (the paper's 0 deg vs
45 deg setting, arXiv 2602.11726, names ``rot<deg>``) or a corruption (``noise<sigma>``,
``blur``, ``invert``; training/modes/corruptions.py). Images are transformed once, in memory,
and flattened to float32 pixels in [0, 1]. A mode carries free-form ``facts`` (a rotation
records its angle there).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

DATA_ENV = "TAUGATE_DATA"
_MODE_RE = re.compile(r"^rot(-?\d+(?:\.\d+)?)$")
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
        m = _MODE_RE.match(name)
        if not m:
            raise ValueError(
                f"mode {name!r}: expected 'rot<degrees>', e.g. 'rot0', 'rot45', 'rot-30', 'rot22.5'"
            )
        return cls(name=name, angle=float(m.group(1)))

    @classmethod
    def from_angle(cls, angle: float) -> Mode:
        return cls(name=f"rot{angle:g}", angle=float(angle))


@dataclass
class DataConfig:
    root: str | None = None  # MNIST root (torchvision layout); None -> $TAUGATE_DATA or cache
    calibration_size: int = 5000  # taken from the training set, seeded, never trained on
    split_seed: int = 0  # the train/calibration split
    limit_train: int | None = None  # use only the first N training examples (tests, smoke runs)
    limit_test: int | None = None  # use only the first N test examples
    download: bool = True  # let torchvision download when the files are missing

    def __post_init__(self) -> None:
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size: expected >= 1, got {self.calibration_size}")
        for name in ("limit_train", "limit_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}: expected None or >= 1, got {v}")


@dataclass
class Split:
    """Flattened pixels in [0, 1] (float32 [N, 784]) and labels (int64 [N])."""

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


def default_root() -> Path:
    """``$TAUGATE_DATA``, else a per-user cache directory."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "taugate" / "datasets"


def _load_mnist(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    have = all((raw / f).exists() or (raw / (f + ".gz")).exists() for f in _MNIST_FILES)
    try:
        ds = MNIST(str(root), train=train, download=download and not have)
    except Exception as exc:  # noqa: BLE001 - torchvision raises several kinds here
        raise FileNotFoundError(
            f"MNIST could not be read or downloaded under {raw} ({type(exc).__name__}: {exc}). "
            f"Expected the four files {', '.join(_MNIST_FILES)} there (torchvision layout). "
            f"Point taugate at a local copy with --data-root DIR or the environment variable "
            f"{DATA_ENV}=DIR, where DIR/MNIST/raw/ holds them."
        ) from exc
    return ds.data, ds.targets


def rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate uint8 images [N, 28, 28] by ``angle`` degrees -> float32 [N, 784] in [0, 1]."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import rotate as tv_rotate

    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    if angle % 360 != 0:
        x = tv_rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    return x.reshape(x.shape[0], -1).clamp_(0.0, 1.0).contiguous()


class MNISTModes:
    """Loads MNIST once and serves any number of rotated modes with identical splits."""

    def __init__(self, config: DataConfig | None = None):
        self.config = config or DataConfig()
        root = Path(self.config.root).expanduser() if self.config.root else default_root()
        self.root = root
        tr_x, tr_y = _load_mnist(root, True, self.config.download)
        te_x, te_y = _load_mnist(root, False, self.config.download)
        if self.config.limit_train:
            tr_x, tr_y = tr_x[: self.config.limit_train], tr_y[: self.config.limit_train]
        if self.config.limit_test:
            te_x, te_y = te_x[: self.config.limit_test], te_y[: self.config.limit_test]
        n_cal = self.config.calibration_size
        if n_cal >= len(tr_y):
            raise ValueError(
                f"calibration_size: {n_cal} leaves no training data out of {len(tr_y)} examples"
            )
        g = torch.Generator().manual_seed(self.config.split_seed)
        perm = torch.randperm(len(tr_y), generator=g)
        self._cal_idx, self._train_idx = perm[:n_cal], perm[n_cal:]
        self._train_images, self._train_labels = tr_x, tr_y
        self._test_images, self._test_labels = te_x, te_y
        self._cache: dict[float, ModeData] = {}

    def mode(self, mode: Mode | str) -> ModeData:
        """The train / calibration / test splits of one mode (cached): ``rot<deg>`` or a
        corruption (``noise<sigma>``, ``blur``, ``invert``; modes/corruptions.py)."""
        from taugate.training.modes.corruptions import Corruption

        if isinstance(mode, Mode) and mode.angle is None:
            mode = mode.name
        if isinstance(mode, str) and not mode.startswith("rot"):
            corruption = Corruption.parse(mode)
            if corruption.name not in self._cache:
                seed = self.config.split_seed
                tr = corruption.apply(self._train_images, seed)
                te = corruption.apply(self._test_images, seed + 1)
                self._cache[corruption.name] = self._mode_data(Mode(corruption.name), tr, te,
                                                               corruption.facts)
            return self._cache[corruption.name]
        mode = Mode.parse(mode) if isinstance(mode, str) else mode
        if mode.angle not in self._cache:
            tr = rotate(self._train_images, mode.angle)
            te = rotate(self._test_images, mode.angle)
            self._cache[mode.angle] = self._mode_data(mode, tr, te, None)
        return self._cache[mode.angle]

    def _mode_data(self, mode: Mode, tr: torch.Tensor, te: torch.Tensor, facts) -> ModeData:
        y = self._train_labels.to(torch.int64)
        return ModeData(
            mode=mode,
            train=Split(tr[self._train_idx], y[self._train_idx]),
            calibration=Split(tr[self._cal_idx], y[self._cal_idx]),
            test=Split(te, self._test_labels.to(torch.int64)),
            facts=facts,
        )

    #: the bundle v2 input spec of every MNIST mode (flat raw pixels, an image layout)
    input_spec: ClassVar[dict] = {"name": "pixels", "dtype": "float32", "shape": ["batch", 784],
                  "range": [0.0, 1.0],
                  "layout": {"kind": "image", "channels": 1, "height": 28, "width": 28}}
    labels: ClassVar[list] = [str(i) for i in range(10)]

    def names(self) -> list[str]:
        """The default modes (the paper's); any ``rot<deg>`` or corruption name also works."""
        return ["rot0", "rot45"]

    def describe(self) -> dict:
        """How to open this source again (recorded in a run directory)."""
        from dataclasses import asdict

        return {"kind": "mnist", "data": asdict(self.config)}

    def mixture(self, modes: list[Mode | str]) -> Split:
        """The training splits of several modes concatenated (the foundation's data)."""
        parts = [self.mode(m).train for m in modes]
        return Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
