"""The built-in mode source: MNIST at any rotation ``rot<deg>`` (the paper's 0 deg vs 45 deg
setting, arXiv 2602.11726) or corruption (``noise<sigma>``, ``blur``, ``invert``;
sources/corruptions.py), with seeded train / calibration / test splits.

Images are transformed once, in memory, and flattened to float32 pixels in [0, 1]. MNIST is read
on the first :meth:`MNISTModes.mode` call: names are checked without it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from taugate.bundle.names import rotation_angle
from taugate.bundle.schema import InputSpec
from taugate.training.sources.base import Mode, ModeData, ModeSource, Split
from taugate.training.sources.corruptions import KINDS, Corruption

DATA_ENV = "TAUGATE_DATA"
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_INPUT = InputSpec.image(1, 28, 28)  # flat raw pixels in [0, 1], a 28x28 image layout
MNIST_LABELS = tuple(str(i) for i in range(10))
NAME_HINT = (f"an MNIST mode 'rot<degrees>' (e.g. rot0, rot45, rot-30) or a corruption "
             f"{', '.join(KINDS)} (e.g. noise0.3, blur, invert)")


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
    except Exception as exc:  # torchvision raises several kinds here
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


def parse_mode(name: str) -> Mode | Corruption:
    """An MNIST mode name as a rotation :class:`Mode` or a :class:`Corruption` (no data read)."""
    if rotation_angle(name) is not None:
        return Mode.parse(name)
    if isinstance(name, str) and not name.startswith("rot"):
        return Corruption.parse(name)  # its error names every valid form
    raise ValueError(f"mode {name!r}: expected {NAME_HINT}")


class MNISTModes(ModeSource):
    """Serves any number of rotated or corrupted MNIST modes with identical splits."""

    kind = "mnist"
    labels = MNIST_LABELS

    def __init__(self, config: DataConfig | None = None):
        self.config = config or DataConfig()
        self.root = Path(self.config.root).expanduser() if self.config.root else default_root()
        self._cache: dict[object, ModeData] = {}
        self._loaded = False

    @property
    def input_spec(self) -> InputSpec:
        return MNIST_INPUT

    def names(self) -> list[str]:
        """The default modes (the paper's); any ``rot<deg>`` or corruption name also works."""
        return ["rot0", "rot45"]

    def name_hint(self) -> str:
        return NAME_HINT

    def check_names(self, names) -> list[str]:
        names = list(names)
        bad = []
        for name in names:
            try:
                parse_mode(name)
            except ValueError as exc:
                bad.append((name, str(exc)))
        if len(bad) == 1:
            raise ValueError(bad[0][1])
        if bad:
            raise ValueError(f"modes {', '.join(repr(n) for n, _ in bad)}: not MNIST modes; "
                             f"expected {NAME_HINT}")
        return names

    def describe(self) -> dict:
        """How to open this source again (recorded in a run directory)."""
        return {"kind": self.kind, "data": asdict(self.config)}

    @classmethod
    def reopen(cls, described: dict, data_root: str | None = None) -> MNISTModes:
        cfg = dict(described.get("data") or {})
        if data_root is not None:
            cfg["root"] = data_root
        return cls(DataConfig(**cfg))

    def data_facts(self, names):
        return None  # the families' defaults are MNIST's (the paper's numbers)

    def mode(self, mode: Mode | str) -> ModeData:
        """The train / calibration / test splits of one mode (cached)."""
        parsed = parse_mode(mode.name) if isinstance(mode, Mode) and mode.angle is None else (
            mode if isinstance(mode, Mode) else parse_mode(mode))
        key = parsed.angle if isinstance(parsed, Mode) else parsed.name
        if key not in self._cache:
            self._load()
            seed = self.config.split_seed
            if isinstance(parsed, Mode):
                tr, te = rotate(self._train_images, parsed.angle), rotate(self._test_images,
                                                                          parsed.angle)
                self._cache[key] = self._mode_data(parsed, tr, te, None)
            else:
                tr = parsed.apply(self._train_images, seed)
                te = parsed.apply(self._test_images, seed + 1)
                self._cache[key] = self._mode_data(Mode(parsed.name), tr, te, parsed.facts)
        return self._cache[key]

    def _load(self) -> None:
        if self._loaded:
            return
        tr_x, tr_y = _load_mnist(self.root, True, self.config.download)
        te_x, te_y = _load_mnist(self.root, False, self.config.download)
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
        self._loaded = True

    def _mode_data(self, mode: Mode, tr: torch.Tensor, te: torch.Tensor, facts) -> ModeData:
        y = self._train_labels.to(torch.int64)
        return ModeData(
            mode=mode,
            train=Split(tr[self._train_idx], y[self._train_idx]),
            calibration=Split(tr[self._cal_idx], y[self._cal_idx]),
            test=Split(te, self._test_labels.to(torch.int64)),
            facts=facts,
        )
