"""The Python API: ``taugate.train`` and ``taugate.export``, the whole walk-through without
taugate's internals (docs/python-api.md).

``train`` takes a frozen model (a ``torch.nn.Module``, ``"FILE.py:FACTORY"``, or None for a
built-in family pretrained here), modes (a folder ``MODES/<mode>/{train,test[,calibration]}.npz``,
a mapping of mode name -> arrays, a :class:`~taugate.training.sources.ModeSource`, or MNIST
rotation names such as ``["rot0", "rot45"]``) and options, and writes a run directory;
``export`` turns a run into a bundle with the one export pipeline. Both are what ``taugate
train`` and ``taugate export`` do, with the same defaults and the same checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

SPLITS = ("train", "test", "calibration")


def _write_modes(modes: Mapping, root: Path) -> Path:
    """A mapping of mode name -> {"train": (x, y), "test": (x, y)[, "calibration": (x, y)]
    [, "facts": {...}]} written as a modes folder (what FolderModes reads), so the run can be
    reopened from disk."""
    import numpy as np

    from taugate.bundle.atomic import write_bytes, write_text
    from taugate.bundle.names import check_mode_name

    if not modes:
        raise ValueError("modes: expected at least one mode, got an empty mapping")
    converted: list[str] = []
    for name, splits in modes.items():
        check_mode_name(name)
        if not isinstance(splits, Mapping) or not {"train", "test"} <= set(splits):
            got = sorted(splits) if isinstance(splits, Mapping) else type(splits).__name__
            raise ValueError(f"modes[{name!r}]: expected a mapping with 'train' and 'test' (and "
                             f"optionally 'calibration', 'facts'), each split an (x, y) pair; "
                             f"got {got}")
        unknown = sorted(set(splits) - {*SPLITS, "facts"})
        if unknown:
            raise ValueError(f"modes[{name!r}]: unknown keys {unknown}; valid: "
                             f"{', '.join(SPLITS)}, facts")
        for split in SPLITS:
            if split not in splits:
                continue
            pair = splits[split]
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"modes[{name!r}][{split!r}]: expected an (x, y) pair of arrays")
            x, y = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for v in pair)
            if x.dtype != np.float32 or y.dtype != np.int64:
                converted.append(f"modes[{name!r}][{split!r}]: x {x.dtype}, y {y.dtype}")
            buf = _npz_bytes(x=x.astype(np.float32), y=y.astype(np.int64))
            write_bytes(root / name / f"{split}.npz", buf)
        if "facts" in splits:
            write_text(root / name / "facts.json", json.dumps(splits["facts"]))
    if converted:
        import logging

        logging.getLogger(__name__).warning(
            "%s converted to float32 and int64 (the model's types)%s", converted[0],
            f"; so were {len(converted) - 1} other split(s)" if len(converted) > 1 else "")
    return root


def _npz_bytes(**arrays) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _source(modes, out: Path):
    """(source or None, modes_dir or None, mode names or None) for ``train``'s ``modes``."""
    from taugate.training.sources import FolderModes, MNISTModes, ModeSource

    if isinstance(modes, ModeSource):
        return modes, getattr(modes, "root", None) if isinstance(modes, FolderModes) else None, \
            None
    if isinstance(modes, (str, os.PathLike)):
        if not Path(modes).is_dir():
            raise FileNotFoundError(f"modes: {modes} is not a folder (expected "
                                    f"MODES/<mode>/train.npz, test.npz [, calibration.npz])")
        return None, str(modes), None
    if isinstance(modes, Mapping):
        return None, str(_write_modes(modes, out / "modes")), None
    if isinstance(modes, Sequence) and modes and all(isinstance(m, str) for m in modes):
        return MNISTModes(), None, tuple(modes)
    raise TypeError(f"modes: expected a folder, a mapping of mode name -> splits, a ModeSource "
                    f"or a list of MNIST mode names (e.g. ['rot0', 'rot45']); got "
                    f"{type(modes).__name__}")


def train(modes, out: str | os.PathLike = "run", *, model=None, weights=None,
          weights_in_factory: bool = False, targets=None, hf: str | os.PathLike | None = None,
          mode_names=None, mixture=None,
          family: str = "mlp", hidden=(128, 128), method: str = "taugate", sparse: bool = False,
          method_options: dict | None = None, epochs: int = 2, adapt_epochs: int = 1,
          adapt_min_steps: int | None = None, batch_size: int = 256, lr: float | None = None, adapt_lr: float = 0.05, seed: int = 0,
          device: str = "auto", progress: bool = False):
    """Train one adapter per mode on a frozen model and write the run directory ``out``.

    ``model``: a ``torch.nn.Module`` (taken as trained and frozen here; reopening the run later
    needs it again), ``"FILE.py:FACTORY"`` (``weights``: its safetensors file, required unless
    ``weights_in_factory=True`` says the factory loads trained weights), or None to pretrain a
    built-in ``family`` (``"mlp"`` with ``hidden`` widths, or ``"vit"``) on the modes' mixture.
    ``hf``: instead, a Hugging Face ``save_pretrained`` folder (docs/huggingface.md).
    ``targets``: module-path patterns of the Linear layers to gate (default: every
    Linear -> activation -> Linear site). ``mode_names``: which of the source's modes to adapt
    (default all; MNIST: the names given); ``mixture``: the modes a built-in family is
    pretrained on (default: the adapted modes). ``sparse``: the unit-sparsity recipe, which lets
    export remove whole units; ``method_options`` adds to it, e.g. ``{"target_mac_ratio": 2,
    "correction_rank": 16, "correction_pool": 2, "correction_scale": 0.2}`` (a MAC budget, and
    a per-mode rank-16 correction of the first layer that reads the image pooled 2 x 2, merged
    into the mode's weights: docs/speedup.md; fields of TauGateConfig). Each mode trains ``adapt_epochs``, or more where that would take
    fewer than ``adapt_min_steps`` optimizer steps (default 200: small modes get more epochs);
    a mode that took few steps or gained nothing over the frozen model raises a
    ``UserWarning`` naming the option to change. Returns a :class:`~taugate.training.runs.TrainedRun` (``.path``,
    ``.adapters``), which :func:`export` takes.
    """
    from taugate.training.backbone import FoundationConfig
    from taugate.training.budget import ADAPT_MIN_STEPS
    from taugate.training.families import get_family
    from taugate.training.families.mlp import BackboneConfig
    from taugate.training.loop import TrainConfig
    from taugate.training.pipeline import AdaptConfig
    from taugate.training.recipes import sparse_recipe
    from taugate.training.runs import RunConfig, train_run

    if isinstance(model, str) and not weights and not weights_in_factory:
        raise ValueError(f"model={model!r}: no weights= given, so the model would keep the "
                         f"factory's initial weights; pass weights='W.safetensors', or "
                         f"weights_in_factory=True if the factory loads trained weights itself")
    out = Path(out)
    source, modes_dir, names = _source(modes, out)
    names = tuple(mode_names) if mode_names is not None else names
    fam = get_family(family)
    module = model if model is not None and not isinstance(model, str) else None
    method_config = {**(sparse_recipe(hidden) if sparse else {}), **(method_options or {})}
    config = RunConfig(
        out=str(out),
        modes=names,
        foundation=FoundationConfig(
            backbone=BackboneConfig(hidden=tuple(hidden)),
            modes=tuple(mixture or names or ("rot0", "rot45")), epochs=epochs,
            batch_size=batch_size,
            lr=lr if lr is not None else fam.lr, seed=seed, family=fam.name,
            optimizer=fam.optimizer),
        adapt=AdaptConfig(method, method_config,
                          TrainConfig(adapt_epochs, batch_size, adapt_lr, seed=seed,
                                      min_steps=ADAPT_MIN_STEPS if adapt_min_steps is None
                                      else adapt_min_steps)),
        device=device, progress=progress, modes_dir=modes_dir,
        model=model if isinstance(model, str) else None, module=module, weights=weights,
        weights_in_factory=weights_in_factory,
        targets=targets, mixture_from_modes=mixture is None and names is None,
        hf=str(hf) if hf is not None else None)
    if source is None and modes_dir:
        from taugate.training.runs import open_source

        source = open_source(config)
    trained = train_run(config, source)
    _warn(trained)
    return trained


def _warn(trained) -> None:
    """One ``UserWarning`` per note on the adapted modes (too few steps, no gain)."""
    import warnings

    from taugate.training.budget import PYTHON_FLAGS, adaptation_notes

    for mode, outcome in trained.outcomes.items():
        for note in adaptation_notes(mode, outcome, PYTHON_FLAGS):
            warnings.warn(note, UserWarning, stacklevel=3)


def export(run, out: str | os.PathLike | None = None, *, into: str | os.PathLike | None = None,
           model=None, layout: str | None = None, precision=("fp32",),
           quantization: str | None = None, prune_below: float = 0.0, round_to: int = 1,
           max_accuracy_drop: float = 0.005, allow_worse: bool = False, modes=None,
           overwrite: bool = False, data_root: str | None = None) -> Path:
    """Export a run (what :func:`train` returned, or its directory) to a bundle: ``out`` (a new
    bundle) or ``into`` (add the modes to an existing bundle, in its layout). Returns the
    bundle's path.

    ``layout``: ``"shared"`` (default: the backbone stored once) or ``"standalone"``;
    ``precision``: ``("fp32",)`` or ``("fp32", "int8")``; the three guards (a mode worse than
    the dense frozen model, a pruning or an int8 variant that loses accuracy) share
    ``max_accuracy_drop``; ``allow_worse`` exports a worse mode with a warning. ``model``: the
    run's module, when it was given from Python to :func:`train` in another process.
    """
    from taugate.exporting.pipeline import (
        DEFAULT_LAYOUT,
        ExportConfig,
        PrecisionConfig,
        export_run,
    )
    from taugate.exporting.prune import PruneConfig
    from taugate.exporting.quantize import DEFAULT_SCHEME

    if (out is None) == (into is None):
        raise ValueError("export: give exactly one of out= (a new bundle) or into= (an "
                         "existing bundle)")
    if isinstance(precision, str):
        precision = tuple(p.strip() for p in precision.split(","))
    run_dir = Path(getattr(run, "path", run))
    module = model if model is not None else getattr(run, "module", None)
    config = ExportConfig(layout=layout or DEFAULT_LAYOUT,
                          prune=PruneConfig(prune_below, round_to, max_accuracy_drop),
                          allow_worse=allow_worse,
                          precision=PrecisionConfig(tuple(precision),
                                                    quantization or DEFAULT_SCHEME),
                          overwrite=overwrite, modes=modes)
    if into is not None:
        from taugate.exporting.into import export_into
        from taugate.runtime import ModeRuntime

        export_into(run_dir, into, config, data_root, layout_given=layout is not None,
                    verify=lambda p: ModeRuntime.open(p, providers="cpu").close(),
                    foundation=module)
        return Path(into)
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    path, _ = export_run(run_dir, out, config, data_root, module)
    return Path(path)
