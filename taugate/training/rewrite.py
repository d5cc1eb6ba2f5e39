"""The adapted copy of a model, made gateable at every site: BatchNorm folded, functional
activations turned into modules.

- A site with ``norm`` (``Linear -> BatchNorm1d -> act`` or ``Conv2d -> BatchNorm2d -> act``):
  the eval-mode BatchNorm is folded into the producer (``W' = W * s`` along output units, ``b' = (b - mean) * s + beta``, ``s = weight /
  sqrt(var + eps)``) and the BatchNorm becomes an ``nn.Identity``. Exact in eval mode, and the
  BatchNorm's running statistics can no longer move while the gates train. Export folds the
  foundation the same way (exporting/norms.py), so the bundle's graphs match the trained model.
- A site with ``functional`` (``F.silu(self.gate(x))``): the model is traced with torch.fx
  (training/traced.py) and the call is replaced by a module at ``site.act``, which the method
  then replaces with its gated activation. The result is an ``fx.GraphModule`` whose weights
  are the original tensors (same state-dict names; the foundation itself is never touched).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from taugate.training.activations import module_for
from taugate.training.traced import trace_graph


@torch.no_grad()
def fold_batchnorm(linear: nn.Linear | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d
                   ) -> nn.Linear | nn.Conv2d:
    """A new Linear (or Conv2d) computing ``bn(linear(x))`` in eval mode (with a bias even when
    ``linear`` had none)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{type(bn).__name__} without running statistics "
                         f"(track_running_stats=False) normalizes with each batch's own "
                         f"statistics: it cannot be folded")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    bias = linear.bias if linear.bias is not None else torch.zeros_like(scale)
    out = copy.deepcopy(linear)  # same kind, kernel, stride, padding, ...
    out.bias = nn.Parameter(torch.zeros_like(scale))
    out.weight.copy_(linear.weight * scale.view(-1, *[1] * (linear.weight.dim() - 1)))
    out.bias.copy_((bias - bn.running_mean) * scale + shift)
    return out.to(linear.weight.dtype).requires_grad_(linear.weight.requires_grad)


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def fold_norms(model: nn.Module, pairs) -> nn.Module:
    """``model`` (in place) with each ``(producer, norm)`` path pair folded."""
    for producer, norm in pairs:
        _set(model, producer, fold_batchnorm(model.get_submodule(producer),
                                             model.get_submodule(norm)))
        _set(model, norm, nn.Identity())
    return model


def _node_of(graph: fx.Graph, path: str) -> fx.Node:
    for n in graph.nodes:
        if n.op == "call_module" and n.target == path:
            return n
    raise ValueError(f"module {path!r} is not called in the traced graph")


def with_act_modules(model: nn.Module, sites) -> nn.Module:
    """``model`` with every functional site's activation call replaced by a module at its
    ``act`` path (a GraphModule; ``model`` itself when no site is functional)."""
    functional = [s for s in sites if s.functional]
    if not functional:
        return model
    graph = trace_graph(model)
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    for s in functional:
        node = next(iter(_node_of(gm.graph, s.producer).users))
        if s.norm is not None:  # the folded norm, now an Identity call
            node = next(iter(node.users))
        gm.add_submodule(s.act, module_for(s.activation))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(s.act, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.recompile()
    return gm


def gateable(model: nn.Module, sites) -> nn.Module:
    """The copy a method adapts: norms folded, functional activations as modules."""
    model = fold_norms(model, [(s.producer, s.norm) for s in sites if s.norm is not None])
    return with_act_modules(model, sites)
