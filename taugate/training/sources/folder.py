"""Modes from the user's own data: ``MODES/<mode>/{train,test[,calibration]}.npz``.

Each .npz holds ``x`` (float32 ``[N, ...]``, any per-sample shape, the same in every split and
mode) and ``y`` (int64 ``[N]``, class ids 0..MAX_CLASSES-1). Other float ``x`` (float64, as
numpy makes by default; float16) and other integer ``y`` are converted, with one warning per
source. Without ``calibration.npz`` a
seeded part of train is held out for calibration (never trained on). For a text model
(``--hf``) a file holds ``input_ids`` (integers ``[N, L]``) and optionally ``attention_mask``
(0/1 ``[N, L]``, default all ones) instead of ``x``: they become int64 ``x`` ``[N, 2, L]``. An optional
``<mode>/facts.json`` (a JSON object) becomes the mode's facts; it must pass the rules the
runtime applies to ``manifest.json`` (finite numbers, no duplicate keys, bounded nesting), as
the export copies it there.

Every problem is an error that names the file and the fix: a :class:`ModeFolderError` (a
``ValueError``) for a file that is there but unusable, ``FileNotFoundError`` for a missing one.
Files are read as :mod:`taugate.training.sources.reading` describes: regular files only (a symlink
is followed to wherever it points, but what it points to must be a regular file, never a FIFO
or a device), each array's header checked against the zip directory's sizes before anything is
allocated, and never a pickle (an object array inside an .npz is refused).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from taugate.bundle.names import mode_name_error
from taugate.bundle.schema import InputSpec
from taugate.training.sources.base import Mode, ModeData, ModeSource, Split
from taugate.training.sources.reading import ModeFolderError, NpzReader, read_facts

SPLITS = ("train", "test", "calibration")
#: Class ids are 0..MAX_CLASSES-1: the model gets one output per class up to the largest id.
MAX_CLASSES = 1 << 16
_TOKEN_HINT = ("write it with np.savez(path, input_ids=ids.astype(np.int64), "
               "attention_mask=mask.astype(np.int64), y=y.astype(np.int64))")
_SAVE_HINT = "write it with np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))"

log = logging.getLogger(__name__)


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
        self._warned_conversion = False

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
        if self.mode(self.names()[0]).train.x.dtype == torch.int64:
            return InputSpec.tokens(shape[-1])  # the model's vocab is added by the run
        return InputSpec.plain(shape)

    # -- loading ---------------------------------------------------------------------------
    def _load(self, name: str) -> ModeData:
        error = mode_name_error(name)
        if error:
            raise ModeFolderError(f"--modes-dir: folder {self.root / str(name)}: {error}; rename "
                                  f"the folder")
        folder = self.root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"--modes-dir: no mode folder {folder} (found: "
                                    f"{', '.join(self.names())})")
        train = self._split(folder / "train.npz")
        test = self._split(folder / "test.npz")
        cal_path = folder / "calibration.npz"
        if os.path.lexists(cal_path):
            calibration = self._split(cal_path)
        else:
            train, calibration = self._hold_out(train, folder / "train.npz")
        facts = {"source": "folder", **self._facts(folder / "facts.json")}
        return ModeData(Mode(name), train, calibration, test, facts=facts)

    def _hold_out(self, train: Split, path: Path) -> tuple[Split, Split]:
        n = len(train)
        n_cal = max(1, round(n * self.calibration_fraction))
        if n - n_cal < 1:
            raise ModeFolderError(f"{path}: {n} example(s) leave nothing to train on after "
                                  f"holding out {n_cal} for calibration; add examples or a "
                                  f"calibration.npz")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        cal, tr = perm[:n_cal], perm[n_cal:]
        return Split(train.x[tr], train.y[tr]), Split(train.x[cal], train.y[cal])

    @staticmethod
    def _facts(path: Path) -> dict:
        return read_facts(path) if os.path.lexists(path) else {}

    def _split(self, path: Path) -> Split:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: missing; every mode folder needs train.npz and "
                                    f"test.npz ({_SAVE_HINT})")
        with NpzReader(path, _SAVE_HINT) as npz:
            if "input_ids" in npz.members and "x" not in npz.members:
                return self._token_split(path, npz)
            missing = [k for k in ("x", "y") if k not in npz.members]
            if missing:
                raise ModeFolderError(f"{path}: no array {' or '.join(map(repr, missing))} "
                                      f"(found {sorted(npz.members) or 'none'}); {_SAVE_HINT}")
            # dtypes and shapes from the headers: nothing is allocated for a file refused here
            self._check_headers(path, *npz.header("x"), *npz.header("y"))
            x, y = npz.array("x"), npz.array("y")
        x, y = self._convert(path, x, y)
        self._check(path, x, y)
        return Split(torch.from_numpy(np.ascontiguousarray(x)),
                     torch.from_numpy(np.ascontiguousarray(y)))

    def _token_split(self, path: Path, npz: NpzReader) -> Split:
        """``input_ids`` [+ ``attention_mask``] and ``y`` as int64 ``x`` [N, 2, L]."""
        if "y" not in npz.members:
            raise ModeFolderError(f"{path}: no array 'y' (found {sorted(npz.members)}); "
                                  f"{_TOKEN_HINT}")
        ids_shape, ids_dtype = npz.header("input_ids")
        y_shape, y_dtype = npz.header("y")
        has_mask = "attention_mask" in npz.members
        mask_shape, mask_dtype = npz.header("attention_mask") if has_mask else (ids_shape, None)
        if ids_dtype.kind not in "iu" or (has_mask and mask_dtype.kind not in "iub"):
            raise ModeFolderError(f"{path}: input_ids and attention_mask must be integers, got "
                                  f"{ids_dtype} and {mask_dtype}; {_TOKEN_HINT}")
        if len(ids_shape) != 2 or mask_shape != ids_shape:
            raise ModeFolderError(f"{path}: input_ids and attention_mask must both be [N, L], "
                                  f"got {ids_shape} and {mask_shape}; {_TOKEN_HINT}")
        self._check_headers(path, ids_shape, np.dtype(np.float32), y_shape, y_dtype)
        ids = npz.array("input_ids").astype(np.int64)
        mask = npz.array("attention_mask").astype(np.int64) if has_mask else np.ones_like(ids)
        y = npz.array("y").astype(np.int64)
        if ids.min() < 0 or mask.min() < 0 or mask.max() > 1:
            raise ModeFolderError(f"{path}: token ids must be >= 0 and the mask 0 or 1 (got ids "
                                  f"min {ids.min()}, mask in [{mask.min()}, {mask.max()}])")
        x = np.stack([ids, mask], axis=1)
        self._check(path, x, y)
        return Split(torch.from_numpy(x), torch.from_numpy(y))

    def _convert(self, path: Path, x: np.ndarray, y: np.ndarray):
        """float16/float64 ``x`` to float32 and other integer ``y`` to int64, saying so once."""
        if x.dtype == np.float32 and y.dtype == np.int64:
            return x, y
        if not self._warned_conversion:
            self._warned_conversion = True
            log.warning("%s/%s: x %s and y %s converted to float32 and int64 (the model's "
                        "types; values beyond float32's range fail the finite check); further "
                        "files are converted without a word", path.parent.name, path.name,
                        x.dtype, y.dtype)
        with np.errstate(over="ignore"):
            return x.astype(np.float32), y.astype(np.int64)

    def _check_headers(self, path: Path, x_shape, x_dtype, y_shape, y_dtype) -> None:
        if x_dtype.kind != "f":
            raise ModeFolderError(f"{path}: x has dtype {x_dtype}, expected float32 (float16 "
                                  f"and float64 are converted); convert with "
                                  f"x.astype(np.float32)")
        if y_dtype.kind not in "iu":
            raise ModeFolderError(f"{path}: y has dtype {y_dtype}, expected int64 class ids "
                                  f"(other integer types are converted); convert with "
                                  f"y.astype(np.int64)")
        if len(x_shape) < 2 or len(y_shape) != 1:
            raise ModeFolderError(f"{path}: expected x of shape [N, ...] (ndim >= 2) and y of "
                                  f"shape [N], got x {x_shape} and y {y_shape}")
        if x_shape[0] != y_shape[0]:
            raise ModeFolderError(f"{path}: x has {x_shape[0]} rows but y has {y_shape[0]}; "
                                  f"they must have one label per example")
        if y_shape[0] == 0:
            raise ModeFolderError(f"{path}: no examples; add at least one")

    def _check(self, path: Path, x: np.ndarray, y: np.ndarray) -> None:
        if not np.all(np.isfinite(x)):
            raise ModeFolderError(f"{path}: x holds NaN or infinite values; clean or drop those "
                                  f"rows")
        if np.any(y < 0):
            raise ModeFolderError(f"{path}: y holds negative class ids; expected 0..C-1")
        if int(y.max()) >= MAX_CLASSES:
            raise ModeFolderError(f"{path}: y holds class id {int(y.max())}; class ids must be "
                                  f"0..{MAX_CLASSES - 1} (at most {MAX_CLASSES} classes: the "
                                  f"model has one output per class)")
        shape = tuple(x.shape[1:])
        if self._sample_shape is None:
            self._sample_shape = shape
        elif shape != self._sample_shape:
            raise ModeFolderError(f"{path}: per-sample shape {list(shape)} differs from "
                                  f"{list(self._sample_shape)} in the other files; every mode "
                                  f"and split must share one input shape")
