"""A training run on disk: ``RUN/run.json`` + ``RUN/foundation.{safetensors,json}`` +
``RUN/adapters/<mode>.*``.

``train_run`` writes one (what ``taugate train`` does); ``load_run`` (training/loaded.py) reads
any run back for the exporter (:func:`taugate.exporting.pipeline.export_run`).

``run.json`` (format ``taugate-run``, version 2) records the model family, how to reopen the
mode source (``source``), the ``input`` / ``output`` specs (bundle/schema.py's InputSpec and
OutputSpec, as in a manifest), the target sites and the modes trained. A run directory without
run.json is an mlp run on MNIST rotations.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from taugate import __version__
from taugate.bundle.atomic import write_text
from taugate.bundle.names import check_mode_name
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.training.adapters import load_foundation, save_adapter, save_foundation
from taugate.training.backbone import FoundationConfig
from taugate.training.budget import AdaptOutcome
from taugate.training.devices import resolve_device
from taugate.training.families import family_of, get_family
from taugate.training.families.hf import token_vocab
from taugate.training.loop import accuracy
from taugate.training.pipeline import AdaptConfig, adapt, pretrain_foundation
from taugate.training.sources import DataConfig, FolderModes, MNISTModes, ModeSource
from taugate.training.targets import parse_patterns, resolve_targets

log = logging.getLogger(__name__)

FOUNDATION_STEM = "foundation"
ADAPTER_DIR = "adapters"
RUN_FILE = "run.json"
RUN_FORMAT, RUN_VERSION = "taugate-run", 2


@dataclass
class RunConfig:
    out: str  # the run directory
    modes: tuple[str, ...] | None = None  # one adapter per mode (None: the source's modes:
    #   MNIST rot0, rot45; every folder of modes_dir)
    foundation: FoundationConfig = field(default_factory=FoundationConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    foundation_path: str | None = None  # reuse this foundation instead of training one
    foundation_only: bool = False  # stop after the foundation
    device: str = "auto"
    progress: bool = True
    modes_dir: str | None = None  # MODES/<mode>/{train,test[,calibration]}.npz instead of MNIST
    model: str | None = None  # FILE.py:FACTORY: the user's frozen model instead of a foundation
    module: nn.Module | None = field(default=None, repr=False)  # or the model itself (Python)
    weights: str | None = None  # safetensors weights for --model (loaded strictly)
    weights_in_factory: bool = False  # --model's factory loads trained weights itself
    targets: tuple[str, ...] | None = None  # module-path patterns (None: every site)
    mixture_from_modes: bool = False  # pretrain on the adapted modes instead of foundation.modes
    hf: str | None = None  # a Hugging Face save_pretrained folder (families/hf.py)

    def __post_init__(self) -> None:
        if self.modes is not None:
            self.modes = tuple(self.modes)
            for m in self.modes:
                check_mode_name(m)  # the source checks the rest before reading data
        self.targets = parse_patterns(self.targets)
        if self.weights and not (self.model or self.module is not None):
            raise ValueError("--weights: needs --model FILE.py:FACTORY (the module to load into)")
        if self.model and not self.weights and not self.weights_in_factory:
            raise ValueError(f"--model {self.model}: no --weights given, so the model would keep "
                             f"the factory's initial weights; pass --weights W.safetensors, or "
                             f"--weights-in-factory if the factory loads trained weights itself")
        given = [n for n, v in (("--model", self.model), ("--foundation", self.foundation_path),
                                ("module", self.module), ("--hf", self.hf)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one foundation, not several")
        if self.module is not None and not isinstance(self.module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(self.module).__name__}")


@dataclass
class TrainedRun:
    path: Path
    foundation_sha: str
    adapters: dict[str, Path]  # mode -> adapter path
    family: str = "mlp"  # the foundation's model family (training/families/)
    module: nn.Module | None = field(default=None, repr=False)  # the foundation, when it was
    #   given from Python (no FILE.py:FACTORY rebuilds it: export needs it again)
    outcomes: dict[str, AdaptOutcome] = field(default_factory=dict)  # mode -> steps, accuracy
    #   (training/budget.py's adaptation_notes turns them into warnings)


def open_source(config: RunConfig) -> ModeSource:
    """The mode source of a run: a modes folder, else MNIST (no data is read yet)."""
    if config.modes_dir:
        return FolderModes(config.modes_dir, split_seed=config.data.split_seed)
    return MNISTModes(config.data)


def fit_to_data(fc: FoundationConfig, source: ModeSource, modes: list[str]) -> FoundationConfig:
    """The foundation config with its input size, classes and normalization taken from the
    data (the family's :meth:`~taugate.training.families.Family.fit_to_data`); unchanged
    where the source says the defaults fit (MNIST keeps the paper's numbers)."""
    facts = source.data_facts(modes)
    return fc if facts is None else get_family(fc.family).fit_to_data(fc, facts)


def train_run(config: RunConfig, data=None) -> TrainedRun:
    """Pretrain (or load) the foundation, then train one adapter per mode; write them all."""
    out = Path(config.out)
    device = resolve_device(config.device)
    source = data or open_source(config)
    modes = source.check_names(config.modes if config.modes is not None else source.names())
    if not config.model and not config.foundation_path and not config.hf:
        source.check_names(modes if config.mixture_from_modes else config.foundation.modes)
    for m in modes:
        source.mode(m)  # a bad mode or folder fails before any training
    factory, pretrained_on = None, set()
    if config.module is not None:
        import copy

        foundation = copy.deepcopy(config.module).cpu().eval()  # the caller's stays untouched
        if config.weights:
            from taugate.training.families.user import load_weights

            load_weights(foundation, config.weights)
    elif config.model:
        from taugate.training.families.user import load_factory, load_weights, parse_factory

        path, name = parse_factory(config.model)
        factory = f"{path}:{name}"
        foundation = load_factory(factory)
        if config.weights:
            load_weights(foundation, config.weights)
        foundation = foundation.cpu().eval()
    elif config.hf:
        from taugate.training.families.hf import load_hf

        foundation = load_hf(config.hf)
    elif config.foundation_path:
        foundation, meta = load_foundation(config.foundation_path)
        factory = meta.get("factory")
        pretrained_on = pretrained_modes(meta)
        log.info("loaded foundation %s (sha256 %s)", config.foundation_path, meta["sha256"][:12])
    else:
        fc = config.foundation
        if config.mixture_from_modes:
            fc = replace(fc, modes=tuple(modes))
        fc = fit_to_data(fc, source, list(fc.modes))
        foundation = pretrain_foundation(source, fc, device, config.progress)
        pretrained_on = set(fc.modes)
    for p in foundation.parameters():
        p.requires_grad_(False)
    example = source.mode(modes[0]).calibration.x[:8]
    targets = resolve_targets(foundation, example, config.targets)
    sha = save_foundation(foundation, out / FOUNDATION_STEM, factory=factory,
                          extra={"train_config": _plain(config.foundation)})
    write_run_file(out, foundation, source, example, targets, modes)
    adapters: dict[str, Path] = {}
    outcomes: dict[str, AdaptOutcome] = {}
    if not config.foundation_only:
        for name in modes:
            md = source.mode(name)
            method, model = adapt(foundation, md, config.adapt, device, config.progress, targets)
            outcome = _outcome(foundation, method, model, md, config.adapt, name in pretrained_on)
            if outcome is not None:
                outcomes[name] = outcome
            mode = {"name": md.mode.name, "angle": md.mode.angle} if md.mode.angle is not None \
                else {"name": md.mode.name}
            adapters[name] = save_adapter(
                out / ADAPTER_DIR / name, method, model, sha, mode=mode,
                extra={"facts": md.facts, "train_config": _plain(config.adapt.train)},
            )
    return TrainedRun(out, sha, adapters, family_of(foundation).name,
                      foundation if config.module is not None else None, outcomes)


def pretrained_modes(meta: dict) -> set[str]:
    """The modes a saved foundation was pretrained on (its JSON's ``train_config``), so that a
    reused foundation's own modes are judged by compute, not by accuracy gained."""
    modes = (meta.get("train_config") or {}).get("modes") if isinstance(meta, dict) else None
    return {m for m in modes if isinstance(m, str)} if isinstance(modes, list) else set()


def _outcome(foundation, method, model, md, adapt_config: AdaptConfig, seen: bool):
    """Steps taken and test accuracy, frozen vs adapted (soft gate); None for a method with
    nothing to train."""
    if not method.trainable(model):
        return None
    steps = adapt_config.train.steps_for(len(md.train))
    if not len(md.test):
        return AdaptOutcome(steps, float("nan"), float("nan"), seen)
    return AdaptOutcome(steps, accuracy(foundation, md.test), accuracy(model, md.test), seen)


@torch.no_grad()
def write_run_file(out: Path, foundation: nn.Module, source: ModeSource, example, targets,
                   modes) -> Path:
    classes = int(foundation.eval()(example).shape[-1])
    labels = source.labels
    output = OutputSpec.logits(classes, labels if labels and len(labels) == classes else None)
    spec = source.input_spec
    vocab = token_vocab(foundation)
    if spec.token_length and vocab:  # ids are checked against the model's vocabulary
        spec = InputSpec.tokens(spec.token_length, vocab, spec.name)
    meta = {
        "format": RUN_FORMAT,
        "format_version": RUN_VERSION,
        "created_by": f"taugate {__version__}",
        "family": family_of(foundation).name,
        "source": source.describe(),
        "input": spec.to_dict(),
        "output": output.to_dict(),
        "targets": targets.to_dict(),
        "modes": list(modes),
    }
    return write_text(out / RUN_FILE, json.dumps(meta, indent=2))


def _plain(cfg) -> dict:
    return asdict(cfg)
