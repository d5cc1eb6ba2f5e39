"""A run directory read back for the exporter: ``load_run(run_dir) -> Run``.

Everything the bundle v2 writer needs, method-agnostic: the frozen foundation, the input and
output specs (typed: bundle/schema.py), and per mode the method's :class:`~taugate.spec.GatedSpec`, its facts,
its calibration and test splits, and the hard-gated torch model (for parity tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.spec import GatedSpec
from taugate.training.adapters import Adapter, load_adapter, load_foundation
from taugate.training.families import family_of
from taugate.training.gating import clear_gates, set_hard
from taugate.training.runs import ADAPTER_DIR, FOUNDATION_STEM, RUN_FILE
from taugate.training.sources import open_source
from taugate.training.sources.mnist import MNIST_INPUT, MNIST_LABELS


@dataclass
class RunMode:
    """One trained mode of a run."""

    name: str
    method: str  # the adaptation method's registry name
    spec: GatedSpec  # what makes the mode a mode (thresholds, gains, overrides)
    facts: dict  # free-form (a rotation: {"source": "mnist-rotation", "angle": 45.0})
    calibration: tuple[torch.Tensor, torch.Tensor]  # (x float32 [N, ...], y int64 [N])
    test: tuple[torch.Tensor, torch.Tensor]
    adapter: Adapter = field(repr=False)

    def hard_model(self) -> nn.Module:
        """The adapted model with hard gates (eval, cpu): what the exported graph must match."""
        import copy

        clear_gates(self.adapter.model)  # recorded gates are graph outputs deepcopy refuses
        return set_hard(copy.deepcopy(self.adapter.model), True).eval().cpu()


@dataclass
class Run:
    path: Path
    family: str  # "mlp" | "vit" | "user"
    foundation: nn.Module  # eval, frozen, cpu
    foundation_sha: str
    input_spec: InputSpec  # the bundle's "input" (.to_dict(): the manifest object)
    output_spec: OutputSpec  # the bundle's "output"
    targets: list[str]  # producer module paths, in forward order
    modes: dict[str, RunMode]
    sites: list = field(default_factory=list)  # targets.Site per target: producer, act (the
    #   activation module's path), consumer, activation, in_features, units, out_features, tokens


def _run_meta(run: Path) -> dict:
    path = run / RUN_FILE
    if not path.exists():  # format 1: an mlp run on MNIST rotations
        return {"source": {"kind": "mnist", "data": {}}, "input": MNIST_INPUT.to_dict(),
                "output": OutputSpec.logits(10, MNIST_LABELS).to_dict()}
    try:
        return json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def load_run(run_dir: str | Path, data_root: str | None = None,
             modes: list[str] | None = None, foundation: nn.Module | None = None) -> Run:
    """Read a run written by ``taugate train``; ``data_root`` overrides where its mode source
    lives (the MNIST root, or the modes folder). ``modes``: only these (default all).
    ``foundation``: the run's foundation module when it was given from Python (checked
    against the run's sha256)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: not a run directory (expected `taugate train --out`)")
    meta = _run_meta(run)
    try:
        input_spec = InputSpec.from_dict(meta.get("input"))
        output_spec = OutputSpec.from_dict(meta.get("output"))
    except ValueError as exc:
        raise ValueError(f"{run / RUN_FILE}: {exc}") from None
    foundation, fmeta = load_foundation(run / FOUNDATION_STEM, foundation)
    for p in foundation.parameters():
        p.requires_grad_(False)
    foundation = foundation.cpu().eval()
    source = open_source(meta["source"], data_root)
    found = sorted(p.stem for p in (run / ADAPTER_DIR).glob("*.json"))
    trained = [m for m in meta.get("modes") or [] if m in found]  # the order they were given
    wanted = list(modes) if modes else trained + [m for m in found if m not in trained]
    missing = [m for m in wanted if m not in found]
    if missing:
        raise ValueError(f"modes {missing}: no adapter in {run / ADAPTER_DIR}; found {found}")
    loaded: dict[str, RunMode] = {}
    sites: list = []
    for name in wanted:
        adapter = load_adapter(run / ADAPTER_DIR / name, foundation, fmeta["sha256"])
        md = source.mode(adapter.meta["mode"]["name"])
        facts = adapter.meta.get("facts") or md.facts
        try:
            spec = adapter.method.harden_spec(adapter.model, {"mode": name, "facts": facts})
        except ValueError as exc:
            raise ValueError(f"{run / ADAPTER_DIR / name}.safetensors: cannot be hardened ({exc}); "
                             f"a non-finite value means training diverged: retrain this mode "
                             f"with a smaller --adapt-lr") from None
        sites = list(adapter.model.taugate_targets.sites)
        loaded[name] = RunMode(name, adapter.method.name, spec, facts,
                               (md.calibration.x, md.calibration.y), (md.test.x, md.test.y),
                               adapter)
    return Run(run, meta.get("family", family_of(foundation).name), foundation, fmeta["sha256"],
               input_spec, output_spec, [s.producer for s in sites], loaded, sites)
