"""The reproduction's configuration, method labels, and the paper's reference numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from taugate.training.methods import METHODS
from taugate.training.sources import DataConfig, Mode
from taugate.training.sources.corruptions import Corruption

# Derived from the registry (methods/__init__.py), in its order: a new method lands here.
TABLE1_METHODS = tuple(n for n, m in METHODS.items() if m.table == "main")
ABLATION_METHODS = tuple(n for n, m in METHODS.items() if m.table == "ablation")

# arXiv 2602.11726, Tables 1-3 (mean, std over seeds); for side-by-side reports only.
PAPER = {
    "table1": {
        "frozen": {"params": 0, "rot0": (0.832, 0.017), "rot45": (0.833, 0.016)},
        "bitfit": {"params": 266, "rot0": (0.851, 0.005), "rot45": (0.852, 0.009)},
        "taugate": {"params": 512, "rot0": (0.850, 0.006), "rot45": (0.850, 0.010),
                    "high_act_frac": 0.28},
        "lora": {"params": 10448, "rot0": (0.855, 0.006), "rot45": (0.864, 0.005)},
        "full_ft": {"params": 118282, "rot0": (0.783, 0.007), "rot45": (0.887, 0.005)},
    },
    "table2": {
        "gain_only": {"params": 256, "rot0": (0.850, None), "rot45": (0.849, None)},
        "tau_only": {"params": 256, "rot0": (0.833, None), "rot45": (0.833, None)},
    },
    "table3": {"layer1": 1.000, "layer2": 0.833, "average": 0.917},
}


def method_label(name: str, method_config: dict | None = None) -> str:
    """The row label of a method in tables and figures (its ``label`` over its config)."""
    if name not in METHODS:
        return name
    return METHODS[name](method_config or {}).display_label()


@dataclass
class ExperimentConfig:
    out: str = "experiments/out"  # where results.csv, tables/, figures/, summary.json go
    seeds: tuple[int, ...] = (0, 1, 2)  # one foundation per seed; everything else follows it
    extras: bool = False  # also the ablations (Table 2) and the 0 deg TauGate (Table 3)
    foundation_modes: tuple[str, ...] = ("rot0", "rot45")  # the pretraining mixture
    adapt_mode: str = "rot45"  # the mode every method specializes to (Tables 1-2)
    overlap_mode: str = "rot0"  # with extras: TauGate also specialized here (Table 3)
    eval_modes: tuple[str, ...] = ("rot0", "rot45")  # test sets every model is evaluated on
    methods: tuple[str, ...] = TABLE1_METHODS  # extras append ABLATION_METHODS
    method_configs: dict = field(default_factory=dict)  # method name -> its Config fields
    epochs: int = 2  # foundation epochs (the paper's protocol)
    adapt_epochs: int = 1  # adaptation epochs (the paper's protocol)
    lr: float = 0.05  # foundation SGD lr
    adapt_lr: float = 0.05  # one adaptation lr for every method (docs/reproduce.md)
    momentum: float = 0.9
    batch_size: int = 256
    gate_threshold: float = 0.9  # a gate value above this is "high" (high-act frac, Table 3)
    gate_batch: int = 1024  # examples of the mode's training split the gate statistics use
    gate_seed: int = 0  # picks those examples: the same ones for every seed and method
    overlap_min_frac: float = 0.5  # a unit is in a mode's mask when high on >= this fraction
    onnx: bool = True  # also measure every exported graph's accuracy with onnxruntime
    device: str = "auto"
    progress: bool = True  # the loop's progress line on stderr
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected one or more distinct integers, got {self.seeds}")
        self.foundation_modes, self.eval_modes = tuple(self.foundation_modes), tuple(self.eval_modes)
        for m in (*self.foundation_modes, *self.eval_modes, self.adapt_mode, self.overlap_mode):
            if not m.startswith("rot"):
                Corruption.parse(m)  # fails early with the accepted forms
            else:
                Mode.parse(m)
        if not self.eval_modes:
            raise ValueError("eval_modes: expected at least one mode")
        self.methods = tuple(self.methods)
        if self.extras:  # Table 2 needs the ablations, Table 3 TauGate at the adapt mode
            self.methods += tuple(m for m in ("taugate", *ABLATION_METHODS) if m not in self.methods)
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: {m!r} is not a method; valid: {', '.join(METHODS)}")
        for name in ("epochs", "adapt_epochs", "batch_size", "gate_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr", "adapt_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if not 0 < self.gate_threshold < 1:
            raise ValueError(f"gate_threshold: expected in (0, 1), got {self.gate_threshold}")
        if not 0 < self.overlap_min_frac <= 1:
            raise ValueError(f"overlap_min_frac: expected in (0, 1], got {self.overlap_min_frac}")
        if self.extras and self.overlap_mode == self.adapt_mode:
            raise ValueError(
                f"overlap_mode: expected a mode other than adapt_mode ({self.adapt_mode!r}), "
                f"got {self.overlap_mode!r}"
            )

    def runs(self) -> list[tuple[str, str]]:
        """The (method, adapt_mode) pairs trained per seed, in order."""
        runs = [(m, self.adapt_mode) for m in self.methods]
        if self.extras:
            runs.append(("taugate", self.overlap_mode))
        return runs

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("seeds", "foundation_modes", "eval_modes", "methods"):
            d[k] = list(d[k])
        return d
