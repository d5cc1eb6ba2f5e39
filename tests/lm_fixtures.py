"""A tiny seeded decoder, a mode of it (the taugate method, hard gates, some gains 0) and its
LM bundle, shared by the LM export and generation tests."""

import torch

from taugate.exporting.lm_bundle import write_lm_bundle
from taugate.training.gating import gate_modules
from taugate.training.lm.model import LMConfig, TinyLlama
from taugate.training.methods.taugate import TauGate

CFG = LMConfig(dim=32, heads=2, ffn=64, layers=2, context=64)
PROMPT = b"def main():\n    "


def foundation() -> TinyLlama:
    torch.manual_seed(0)
    return TinyLlama(CFG).eval()


def mode(model: TinyLlama, seed: int = 3, zero: float = 0.6) -> torch.nn.Module:
    """The taugate method on ``model``: random thresholds and gains, ``zero`` of them 0."""
    wrapped = TauGate().wrap(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, act in gate_modules(wrapped):
            act.tau.copy_(torch.randn(act.width, generator=g) * 0.3)
            act.gain.copy_(torch.rand(act.width, generator=g) + 0.5)
            act.gain[torch.rand(act.width, generator=g) < zero] = 0
    return wrapped.eval()


def calibration(n: int = 4, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(5))


def code_bundle(out, **kw):
    """The LM bundle of :func:`foundation` with one mode, ``code``, written to ``out``."""
    base = foundation()
    return write_lm_bundle(base, {"code": mode(base)}, out, **kw)
