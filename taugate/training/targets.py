"""Which units get tau and gamma: target ``nn.Linear`` layers by module path.

A *site* is a triple (producer Linear, unit-wise activation, consumer Linear): the producer's
output units go through the activation (ReLU, GELU exact or tanh, SiLU, Mish, LeakyReLU: a
module or a functional call; training/activations.py), optionally through a Dropout or
Identity, straight into the consumer. Two extensions: a gated FFN (SwiGLU/GeGLU,
``down(act(gate(x)) * up(x))``) is a site of ``gate`` whose units also remove ``up``'s rows,
and a BatchNorm1d between the producer and its activation is folded into the producer
(training/rewrite.py). That covers an ``nn.Sequential`` MLP of any depth, the paper's MLP, the
FFN of a transformer block and LLaMA's MLP. Convolutions are sites too, with output channels
as units: ``Conv2d -> [BatchNorm2d] -> act -> Conv2d`` (training/traced.py; a conv whose
channels feed a residual addition is refused by name).

Sites are found on the graph torch.fx traces (training/traced.py); a model whose forward()
cannot be traced falls back to running one example batch with forward hooks and following the
exact tensor objects from module to module (activation modules only). A producer whose output
is reshaped, added to or used twice before the consumer is not a site (its units could not be
removed exactly).

``--targets`` follows PEFT's ``target_modules`` habit: a comma-separated list of exact module
paths or regular expressions (``re.fullmatch``) over the producers' paths; default: every site.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from taugate.training.activations import kind_of_module
from taugate.training.traced import TraceError, residual_convs, trace_graph, traced_sites

log = logging.getLogger(__name__)

#: modules a site's activated units may pass through on their way to the consumer
_PASS_THROUGH = (nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class Site:
    """One gated target: the producer's ``units`` output units feed ``consumer`` through
    ``activation`` (the module at path ``act``)."""

    producer: str  # module path of the target nn.Linear
    act: str  # module path of the activation module (replaced by a gated one when adapting)
    consumer: str  # module path of the nn.Linear that consumes the activated units
    activation: str  # a kind of training/activations.py: "relu", "gelu", "silu", ...
    in_features: int  # the producer's fan-in
    units: int  # the producer's output units (= the consumer's fan-in)
    out_features: int  # the consumer's fan-out
    tokens: int = 1  # rows each sample contributes to the producer (ViT: tokens per image)
    functional: bool = False  # the activation is a call in forward(): ``act`` is the path its
    #   gate module gets in the adapted (traced) model
    up: str | None = None  # gated FFN: the Linear multiplied with act(producer) (its rows go too)
    norm: str | None = None  # the BatchNorm1d/2d between producer and activation (folded)
    conv: bool = False  # Conv2d producer and consumer: units are channels, ``tokens`` positions

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Site:
        return cls(**d)


def activation_kind(module: nn.Module) -> str | None:
    """The activation kind of ``module`` (training/activations.py), or None."""
    return kind_of_module(module)


@dataclass
class _Call:
    path: str
    module: nn.Module
    inp: object
    out: object


def trace_calls(model: nn.Module, example: torch.Tensor) -> list[_Call]:
    """Every leaf-module call of one forward pass of ``example`` (eval mode, no grad), in order."""
    calls: list[_Call] = []
    handles = []
    for path, mod in model.named_modules():
        if path and not any(True for _ in mod.children()):
            def hook(m, inp, out, path=path):
                calls.append(_Call(path, m, inp[0] if len(inp) == 1 else None, out))
            handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _tokens(out: torch.Tensor, batch: int, units: int) -> int:
    return max(int(out.numel()) // max(batch * units, 1), 1)


def find_sites(model: nn.Module, example: torch.Tensor) -> list[Site]:
    """Every site of ``model``, in forward order: on its torch.fx graph, or (a forward() fx
    cannot trace) with forward hooks, which find activation modules only. A model that knows
    its own sites (``known_sites(example)``: the Hugging Face wrapper, families/hf.py) says."""
    known = getattr(model, "known_sites", None)
    if callable(known):
        return list(known(example))
    try:
        graph = trace_graph(model)
    except TraceError as exc:
        sites = _hooked_sites(model, example)
        if not sites:
            raise
        log.info("%s; sites found with forward hooks instead", exc)
        return sites
    found = traced_sites(model, graph)
    batch = int(example.shape[0])
    rows = {c.path: _tokens(c.out, batch, _dims(c.module)[1])
            for c in trace_calls(model, example) if _dims(c.module) is not None}
    sites = []
    for f in found:
        prod, cons = get_module(model, f["producer"]), get_module(model, f["consumer"])
        if f["producer"] not in rows or (f["norm"] and not f["conv"] and rows[f["producer"]] != 1):
            continue  # not called on this input, or a BatchNorm1d over tokens (another axis)
        (fan_in, units), (_, fan_out) = _dims(prod), _dims(cons)
        sites.append(Site(f["producer"], f["act"], f["consumer"], f["activation"], fan_in,
                          units, fan_out, rows[f["producer"]], f["functional"], f["up"],
                          f["norm"], f["conv"]))
    return sites


def _dims(m: nn.Module) -> tuple[int, int] | None:
    """(inputs, outputs) of a Linear (features) or Conv2d (channels), else None."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    return None


def _hooked_sites(model: nn.Module, example: torch.Tensor) -> list[Site]:
    calls = trace_calls(model, example)
    batch = int(example.shape[0])
    act_users: dict[str, int] = {}
    for c in calls:
        if activation_kind(c.module) is not None:
            act_users[c.path] = act_users.get(c.path, 0) + 1
    sites, seen = [], set()
    for i, c in enumerate(calls):
        if not isinstance(c.module, nn.Linear) or c.path in seen:
            continue
        site = _site_at(calls, i, batch, act_users)
        if site is not None:
            sites.append(site)
            seen.add(c.path)
    return sites


def _site_at(calls: list[_Call], i: int, batch: int, act_users: dict[str, int]) -> Site | None:
    prod = calls[i]
    if i + 1 >= len(calls):
        return None
    act = calls[i + 1]
    kind = activation_kind(act.module)
    if kind is None or act.inp is not prod.out or act_users.get(act.path, 0) != 1:
        return None
    t, j = act.out, i + 2
    while j < len(calls) and isinstance(calls[j].module, _PASS_THROUGH) and calls[j].inp is t:
        t, j = calls[j].out, j + 1
    if j >= len(calls) or not isinstance(calls[j].module, nn.Linear) or calls[j].inp is not t:
        return None
    cons = calls[j]
    return Site(producer=prod.path, act=act.path, consumer=cons.path, activation=kind,
                in_features=prod.module.in_features, units=prod.module.out_features,
                out_features=cons.module.out_features,
                tokens=_tokens(prod.out, batch, prod.module.out_features))


def parse_patterns(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``"a,b"`` or a list -> a tuple of patterns; None/empty -> None (every site)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    items = tuple(s.strip() for s in items if s.strip())
    for p in items:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"--targets: {p!r} is not a valid regular expression ({exc})") from None
    return items or None


def select_sites(model: nn.Module, sites: list[Site], patterns) -> list[Site]:
    """The sites whose producer path matches one of ``patterns`` (exact or ``re.fullmatch``).

    A pattern that matches an ``nn.Linear`` without an identifiable consumer, or that matches
    nothing, is an error naming what was found."""
    patterns = parse_patterns(patterns)
    if patterns is None:
        if not sites:
            raise ValueError(
                f"targets: found no nn.Linear in {type(model).__name__} whose output goes "
                f"through a unit-wise activation (ReLU, GELU, SiLU, Mish, LeakyReLU: a module or "
                f"an F.* call; optionally after a BatchNorm1d, or times an 'up' Linear as in "
                f"SwiGLU) straight into another nn.Linear. Not gated: a LayerNorm/RMSNorm or an "
                f"addition between them (units that feed a norm or a residual cannot be removed "
                f"on their own), an activation module used twice (give each layer its own); "
                f"convolutions are gated as Conv2d -> [BatchNorm2d] -> activation -> Conv2d; the "
                f"model's Linear/Conv2d layers: "
                f"{', '.join(n for n, m in model.named_modules() if _dims(m)) or '(none)'}")
        return list(sites)
    linears = [n for n, m in model.named_modules() if _dims(m) is not None]
    by_path = {s.producer: s for s in sites}
    chosen: list[Site] = []
    for p in patterns:
        hits = [n for n in linears if n == p or re.fullmatch(p, n)]
        if not hits:
            raise ValueError(f"--targets: {p!r} matches no nn.Linear or nn.Conv2d module path; "
                             f"the model's Linear/Conv2d layers are: "
                             f"{', '.join(linears) or '(none)'}")
        for n in hits:
            if n not in by_path and n in _residual(model):
                raise ValueError(
                    f"--targets: {n!r} (matched by {p!r}) is a Conv2d whose output channels "
                    f"feed a residual addition: its channels cannot be removed without the "
                    f"other operand's, so taugate does not gate it; leave it out of --targets. "
                    f"Layers that qualify: {', '.join(by_path) or '(none)'}")
            if n not in by_path:
                raise ValueError(
                    f"--targets: {n!r} (matched by {p!r}) has no consumer taugate can identify: "
                    f"its output must go through a unit-wise activation (its own module or an F.* "
                    f"call, used once) directly into another nn.Linear, with nothing that mixes "
                    f"units (a norm, an addition) between them. Layers that qualify: "
                    f"{', '.join(by_path) or '(none)'}")
            if by_path[n] not in chosen:
                chosen.append(by_path[n])
    return [s for s in sites if s in chosen]  # forward order


def _residual(model: nn.Module) -> list[str]:
    if callable(getattr(model, "known_sites", None)):
        return []  # its sites come from a table of Linear layouts, not from a graph
    try:
        return residual_convs(model, trace_graph(model))
    except TraceError:
        return []


def get_module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"module path {path!r} not found in {type(model).__name__}") from None


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at ``path`` (works inside Sequential/ModuleList too)."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


@dataclass(frozen=True)
class Targets:
    """The chosen sites plus every Linear's and Conv2d's shape, so MACs and unit costs come from
    the model."""

    sites: tuple[Site, ...]
    linears: dict  # module path -> (rows per sample, in, out[, MACs per in x out pair]):
    #   a Linear (rows: tokens; last: 1) or a Conv2d (rows: output positions, in: channels per
    #   group, out: channels, last: kernel area)

    def to_dict(self) -> dict:
        return {"sites": [s.to_dict() for s in self.sites],
                "linears": {k: list(v) for k, v in self.linears.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Targets:
        return cls(tuple(Site.from_dict(s) for s in d["sites"]),
                   {k: tuple(int(x) for x in v) for k, v in d["linears"].items()})

    @property
    def producers(self) -> list[str]:
        return [s.producer for s in self.sites]

    def macs(self, kept: dict[str, int] | None = None) -> int:
        """MACs per sample of every Linear, with ``kept[producer]`` units left at each site
        (its rows of the producer and columns of the consumer removed); dense when None."""
        kept = kept or {}
        ins = {s.consumer: kept.get(s.producer, s.units) for s in self.sites}
        outs = {s.producer: kept.get(s.producer, s.units) for s in self.sites}
        outs.update({s.up: kept.get(s.producer, s.units) for s in self.sites if s.up})
        return int(sum(rows * ins.get(p, i) * outs.get(p, o) * (k[0] if k else 1)
                       for p, (rows, i, o, *k) in self.linears.items()))

    def _per_pair(self, path: str, rows: int) -> int:
        """MACs per (input, output) pair of layer ``path``: rows times kernel area."""
        entry = self.linears.get(path)
        if entry is None:
            return rows
        return int(entry[0]) * (int(entry[3]) if len(entry) > 3 else 1)

    def unit_cost(self, site: Site, kept: dict[str, int] | None = None) -> int:
        """MACs one unit of ``site`` costs now: its producer row (and up's, in a gated FFN)
        and its consumer column."""
        kept = kept or {}
        feeding = {s.consumer: s.producer for s in self.sites}
        fan_in = kept.get(feeding.get(site.producer, ""), site.in_features)
        fan_out = kept.get(site.consumer, site.out_features) if site.consumer in self.producers \
            else site.out_features
        return (self._per_pair(site.producer, site.tokens) * fan_in * (2 if site.up else 1)
                + self._per_pair(site.consumer, site.tokens) * fan_out)

    def unit_costs(self) -> list[torch.Tensor]:
        """Per site, each unit's dense MAC cost relative to the mean gated unit (mean = 1)."""
        raw = [float(self._per_pair(s.producer, s.tokens) * s.in_features * (2 if s.up else 1)
                     + self._per_pair(s.consumer, s.tokens) * s.out_features)
               for s in self.sites]
        units = [s.units for s in self.sites]
        mean = sum(c * w for c, w in zip(raw, units)) / sum(units)
        return [torch.full((w,), c / mean) for c, w in zip(raw, units)]


def resolve_targets(model: nn.Module, example: torch.Tensor, patterns=None) -> Targets:
    """Find the sites of ``model`` on ``example`` and keep those ``patterns`` name."""
    sites = select_sites(model, find_sites(model, example), patterns)
    batch = int(example.shape[0])
    linears = {}
    for c in trace_calls(model, example):
        if isinstance(c.module, nn.Linear) and c.path not in linears:
            m = c.module
            linears[c.path] = (_tokens(c.out, batch, m.out_features), m.in_features, m.out_features)
        elif isinstance(c.module, nn.Conv2d) and c.path not in linears:
            m = c.module
            linears[c.path] = (_tokens(c.out, batch, m.out_channels), m.in_channels // m.groups,
                               m.out_channels, m.kernel_size[0] * m.kernel_size[1])
    return Targets(tuple(sites), linears)
