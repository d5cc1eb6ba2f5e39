"""Sites found on the model's traced graph (``torch.fx.symbolic_trace``'s tracer).

Tracing sees what forward hooks cannot: functional activations (``F.relu(x)``,
``torch.nn.functional.silu``, ``x.relu()``), the gated FFN's product ``act(gate(x)) * up(x)``
(SwiGLU/GeGLU, LLaMA's MLP) and a BatchNorm1d between a Linear and its activation. A site is a
chain in which every link has exactly one user, so its units can be removed exactly:

    producer Linear [-> BatchNorm1d] -> activation [* up Linear] [-> Dropout/Identity]
        -> consumer Linear

The convolutional form has output channels as units (one threshold and gain per channel):

    producer Conv2d [-> BatchNorm2d] -> activation [-> Dropout/Dropout2d/Identity] -> consumer Conv2d

(both with ``groups=1``: a depthwise conv's channels are not independent units). A Conv2d whose
channels also feed an addition (a residual connection) is not a site: its channels would have
to be pruned together with the other operand's, which taugate does not do; :func:`residual_convs`
names them so a ``--targets`` that asks for one is refused by name.

Activation modules (training/activations.py) are kept as leaves of the trace, so a gated
activation module of an adapted model is a site's activation, not traced through.
"""

from __future__ import annotations

import operator
import traceback
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn

from taugate.training.activations import MUL, kind_of_call, kind_of_module

_PASS = (nn.Dropout, nn.Dropout2d, nn.Identity)
_ADD = (operator.add, operator.iadd, torch.add)  # call_function targets of an addition


class TraceError(ValueError):
    """The model's forward() cannot be traced by torch.fx; the message names where and why."""


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return kind_of_module(m) is not None or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m) or type(m).__name__)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.stack.pop()


def _where(exc: BaseException) -> str:
    """``file.py:LINE (code)`` of the innermost frame outside torch: the user's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename.replace("\\", "/") and "taugate" not in f.filename]
    if not frames:
        return "an unknown line"
    f = frames[-1]
    name = f.filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{name}:{f.lineno} ({(f.line or '').strip()})"


def trace_graph(model: nn.Module) -> fx.Graph:
    """The traced graph of ``model``; :class:`TraceError` naming the module being traced and
    the line of forward() that stopped the tracer."""
    tracer = _Tracer()
    try:
        return tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ... by cause
        module = tracer.stack[-1] if tracer.stack else f"{type(model).__name__} (the model)"
        raise TraceError(
            f"torch.fx cannot trace {type(model).__name__}.forward(): in module {module!r} at "
            f"{_where(exc)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f". Functional activations (F.relu, F.silu, ...) are found only by tracing; make "
            f"that code traceable (no Python control flow on tensor values), or give each "
            f"hidden layer an activation module (nn.ReLU(), nn.SiLU(), ...): modules are found "
            f"without tracing") from None


def _sole_user(node: fx.Node, first_arg: bool = True) -> fx.Node | None:
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    if first_arg and (not user.args or user.args[0] is not node):
        return None
    return user


def functional_path(producer: str) -> str:
    """The module path a functional activation's gate gets in the adapted model."""
    return "taugate_act_" + producer.replace(".", "_")


class _Graph:
    def __init__(self, model: nn.Module, graph: fx.Graph):
        self.mods = dict(model.named_modules())
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def module(self, node: fx.Node | None, cls) -> nn.Module | None:
        if node is None or node.op != "call_module" or self.calls[node.target] != 1:
            return None
        m = self.mods.get(node.target)
        return m if isinstance(m, cls) else None

    def activation(self, node: fx.Node | None) -> tuple[str | None, bool]:
        """(kind, functional) of ``node``, (None, False) when it is no activation."""
        if node is None:
            return None, False
        if node.op == "call_module":
            m = self.module(node, nn.Module)
            return (kind_of_module(m) if m is not None else None), False
        return kind_of_call(node.op, node.target, node.args, node.kwargs), True

    def passed(self, node: fx.Node | None) -> fx.Node | None:
        while node is not None and (self.module(node, _PASS) is not None or (
                node.op == "call_function" and node.target is F.dropout)):
            node = _sole_user(node)
        return node


def traced_sites(model: nn.Module, graph: fx.Graph) -> list[dict]:
    """Every site of the traced ``graph``, in graph order, as dicts of module paths: producer,
    act, consumer, activation, functional, up, norm."""
    g = _Graph(model, graph)
    out = []
    for n in graph.nodes:
        prod = g.module(n, (nn.Linear, nn.Conv2d))
        if prod is None:
            continue
        conv = isinstance(prod, nn.Conv2d)
        if conv and prod.groups != 1:
            continue
        units = prod.out_channels if conv else prod.out_features
        node, norm = _sole_user(n), None
        bn = g.module(node, nn.BatchNorm2d if conv else nn.BatchNorm1d)
        if bn is not None and bn.num_features == units:
            norm, node = node.target, _sole_user(node)
        kind, functional = g.activation(node)
        if kind is None:
            continue
        act = functional_path(n.target) if functional else node.target
        nxt, up = _sole_user(node, first_arg=False), None
        if conv:
            cons_node = g.passed(nxt if nxt is not None and nxt.args and nxt.args[0] is node
                                 else None)
            cons = g.module(cons_node, nn.Conv2d)
            if cons is not None and cons.groups == 1 and cons.in_channels == units:
                out.append({"producer": n.target, "act": act, "consumer": cons_node.target,
                            "activation": kind, "functional": functional, "up": None,
                            "norm": norm, "conv": True})
            continue
        if nxt is not None and nxt.op in ("call_function", "call_method") and \
                nxt.target in (*MUL, "mul", "__mul__") and len(nxt.args) == 2 and not nxt.kwargs:
            other = nxt.args[1] if nxt.args[0] is node else nxt.args[0]
            up_mod = g.module(other, nn.Linear) if isinstance(other, fx.Node) else None
            if up_mod is None or up_mod.out_features != prod.out_features or \
                    _sole_user(other, first_arg=False) is not nxt or norm is not None:
                continue
            up, node = other.target, nxt
        cons_node = g.passed(_sole_user(node))
        cons = g.module(cons_node, nn.Linear)
        if cons is None or cons.in_features != prod.out_features:
            continue
        out.append({"producer": n.target, "act": act, "consumer": cons_node.target,
                    "activation": kind, "functional": functional, "up": up, "norm": norm,
                    "conv": False})
    return out


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD) or \
        (node.op == "call_method" and node.target in ("add", "add_", "__add__", "__iadd__"))


def residual_convs(model: nn.Module, graph: fx.Graph) -> list[str]:
    """Module paths of the Conv2d layers whose output channels reach an addition (a residual
    connection) directly or through a BatchNorm, an activation or a pass-through module."""
    mods = dict(model.named_modules())
    out = []
    for n in graph.nodes:
        if n.op != "call_module" or not isinstance(mods.get(n.target), nn.Conv2d):
            continue
        seen, frontier = set(), [n]
        while frontier:
            node = frontier.pop()
            for user in node.users:
                if _is_add(user):
                    out.append(n.target)
                    frontier = []
                    break
                m = mods.get(user.target) if user.op == "call_module" else None
                elementwise = isinstance(m, (nn.BatchNorm2d, *_PASS)) or \
                    (m is not None and kind_of_module(m) is not None) or \
                    kind_of_call(user.op, user.target, user.args, user.kwargs) is not None
                if elementwise and user not in seen:
                    seen.add(user)
                    frontier.append(user)
    return list(dict.fromkeys(out))
