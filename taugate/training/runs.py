"""A training run on disk: ``RUN/foundation.{safetensors,json}`` + ``RUN/adapters/<mode>.*``.

``train_run`` writes one (what ``taugate train`` does), ``export_run`` turns one into a bundle
(what ``taugate export`` does); ``taugate demo`` does both and then serves the bundle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from taugate.export.prune import PruneConfig
from taugate.training.adapters import load_adapter, load_foundation, save_adapter, save_foundation
from taugate.training.backbone import FoundationConfig
from taugate.training.data import DataConfig, MNISTModes, Mode
from taugate.training.devices import resolve_device
from taugate.training.pipeline import (
    AdaptConfig,
    ModeReport,
    adapt,
    export_bundle,
    harden_mode,
    pretrain_foundation,
)

log = logging.getLogger(__name__)

FOUNDATION_STEM = "foundation"
ADAPTER_DIR = "adapters"


@dataclass
class RunConfig:
    out: str  # the run directory
    modes: tuple[str, ...] = ("rot0", "rot45")  # one adapter per mode
    foundation: FoundationConfig = field(default_factory=FoundationConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    foundation_path: str | None = None  # reuse this foundation instead of training one
    foundation_only: bool = False  # stop after the foundation
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.modes = tuple(self.modes)
        for m in self.modes:
            Mode.parse(m)  # fails early with the accepted form


@dataclass
class TrainedRun:
    path: Path
    foundation_sha: str
    adapters: dict[str, Path]  # mode -> adapter path


def train_run(config: RunConfig, data: MNISTModes | None = None) -> TrainedRun:
    """Pretrain (or load) the foundation, then train one adapter per mode; write them all."""
    out = Path(config.out)
    device = resolve_device(config.device)
    data = data or MNISTModes(config.data)
    if config.foundation_path:
        foundation, meta = load_foundation(config.foundation_path)
        log.info("loaded foundation %s (sha256 %s)", config.foundation_path, meta["sha256"][:12])
    else:
        foundation = pretrain_foundation(data, config.foundation, device, config.progress)
    sha = save_foundation(foundation, out / FOUNDATION_STEM,
                          extra={"train_config": _plain(config.foundation)})
    adapters: dict[str, Path] = {}
    if not config.foundation_only:
        for name in config.modes:
            mode = Mode.parse(name)
            method, model = adapt(foundation, data.mode(mode), config.adapt, device, config.progress)
            adapters[name] = save_adapter(
                out / ADAPTER_DIR / name, method, model, sha,
                mode={"name": mode.name, "angle": mode.angle},
                extra={"train_config": _plain(config.adapt.train)},
            )
    return TrainedRun(out, sha, adapters)


def _plain(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def export_run(
    run: str | Path,
    bundle: str | Path,
    data: MNISTModes,
    prune: PruneConfig | None = None,
    modes: list[str] | None = None,
    overwrite: bool = False,
) -> tuple[Path, list[ModeReport]]:
    """Load a run's foundation and adapters, harden + prune each mode, write the bundle."""
    run = Path(run)
    foundation, meta = load_foundation(run / FOUNDATION_STEM)
    found = sorted(p.stem for p in (run / ADAPTER_DIR).glob("*.json"))
    if not found:
        raise FileNotFoundError(f"{run / ADAPTER_DIR}: no adapters found (run `taugate train` first)")
    wanted = modes or found
    missing = [m for m in wanted if m not in found]
    if missing:
        raise ValueError(f"modes {missing}: no adapter in {run / ADAPTER_DIR}; found {found}")
    reports = []
    for name in wanted:
        adapter = load_adapter(run / ADAPTER_DIR / name, foundation, meta["sha256"])
        mode = Mode(**adapter.meta["mode"])
        reports.append(harden_mode(adapter.method, adapter.model, data.mode(mode), prune, name))
    path = export_bundle(bundle, foundation, reports, data, overwrite=overwrite)
    return path, reports
