"""Foundation pretraining's config (:class:`FoundationConfig`): which family, on which mixture
of modes, how long. The paper's: its MLP on a 50/50 mixture of 0 deg and 45 deg MNIST, 2 epochs.
The mlp family's modules (the MLP, its config, hardening) are in training/families/mlp.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taugate.training.families.mlp import BackboneConfig


@dataclass
class FoundationConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # the mlp family's config
    modes: tuple[str, ...] = ("rot0", "rot45")  # the mixture the foundation is pretrained on
    epochs: int = 2  # the paper's protocol
    batch_size: int = 256
    lr: float = 0.05  # SGD; see docs/reproduce.md, "Training protocol and learning rates"
    momentum: float = 0.9
    seed: int = 0
    family: str = "mlp"  # a pretrainable model family (training/families/): "mlp" | "vit"
    family_config: dict = field(default_factory=dict)  # other families' config fields
    optimizer: str = "sgd"  # "sgd" (the paper) | "adam" (the vit family's default)

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)
        from taugate.training.families import get_family

        get_family(self.family).foundation_config(self)  # validates name and keys early
        self.modes = tuple(self.modes)
        if not self.modes:
            raise ValueError("modes: expected at least one mode for the mixture")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"epochs/batch_size/lr: expected >= 1 / >= 1 / > 0, got "
                f"{self.epochs}/{self.batch_size}/{self.lr}"
            )

