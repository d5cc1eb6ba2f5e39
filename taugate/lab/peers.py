"""Peers in the benchmark: what a user would pick instead of a TauGate mode, trained and measured
in the same run, at the units the TauGate mode keeps.

- **Torch-Pruning** (VainF/Torch-Pruning, ``torch_pruning``, an optional dev dependency):
  structured pruning of a copy of the foundation to exactly the mode's kept units per layer
  (Taylor importance on the mode's training data), then fine-tuning all weights on the mode
  (SGD, cosine schedule).
- **Small MLP from scratch**: the same shape, trained on the mode alone.
- **Dense int8**: the foundation, quantized (one model for every mode).

Each is exported through the same graph builder and timed interleaved with the dense fp32 model
(:func:`taugate.timing.time_models`); accuracy is measured on the mode and on the other mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from taugate.exporting.quantize import quantize
from taugate.exporting.variants import onnx_accuracy
from taugate.spec import HardenedModel
from taugate.training.families.mlp import MLP, BackboneConfig, harden_mlp
from taugate.training.loop import TrainConfig, train
from taugate.training.sources import ModeData
from taugate.training.sparsity import cosine


@dataclass
class PeersConfig:
    finetune_epochs: int = 5  # Torch-Pruning fine-tuning epochs on the mode
    scratch_epochs: int = 5  # small MLP from scratch, epochs on the mode
    lr: float = 0.05  # SGD with momentum 0.9, cosine to 0
    taylor_batches: int = 8  # batches of 256 whose gradients feed the Taylor importance
    seed: int = 0

    def __post_init__(self) -> None:
        if self.finetune_epochs < 1 or self.scratch_epochs < 1 or self.taylor_batches < 1:
            raise ValueError(f"finetune_epochs/scratch_epochs/taylor_batches: expected >= 1, got "
                             f"{self.finetune_epochs}/{self.scratch_epochs}/"
                             f"{self.taylor_batches}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")


def torch_pruned(foundation: MLP, kept: list[int], mode: ModeData, config: PeersConfig,
                 device="cpu", progress: bool = False) -> MLP:
    """A copy of ``foundation`` pruned by Torch-Pruning to ``kept`` units per hidden layer
    (Taylor importance), then fine-tuned on the mode."""
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise ImportError("the Torch-Pruning peer needs torch-pruning (pip install "
                          "torch-pruning; part of taugate[dev])") from exc
    torch.manual_seed(config.seed)
    model = copy.deepcopy(foundation).cpu().train()
    for p in model.parameters():
        p.requires_grad_(True)
    hidden = model.linears[:-1]
    ratios = {lin: 1 - k / lin.out_features for lin, k in zip(hidden, kept)}
    pruner = tp.pruner.MetaPruner(model, mode.train.x[:1], importance=tp.importance.TaylorImportance(),
                                  pruning_ratio_dict=ratios, ignored_layers=[model.linears[-1]])
    gen = torch.Generator().manual_seed(config.seed)
    idx = torch.randperm(len(mode.train), generator=gen)[: 256 * config.taylor_batches]
    model.zero_grad()
    for i in range(0, len(idx), 256):
        b = idx[i:i + 256]
        torch.nn.functional.cross_entropy(model(mode.train.x[b]), mode.train.y[b]).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    got = [lin.out_features for lin in model.linears[:-1]]
    if got != list(kept):
        raise RuntimeError(f"Torch-Pruning kept {got} units, expected {list(kept)}")
    for act, w in zip(model.acts, got):
        act.width = w
    model.config = BackboneConfig(model.config.input_dim, tuple(got), model.config.num_classes,
                                  model.config.input_mean, model.config.input_std)
    _fit(model, mode, config.finetune_epochs, config, device, progress, "torch-pruning finetune")
    return model


def scratch_mlp(widths: list[int], mode: ModeData, config: PeersConfig, device="cpu",
                progress: bool = False) -> MLP:
    """A freshly initialized MLP of hidden ``widths`` trained on the mode alone."""
    torch.manual_seed(config.seed)
    model = MLP(BackboneConfig(hidden=tuple(widths)))
    _fit(model, mode, config.scratch_epochs, config, device, progress, "scratch MLP")
    return model


def _fit(model: MLP, mode: ModeData, epochs: int, config: PeersConfig, device, progress, label):
    model.to(device)
    train(model, model.parameters(), mode.train, TrainConfig(epochs, lr=config.lr,
                                                             seed=config.seed),
          device=device, lr_scale=cosine, label=label, progress=progress)
    model.cpu().eval()


def n_params(model: HardenedModel) -> int:
    """Weights + biases of a hardened model (thresholds are a TauGate mode's, counted apart)."""
    return int(sum(layer.weight.size + layer.bias.size for layer in model.layers))


@dataclass
class Peer:
    """One model in the comparison: its graph, what it stores per mode, and where it came from."""

    name: str
    graph: bytes  # the ONNX model timed and evaluated
    macs: int
    stored_per_mode: int  # parameters a new mode adds to a deployment
    graph_params: int  # parameters inside its graph
    note: str = ""


def harden(model: MLP) -> HardenedModel:
    """The plain per-layer form of a peer (input normalization folded, no thresholds)."""
    return harden_mlp(model, {})


def peer_graph(model: HardenedModel, name: str, int8: bool = False) -> bytes:
    """The model's fp32 graph as a bundle would hold it, or its dynamic int8 variant."""
    from taugate.exporting.graph import build_graph
    from taugate.exporting.writer import with_metadata

    data = with_metadata(build_graph(model, name), name).SerializeToString()
    return quantize(data) if int8 else data


def accuracies(peers: list[Peer], tests: dict) -> dict:
    """peer name -> {test name: accuracy} with onnxruntime."""
    return {p.name: {t: onnx_accuracy(p.graph, x, y) for t, (x, y) in tests.items()}
            for p in peers}


def _correction_text(config) -> str:
    pool = getattr(config, "correction_pool", 1)
    return (f"a rank-{config.correction_rank} first-layer correction"
            + (f" on {pool}x{pool}-pooled inputs" if pool > 1 else ""))


@dataclass
class PeersResult:
    mode: str
    other: str
    rows: list  # dicts, one per model (see run_peers)
    machine: dict


def run_peers(run, mode_name: str, other_name: str, data, config: PeersConfig,
              timing, device="cpu", progress: bool = True) -> PeersResult:
    """Export the run's TauGate ``mode_name``, train the peers at its kept units, and measure
    everything in one process: accuracy on both modes, MACs, parameters, interleaved speedup
    against the dense fp32 model (``timing``: a :class:`taugate.timing.TimingConfig`)."""
    import os

    from taugate.exporting.specialize import prune_mode
    from taugate.timing import time_models
    from taugate.training.adapters import load_adapter, load_foundation
    from taugate.training.corrections import correction_size

    foundation, meta = load_foundation(os.path.join(run, "foundation"))
    adapter_ = load_adapter(os.path.join(run, "adapters", mode_name), foundation, meta["sha256"])
    mode, other = data.mode(adapter_.meta["mode"]["name"]), data.mode(other_name)
    # the chain MLP's compaction in numpy: the same units the exporter keeps (tests/test_pipeline)
    pruned = prune_mode(adapter_.method.harden(adapter_.model),
                        (mode.calibration.x.numpy(), mode.calibration.y.numpy()),
                        (mode.test.x.numpy(), mode.test.y.numpy()))
    dense = harden(foundation)
    small = pruned.model
    kept = small.widths
    # tau and gamma per unit, and a low-rank correction's factors on the kept units
    correction = correction_size(adapter_.model, kept[0])
    adapter = 2 * sum(pruned.unpruned.widths) + correction
    tp_model = harden(torch_pruned(foundation, kept, mode, config, device, progress))
    scratch = harden(scratch_mlp(kept, mode, config, device, progress))
    peers = [
        Peer("dense fp32", peer_graph(dense, "dense"), dense.macs, 0, n_params(dense),
             "one model for every mode"),
        Peer("dense int8", peer_graph(dense, "dense", int8=True), dense.macs, 0, n_params(dense),
             "one model for every mode"),
        Peer("taugate fp32", peer_graph(small, "taugate"), small.macs, adapter, n_params(small),
             "stores thresholds + gains per mode (shared backbone)"
             + (f" + {_correction_text(adapter_.method.config)}" if correction else "")),
        Peer("taugate int8", peer_graph(small, "taugate", int8=True), small.macs, adapter,
             n_params(small), "int8 variant of the same mode graph"),
        Peer("torch-pruning fp32", peer_graph(tp_model, "tp"), tp_model.macs, n_params(tp_model),
             n_params(tp_model), f"Taylor, {config.finetune_epochs} epochs fine-tuning, cosine"),
        Peer("torch-pruning int8", peer_graph(tp_model, "tp", int8=True), tp_model.macs,
             n_params(tp_model), n_params(tp_model), "int8 of the above"),
        Peer("scratch MLP fp32", peer_graph(scratch, "scratch"), scratch.macs, n_params(scratch),
             n_params(scratch), f"same shape, {config.scratch_epochs} epochs on the mode only"),
    ]
    tests = {"mode": _xy(mode.test), "other": _xy(other.test)}
    accs = accuracies(peers, tests)
    timed = time_models({p.name: p.graph for p in peers}, "dense fp32", timing)
    rows = []
    for p in peers:
        row = {"model": p.name, "acc_mode": accs[p.name]["mode"],
               "acc_other": accs[p.name]["other"], "stored_per_mode": p.stored_per_mode,
               "graph_params": p.graph_params, "macs": p.macs,
               "mac_ratio": dense.macs / p.macs, "units": "-".join(map(str, _widths(p, kept))),
               "note": p.note}
        for b in timing.batch_sizes:
            row[f"speedup_b{b}"] = timed.speedup(p.name, b)
        rows.append(row)
    return PeersResult(mode_name, other_name, rows, timed.machine)


def _widths(peer: Peer, kept) -> list:
    return ["dense"] if peer.name.startswith("dense") else list(kept)


def _xy(split) -> tuple[np.ndarray, np.ndarray]:
    return split.x.numpy(), split.y.numpy()
