"""Modes from the user's own data: ``MODES/<mode>/{train,test[,calibration]}.npz``.

Each .npz holds ``x`` (float32 ``[N, ...]``, any per-sample shape, the same in every split and
mode) and ``y`` (int64 ``[N]``, class ids from 0). Files are read with ``allow_pickle=False``:
an object array (a pickle) inside an .npz is refused. Without ``calibration.npz`` a seeded
part of train is held out for calibration (never trained on). An optional
``<mode>/facts.json`` (a JSON object) becomes the mode's facts. Every problem is an error that
names the file and the fix.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from taugate.bundle.names import mode_name_error
from taugate.bundle.schema import InputSpec
from taugate.training.sources.base import Mode, ModeData, ModeSource, Split

SPLITS = ("train", "test", "calibration")
_SAVE_HINT = "write it with np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))"


class FolderModes(ModeSource):
    """A mode source over a directory of mode folders (see the module docstring)."""

    kind = "folder"

    def __init__(self, root: str | Path, calibration_fraction: float = 0.1, split_seed: int = 0):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--modes-dir: {self.root} is not a directory (expected "
                                    f"MODES/<mode>/train.npz and test.npz)")
        if not 0 < calibration_fraction < 1:
            raise ValueError(f"calibration_fraction: expected in (0, 1), got {calibration_fraction}")
        self.calibration_fraction = calibration_fraction
        self.split_seed = split_seed
        self._cache: dict[str, ModeData] = {}
        self._sample_shape: tuple[int, ...] | None = None

    def names(self) -> list[str]:
        """Every mode folder (a sub-directory holding train.npz), sorted."""
        found = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / "train.npz").exists())
        if not found:
            raise FileNotFoundError(f"--modes-dir: {self.root} holds no mode folder (expected "
                                    f"{self.root}/<mode>/train.npz and test.npz)")
        return found

    def mode(self, name: str) -> ModeData:
        """The splits of mode ``name`` (validated and cached)."""
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def name_hint(self) -> str:
        return f"a mode folder of {self.root.name}/: {', '.join(self.names())}"

    def describe(self) -> dict:
        return {"kind": self.kind, "root": str(self.root.resolve()),
                "calibration_fraction": self.calibration_fraction, "split_seed": self.split_seed}

    @classmethod
    def reopen(cls, described: dict, data_root: str | None = None) -> FolderModes:
        root = data_root if data_root is not None else described["root"]
        return cls(root, described.get("calibration_fraction", 0.1),
                   described.get("split_seed", 0))

    @property
    def input_spec(self) -> InputSpec:
        shape = self._sample_shape
        if shape is None:
            shape = tuple(self.mode(self.names()[0]).train.x.shape[1:])
        return InputSpec.plain(shape)

    # -- loading ---------------------------------------------------------------------------
    def _load(self, name: str) -> ModeData:
        error = mode_name_error(name)
        if error:
            raise ValueError(f"--modes-dir: folder {self.root / str(name)}: {error}; rename the "
                             f"folder")
        folder = self.root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"--modes-dir: no mode folder {folder} (found: "
                                    f"{', '.join(self.names())})")
        train = self._split(folder / "train.npz")
        test = self._split(folder / "test.npz")
        cal_path = folder / "calibration.npz"
        if cal_path.exists():
            calibration = self._split(cal_path)
        else:
            train, calibration = self._hold_out(train, folder / "train.npz")
        facts = {"source": "folder", **self._facts(folder / "facts.json")}
        return ModeData(Mode(name), train, calibration, test, facts=facts)

    def _hold_out(self, train: Split, path: Path) -> tuple[Split, Split]:
        n = len(train)
        n_cal = max(1, round(n * self.calibration_fraction))
        if n - n_cal < 1:
            raise ValueError(f"{path}: {n} example(s) leave nothing to train on after holding out "
                             f"{n_cal} for calibration; add examples or a calibration.npz")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        cal, tr = perm[:n_cal], perm[n_cal:]
        return Split(train.x[tr], train.y[tr]), Split(train.x[cal], train.y[cal])

    @staticmethod
    def _facts(path: Path) -> dict:
        if not path.exists():
            return {}
        try:
            facts = json.loads(path.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); write a JSON object or remove "
                             f"the file") from None
        if not isinstance(facts, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(facts).__name__}")  # noqa: TRY004 - a user-facing error
        return facts

    def _split(self, path: Path) -> Split:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; every mode folder needs train.npz and "
                                    f"test.npz ({_SAVE_HINT})")
        if not zipfile.is_zipfile(path):  # np.load would try it as a pickle or a raw .npy
            raise ValueError(f"{path}: not a readable .npz file (not a zip archive); {_SAVE_HINT}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                missing = [k for k in ("x", "y") if k not in keys]
                if missing:
                    raise ValueError(f"{path}: no array {' or '.join(map(repr, missing))} (found "
                                     f"{sorted(keys) or 'none'}); {_SAVE_HINT}")
                x, y = npz["x"], npz["y"]
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise ValueError(f"{path}: holds a pickled object array, which taugate never "
                                 f"loads; store plain numeric arrays: {_SAVE_HINT}") from None
            raise
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npz file ({exc}); {_SAVE_HINT}") from None
        self._check(path, x, y)
        return Split(torch.from_numpy(np.ascontiguousarray(x)),
                     torch.from_numpy(np.ascontiguousarray(y)))

    def _check(self, path: Path, x: np.ndarray, y: np.ndarray) -> None:
        if x.dtype != np.float32:
            raise ValueError(f"{path}: x has dtype {x.dtype}, expected float32; "
                             f"convert with x.astype(np.float32)")
        if y.dtype != np.int64:
            raise ValueError(f"{path}: y has dtype {y.dtype}, expected int64 class ids; "
                             f"convert with y.astype(np.int64)")
        if x.ndim < 2 or y.ndim != 1:
            raise ValueError(f"{path}: expected x of shape [N, ...] (ndim >= 2) and y of shape "
                             f"[N], got x {x.shape} and y {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}; they must have "
                             f"one label per example")
        if len(y) == 0:
            raise ValueError(f"{path}: no examples; add at least one")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{path}: x holds NaN or infinite values; clean or drop those rows")
        if np.any(y < 0):
            raise ValueError(f"{path}: y holds negative class ids; expected 0..C-1")
        shape = tuple(x.shape[1:])
        if self._sample_shape is None:
            self._sample_shape = shape
        elif shape != self._sample_shape:
            raise ValueError(f"{path}: per-sample shape {list(shape)} differs from "
                             f"{list(self._sample_shape)} in the other files; every mode and "
                             f"split must share one input shape")
