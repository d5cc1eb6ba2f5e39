"""Method options: nested config dataclasses built from a plain dict, flat keys accepted.

A method's ``Config`` may hold nested dataclasses (``TauGateConfig.sparsity``,
``.retune``). :func:`build_config` accepts the nested form (``{"retune": {"epochs": 4}}``, what
adapters store) and the flat names the CLI, the recipes and older adapters use
(``{"retune_epochs": 4}``), declared once per config class in ``FLAT``. An unknown key is a
one-line error naming every valid key.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def flat_keys(cls) -> list[str]:
    """Every key :func:`build_config` accepts for ``cls`` (fields and flat aliases)."""
    keys = [f.name for f in dataclasses.fields(cls)]
    return keys + [k for k in getattr(cls, "FLAT", {}) if k not in keys]


def _is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def build_config(cls, values: dict | None, owner: str = "method"):
    """``cls(**values)`` with nested dataclasses built from dicts and flat aliases moved into
    them; unknown keys raise ``ValueError`` naming the valid ones."""
    values = dict(values or {})
    flat = getattr(cls, "FLAT", {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields and k not in flat]
    if unknown:
        raise ValueError(f"{owner}: unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(flat_keys(cls))}")
    nested: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in fields:
            kwargs[key] = value
        else:
            group, name = flat[key]
            nested.setdefault(group, {})[name] = value
    for name in fields:
        sub = _sub_type(cls, name)
        if sub is None:
            continue
        given = kwargs.get(name)
        if isinstance(given, sub) and name not in nested:
            continue
        merged = dict(dataclasses.asdict(given) if isinstance(given, sub) else (given or {}))
        merged.update(nested.get(name, {}))
        kwargs[name] = build_config(sub, merged, f"{owner} {name}")
    return cls(**kwargs)


def _sub_type(cls, name: str):
    """The dataclass type of field ``name`` when it is a nested config (from its default)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING and _is_config(f.default_factory):
        return f.default_factory
    return None
