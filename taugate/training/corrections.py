"""A per-mode low-rank correction of the first gated site's producer, trained with tau/gamma.

Thresholds and gains can only rescale and silence the frozen producer's units; a mode whose
input moved (MNIST rotated 45 degrees) also wants those units to *look at other pixels*. The
correction adds ``scale * B @ A`` (rank r; A: r x in, B: units x r) to the first producer's
weight: LoRA's form (methods/lora.py, B = 0 at the start, so training starts from the frozen
model) on the one layer that reads the input. Only the kept units' rows of B matter once the
mode is compacted, so a mode stores ``r * (in + kept units)`` numbers for it (4 x (784 + 64) =
3,392 on the paper's backbone at rank 4).

``scale`` (default 0.1) is the factors' effective learning rate: the sparse recipe's retune
runs at 10x the adaptation lr, where a scale of 1 diverges (measured: rank 4, scale 0.25).

At export the correction is merged into the producer's weight (an override of
``<producer>.weight``, merged with the runtime's numpy arithmetic): the mode graph spends no
extra MACs on it, and the standalone layout stores nothing extra; the shared layout stores the
factors (``r x (cells + kept units)`` numbers) and the runtime merges them at load
(bundle/lowrank.py).

``pool=k`` (images only) lets A read the input average-pooled over k x k patches: ``A = A' P``
with P the fixed pooling (never stored), so A' has ``(side/k)^2`` columns instead of
``side^2`` and the same budget buys k^2-fold more rank where a smooth (low-frequency) change
of the first layer is what the mode needs. On the paper's backbone, 16 x (196 + 68) + 512 =
4,736 numbers at pool 2, rank 16, scale 0.2 measured 0.9739-0.9748 on the rot45 mode (3 seeds;
rank 4 unpooled: 0.9706; docs/speedup.md). The merged weight is ``W + s B A' P``: still no MACs.

``sites="ffn"`` corrects every gated site's producer and its ``up`` projection (a SwiGLU
FFN's ``gate`` and ``up`` of every layer) instead: the kept units of a mode pruned to a
third of a language model's FFN then also read the residual stream differently, which
thresholds and gains alone cannot do (docs/lm.md). Each is merged the same way, so a mode's
decode graph still costs nothing extra.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from taugate.bundle.lowrank import expand, merge
from taugate.spec import LowRankFactors

CORRECTION_SCALE = 0.1
CORRECTION_SITES = ("first", "ffn")  # the first site's producer; every site's producer and up


def check_correction(rank, scale, sites: str = "first", pool=1) -> None:
    """ValueError unless ``rank`` is an integer >= 0, ``scale`` > 0, ``sites`` one of
    :data:`CORRECTION_SITES` and ``pool`` an integer >= 1 (> 1 only with ``sites="first"``)."""
    if isinstance(rank, bool) or int(rank) != rank or rank < 0:
        raise ValueError(f"correction_rank: expected an integer >= 0 (0: off), got {rank!r}")
    if isinstance(pool, bool) or int(pool) != pool or pool < 1:
        raise ValueError(f"correction_pool: expected an integer >= 1 (1: off), got {pool!r}")
    if pool > 1 and sites != "first":
        raise ValueError(f"correction_pool: pools the first layer's image input; expected "
                         f"correction_sites 'first' with it, got {sites!r}")
    if not scale > 0:
        raise ValueError(f"correction_scale: expected > 0, got {scale!r}")
    if sites not in CORRECTION_SITES:
        raise ValueError(f"correction_sites: expected one of {', '.join(CORRECTION_SITES)}, "
                         f"got {sites!r}")


def corrected_producer(model: nn.Module) -> tuple[str, nn.Module]:
    """(path, module) of the first gated site's producer."""
    from taugate.training.gating import targets_of
    from taugate.training.targets import get_module

    sites = targets_of(model).sites
    if not sites:
        raise ValueError("correction_rank: the model has no gated site to correct")
    path = sites[0].producer
    return path, get_module(model, path)


def corrected_paths(model: nn.Module, sites: str = "first") -> list[str]:
    """Module paths a correction wraps: the first site's producer, or (``"ffn"``) every
    site's producer and its ``up`` projection, in forward order."""
    from taugate.training.gating import targets_of

    if sites == "first":
        return [corrected_producer(model)[0]]
    paths = []
    for site in targets_of(model).sites:
        paths += [site.producer] + ([site.up] if site.up else [])
    if not paths:
        raise ValueError("correction_rank: the model has no gated site to correct")
    return paths


def add_correction(model: nn.Module, rank: int, scale: float, sites: str = "first",
                   pool: int = 1) -> None:
    """Wrap the corrected ``nn.Linear`` layers (:func:`corrected_paths`) in a rank-``rank``
    correction (``pool > 1``: methods/lora.py's ``PooledCorrection``)."""
    from taugate.training.targets import get_module

    for path in corrected_paths(model, sites):
        _wrap(model, path, get_module(model, path), rank, scale, pool)


def _wrap(model: nn.Module, path: str, producer: nn.Module, rank: int, scale: float,
          pool: int = 1) -> None:
    from taugate.training.methods.lora import LoRALinear
    from taugate.training.targets import set_module

    if type(producer) is not nn.Linear:
        raise ValueError(f"correction_rank: the corrected layer {path!r} is a "
                         f"{type(producer).__name__}; the correction needs an nn.Linear "
                         f"(set correction_rank 0)")
    if rank > min(producer.in_features, producer.out_features):
        raise ValueError(f"correction_rank: expected at most {min(producer.in_features, producer.out_features)} "
                         f"for {path!r} ({producer.in_features} -> {producer.out_features}), "
                         f"got {rank}")
    alpha = float(rank) * float(scale)
    if pool > 1:
        from taugate.training.methods.lora import PooledCorrection

        set_module(model, path, PooledCorrection(producer, int(rank), alpha, int(pool), path))
    else:
        set_module(model, path, LoRALinear(producer, int(rank), alpha))


def correction_factors(model: nn.Module) -> dict[str, LowRankFactors]:
    """``{<producer>.weight: (scale * B, A, pool)}`` for a corrected model, else ``{}``."""
    from taugate.training.methods.base import as_numpy
    from taugate.training.methods.lora import LoRALinear

    out = {}
    for path, m in model.named_modules():
        if isinstance(m, LoRALinear):
            u = as_numpy(m.lora_B) * np.float32(m.scaling)
            out[f"{path}.weight"] = LowRankFactors(u, as_numpy(m.lora_A), getattr(m, "pool", 1))
    return out


def merged(weight: np.ndarray, f: LowRankFactors) -> np.ndarray:
    """``weight + u @ expand(v)`` with the runtime's own arithmetic (bundle/lowrank.py), so a
    shared bundle's materialized weight is this one bit for bit."""
    return merge(weight, f.u, expand(f.v, f.pool, weight.shape[1], "correction"))


def correction_overrides(model: nn.Module) -> dict[str, np.ndarray]:
    """``{<producer>.weight: W + scale * B @ A}`` for a corrected model, else ``{}``."""
    from taugate.training.methods.base import as_numpy
    from taugate.training.targets import get_module

    return {key: merged(as_numpy(get_module(model, key[:-len(".weight")]).base.weight), f)
            for key, f in correction_factors(model).items()}


def correction_size(model: nn.Module, kept_units: int) -> int:
    """Numbers a mode stores for its correction once compacted: ``r * (A's columns +
    kept_units)`` (A's columns: the inputs, or the pooled cells)."""
    from taugate.training.methods.lora import LoRALinear

    return sum(m.rank * (m.lora_A.shape[1] + int(kept_units))
               for m in model.modules() if isinstance(m, LoRALinear))


def stored_numbers(method, model: nn.Module, kept_units: int) -> int:
    """Numbers a mode stores beside the shared backbone: every trainable number of ``method``,
    where a first-layer correction counts only its kept units' rows of B
    (:func:`correction_size`; what `taugate peers` counts: 512 + 4,224 at rank 16, pool 2)."""
    n = sum(p.numel() for p in method.trainable(model).values())
    cfg = getattr(method, "config", None)
    if getattr(cfg, "correction_rank", 0) and cfg.correction_sites == "first":
        _, producer = corrected_producer(model)
        n -= producer.rank * (producer.out_features - int(kept_units))
    return n
