"""The manifest's materialization steps (docs/bundle-v2.md, section 4): how a shared-layout
graph's initializers are rebuilt from the backbone and the mode's own file, parsed and checked
field by field. Standard library only; building them is taugate/bundle/materialize.py."""

from __future__ import annotations

from taugate.bundle.fields import fail, file_ref, get_field, is_int
from taugate.bundle.lowrank import parse_lowrank, with_lowrank
from taugate.bundle.schema import FileRef, MaterializeStep


def _scale_pair(p) -> bool:
    return isinstance(p, list) and len(p) == 2 and is_int(p[0]) and isinstance(p[1], str)


def _scale_ok(scale: list) -> bool:
    return _scale_pair(scale) or (0 < len(scale) <= 4 and all(_scale_pair(p) for p in scale))


def _once(memo: dict | None, raw, tag, make):
    """``make()`` once per parsed JSON value ``raw`` (and ``tag``) of one manifest: its parse
    makes equal short values one object (``loads_strict(share=True)``), so what is built from
    them is shared too, and nothing outlives the manifest. ``memo`` None: built each time."""
    if memo is None:
        return make()
    hit = memo.get((id(raw), tag))
    if hit is not None and hit[0] is raw:  # the memo holds raw: its id is not reused
        return hit[1]
    value = make()
    memo[(id(raw), tag)] = (raw, value)
    return value


def _scale_tuple(scale):
    if not scale:
        return None
    return tuple(scale) if _scale_pair(scale) else tuple(tuple(p) for p in scale)


_STEP_KEYS = {"name", "source", "tensor", "take", "scale", "add", "lowrank", "dtype", "shape"}


def parse_step(s, where: str, has_weights: bool, has_backbone: bool,
               memo: dict | None = None) -> MaterializeStep:
    """One step, checked field by field (``memo``: see :func:`_once`)."""
    return _once(memo, s, (has_weights, has_backbone),
                 lambda: _parse_step(s, where, has_weights, has_backbone, memo))


def _parse_step(s, where: str, has_weights: bool, has_backbone: bool, memo) -> MaterializeStep:
    if not isinstance(s, dict) or not set(s) <= _STEP_KEYS:
        unknown = sorted(set(s) - _STEP_KEYS) if isinstance(s, dict) else []
        newer = (f" (unknown {unknown}: a step of a newer taugate; upgrade taugate or "
                 f"re-export the bundle)") if unknown else ""
        raise fail(where, f"an object with keys from {sorted(_STEP_KEYS)}{newer}", s)
    name = get_field(s, "name", where, str, "a string")
    source = get_field(s, "source", where, str, "'backbone' or 'mode'")
    if source not in ("backbone", "mode") or (source == "backbone" and not has_backbone) \
            or (source == "mode" and not has_weights):
        raise fail(f"{where}.source", "'backbone' (needs the manifest's backbone) or 'mode' "
                    "(needs the entry's weights)", source)
    tensor = get_field(s, "tensor", where, str, "a tensor name")
    take = get_field(s, "take", where, list, "a list of [axis, index tensor]", optional=True) or []
    if not all(isinstance(t, list) and len(t) == 2 and is_int(t[0]) and isinstance(t[1], str)
               for t in take):
        raise fail(f"{where}.take", "a list of [axis >= 0, index tensor name]", take)
    scale = get_field(s, "scale", where, list, "[axis, vector name] or null", optional=True)
    if scale is not None and not _scale_ok(scale):
        raise fail(f"{where}.scale", "[axis >= 0, vector name], a list of 1 to 4 such pairs, "
                    "or null", scale)
    if (take or scale or s.get("add") is not None or s.get("lowrank") is not None) \
            and not has_weights:
        raise fail(where, "no take/scale/add/lowrank without the entry's weights file", s)
    add = get_field(s, "add", where, str, "a tensor name or null", optional=True)
    dtype = get_field(s, "dtype", where, str, "a dtype name such as 'float32'")
    shape = get_field(s, "shape", where, list, "a list of sizes")
    if not all(is_int(v) for v in shape):
        raise fail(f"{where}.shape", "a list of sizes >= 0", shape)
    takes = _once(memo, take, "take", lambda: tuple((a, n) for a, n in take)) if take else ()
    scales = _once(memo, scale, "scale", lambda: _scale_tuple(scale)) if scale else None
    step = MaterializeStep(name, source, tensor, takes, scales, add, dtype,
                           _once(memo, shape, "shape", lambda: tuple(shape)))
    if s.get("lowrank") is not None:  # taugate/bundle/lowrank.py
        return with_lowrank(step, parse_lowrank(s["lowrank"], where))
    return step


def parse_materialize(name: str, d: dict, where: str, has_backbone: bool,
                      memo: dict | None = None) -> tuple[FileRef | None, tuple | None]:
    weights = d.get("weights")
    weights = None if weights is None else file_ref(f"{name} weights", weights,
                                                     f"{where}.weights")
    steps = get_field(d, "materialize", where, list, "a list of steps or null", optional=True)
    if steps is None:
        return weights, None
    parsed = tuple(parse_step(s, f"{where}.materialize[{i}]", weights is not None, has_backbone,
                              memo) for i, s in enumerate(steps))
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        raise fail(f"{where}.materialize", "each initializer built once", names)
    return weights, parsed
