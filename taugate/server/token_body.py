"""Token inputs in request bodies (bundles whose input spec has a ``{"kind": "tokens"}`` layout):
taugate's JSON API takes ``{"inputs": {"input_ids": [[...]], "attention_mask": [[...]]}}`` or the
packed ``{"inputs": [[[ids], [mask]], ...]}``; the Open Inference Protocol two INT64 tensors,
``input_ids`` and ``attention_mask``, each ``[N, length]``.

Parsing here only turns JSON into int64 arrays (integers only: ``1.5`` is refused, not
truncated); the values (ids in ``[0, vocab)``, a 0/1 mask, the length) are checked by the
runtime's own :class:`taugate.runtime.tokens.TokenInputChecker`, as for every other input.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime.tokens import IDS, MASK
from taugate.server import strict_json

FIELDS = (IDS, MASK)
_BadRequest = strict_json.JsonRefused


def is_tokens(spec) -> bool:
    """Whether a manifest input spec takes token ids and an attention mask."""
    layout = getattr(spec, "layout", None)
    return bool(layout) and layout.get("kind") == "tokens"


def _as_int64(value, where: str, depth: int) -> np.ndarray:
    if not isinstance(value, list) or not strict_json.numbers_only(value, max_depth=depth):
        raise _BadRequest(422, "invalid input",
                          f"{where}: expected lists of JSON integers only (no strings, booleans "
                          f"or null), at most {depth} lists deep")
    try:
        return strict_json.as_array(value, np.int64, where)
    except (ValueError, TypeError):
        raise _BadRequest(422, "invalid input",
                          f"{where}: expected equal-length lists of integers") from None


def parse_token_inputs(inputs) -> np.ndarray | dict:
    """The JSON API's ``inputs`` for a tokens bundle: ``{"input_ids": [[...]],
    "attention_mask": [[...]]}`` (the mask optional: all ones) -> a dict of int64 arrays, or a
    packed ``[N, 2, L]`` list -> an int64 array; :class:`strict_json.JsonRefused` (422) else."""
    if isinstance(inputs, dict):
        unknown = sorted(k for k in inputs if k not in FIELDS)
        if IDS not in inputs or unknown:
            got = ", ".join(repr(k[:40]) for k in list(inputs)[:5]) or "none"
            raise _BadRequest(422, "invalid input",
                              f"inputs: expected the keys {IDS!r} and optionally {MASK!r}, "
                              f"got the keys {got}")
        return {k: _as_int64(v, f"inputs.{k}", 2) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return _as_int64(inputs, "inputs", 3)
    raise _BadRequest(422, "invalid request body",
                      f"inputs: expected {{{IDS!r}: [[ids]], {MASK!r}: [[0/1]]}} or a list of "
                      f"packed [2, length] samples, got {type(inputs).__name__}")
