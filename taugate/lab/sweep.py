"""The sparsity sweep: accuracy vs MACs vs measured speedup, per hidden width.

For each width: pretrain (or reuse) a foundation with hidden (w, w) on the mode mixture; for
each L1 strength: adapt TauGate with cost-weighted proximal L1 on the gains
(training/sparsity.py), retune, harden, prune on the calibration split, and time the pruned
ONNX graph against the dense frozen graph side by side with onnxruntime (taugate/timing.py).
Writes ``sweep.csv``, ``sweep.json`` (rows + machine info) and ``pareto.png`` under ``out``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from taugate.bundle.atomic import write_bytes, write_text
from taugate.exporting.graph import build_graph
from taugate.exporting.prune import PruneConfig
from taugate.exporting.specialize import prune_mode
from taugate.timing import TimingConfig, make_session, time_models

log = logging.getLogger(__name__)

COLUMNS = ["width", "mode", "strength", "unit_l1", "units_kept", "units_total", "macs", "dense_macs",
           "mac_ratio", "acc_mode", "acc_other", "dense_acc_mode", "dense_acc_other",
           "unpruned_acc_mode", "speedup_b1", "speedup_b64", "speedup_b256", "speedup_b4096",
           "onnx_max_abs_diff", "train_s"]


RETUNE_OPTIONS = ("retune_lr_scale", "retune_schedule", "target_mac_ratio", "round_units",
                  "distill", "distill_temperature", "distill_alpha")


@dataclass
class SweepConfig:
    out: str = "out/sweep"  # folder for sweep.csv / sweep.json / pareto.png / foundations
    mode: str = "rot45"  # the mode to specialize
    other: str = "rot0"  # the other mode, reported beside it
    widths: tuple[int, ...] = (128,)  # foundations with hidden (w, w)
    strengths: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)  # TauGateConfig.unit_l1
    # unit_l1 = strength x reference_width / width: with the hot gain lr, a w-wide backbone
    # needs a ~w/128 times smaller lambda for the same MAC ratio (docs/speedup.md); None: as is
    reference_width: int | None = None
    epochs: int = 1  # sparse (L1) adaptation epochs
    retune_epochs: int = 2  # then epochs without L1, zeroed units frozen
    lr: float = 0.05  # adaptation SGD learning rate
    gain_lr_scale: float = 1.0  # TauGateConfig.gain_lr_scale
    # TauGateConfig retune options (used when strength > 0; defaults: off)
    retune_lr_scale: float = 1.0
    retune_schedule: str = "constant"
    target_mac_ratio: float = 0.0
    round_units: int = 1
    distill: str = "none"
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5
    foundation_epochs: int = 2  # the paper's protocol
    seed: int = 0
    prune: PruneConfig = field(default_factory=lambda: PruneConfig(max_accuracy_drop=1.0))
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(threads=1, repeats=15))

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.strengths = tuple(float(s) for s in self.strengths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths: expected one or more widths >= 1, got {self.widths}")
        if not self.strengths or min(self.strengths) < 0:
            raise ValueError(f"strengths: expected one or more values >= 0, got {self.strengths}")
        if self.reference_width is not None and self.reference_width < 1:
            raise ValueError(f"reference_width: expected None or >= 1, got {self.reference_width}")
        if self.mode == self.other:
            raise ValueError(f"other: expected a mode other than {self.mode!r}")
        if self.epochs < 1 or self.retune_epochs < 0:
            raise ValueError(f"epochs/retune_epochs: expected >= 1 / >= 0, got "
                             f"{self.epochs}/{self.retune_epochs}")


def _np(split):
    return split.x.numpy(), split.y.numpy()


def foundation_for(data, width: int, config: SweepConfig, device="cpu", progress=True):
    """The foundation with hidden (width, width), loaded from ``out`` or pretrained there."""
    from taugate.training.adapters import load_foundation, save_foundation
    from taugate.training.backbone import FoundationConfig
    from taugate.training.families.mlp import BackboneConfig
    from taugate.training.pipeline import pretrain_foundation

    fc = FoundationConfig(backbone=BackboneConfig(hidden=(width, width)),
                          modes=(config.other, config.mode), epochs=config.foundation_epochs,
                          seed=config.seed)
    path = Path(config.out) / f"foundation-w{width}"
    if path.with_suffix(".json").exists():
        model, meta = load_foundation(path)
        if meta.get("foundation_config") == json.loads(json.dumps(asdict(fc))):
            log.info("width %d: reusing %s", width, path)
            return model
        log.info("width %d: %s was trained differently; retraining", width, path)
    model = pretrain_foundation(data, fc, device=device, progress=progress)
    save_foundation(model, path, {"foundation_config": asdict(fc)})
    return model


def onnx_max_abs_diff(model, x: np.ndarray) -> float:
    """max |ORT logits - numpy HardenedModel.forward logits| on ``x``."""
    sess = make_session(build_graph(model, "check"), threads=1)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.abs(got - model.forward(x)).max())


def sweep_point(foundation, dense, data, width, strength, config, dense_acc, device, progress):
    """Train, prune and time one (width, strength) point; returns its row."""
    from taugate.training.gating import set_hard
    from taugate.training.loop import TrainConfig
    from taugate.training.pipeline import AdaptConfig, adapt

    md, other = data.mode(config.mode), data.mode(config.other)
    unit_l1 = strength * config.reference_width / width if config.reference_width else strength
    mc = {"unit_l1": unit_l1, "gain_lr_scale": config.gain_lr_scale,
          "retune_epochs": config.retune_epochs if strength > 0 else 0}
    if strength > 0:
        mc.update({k: getattr(config, k) for k in RETUNE_OPTIONS})
    ac = AdaptConfig("taugate", mc, TrainConfig(epochs=config.epochs, lr=config.lr,
                                                seed=config.seed))
    t0 = time.perf_counter()
    method, model = adapt(foundation, md, ac, device=device, progress=progress)
    train_s = time.perf_counter() - t0
    hardened = method.harden(set_hard(model, False), {"mode": md.mode.name})
    pruned = prune_mode(hardened, _np(md.calibration), _np(md.test), config.prune)
    small = pruned.model
    timing = time_models({"dense": build_graph(dense, "dense"), "pruned": build_graph(small, "m")},
                         "dense", config.timing)
    from taugate.exporting.specialize import accuracy

    row = {
        "width": width, "mode": config.mode, "strength": strength, "unit_l1": unit_l1,
        "units_kept": ";".join(map(str, small.widths)),
        "units_total": ";".join(map(str, hardened.widths)),
        "macs": small.macs, "dense_macs": dense.macs, "mac_ratio": dense.macs / small.macs,
        "acc_mode": pruned.test_accuracy, "acc_other": accuracy(small, *_np(other.test)),
        "dense_acc_mode": dense_acc[0], "dense_acc_other": dense_acc[1],
        "unpruned_acc_mode": pruned.unpruned_test_accuracy,
        **{f"speedup_b{b}": timing.speedup("pruned", b) for b in config.timing.batch_sizes},
        "onnx_max_abs_diff": onnx_max_abs_diff(small, md.calibration.x.numpy()[:2048]),
        "train_s": train_s,
    }
    return row, timing.machine


def run_sweep(config: SweepConfig, data_config=None, device="cpu", progress=True) -> list[dict]:
    """Run the whole sweep and write its files; returns the rows."""
    from taugate.exporting.specialize import accuracy
    from taugate.training.families.mlp import harden_mlp
    from taugate.training.sources import MNISTModes

    data = MNISTModes(data_config)
    rows, machine = [], {}
    total = len(config.widths) * len(config.strengths)
    for width in config.widths:
        foundation = foundation_for(data, width, config, device, progress)
        dense = harden_mlp(foundation, {"method": "frozen"})
        dense_acc = [accuracy(dense, *_np(data.mode(m).test)) for m in (config.mode, config.other)]
        for strength in config.strengths:
            row, machine = sweep_point(foundation, dense, data, width, strength, config,
                                       dense_acc, device, progress)
            rows.append(row)
            log.info("[%d/%d] width %d strength %g: units %s, %.2fx fewer MACs, acc %.4f "
                     "(dense %.4f), speedup b1 %.2f b256 %.2f", len(rows), total, width, strength,
                     row["units_kept"], row["mac_ratio"], row["acc_mode"], dense_acc[0],
                     row["speedup_b1"], row["speedup_b256"])
            write_results(config, rows, machine)
    write_pareto(Path(config.out) / "pareto.png", rows, machine)
    return rows


def write_results(config: SweepConfig, rows: list[dict], machine: dict) -> None:
    """sweep.csv + sweep.json (rewritten after every point, so a stopped sweep keeps its rows)."""
    out = Path(config.out)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
    write_text(out / "sweep.csv", buf.getvalue())
    meta = {"machine": machine, "repeats": config.timing.repeats, "warmup": config.timing.warmup,
            "config": json.loads(json.dumps(asdict(config), default=str)), "rows": rows}
    write_text(out / "sweep.json", json.dumps(meta, indent=2))


def write_pareto(path: Path, rows: list[dict], machine: dict | None = None) -> None:
    """The sweep's Pareto plot: the report's one implementation (report/figures.py)."""
    from taugate.lab.report.figures import pareto_figure

    write_bytes(path, pareto_figure(rows, machine or {}))
