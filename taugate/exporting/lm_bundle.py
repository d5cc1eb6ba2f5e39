"""``write_lm_bundle``: a decoder and its modes -> a language-model bundle (format_version 3).

Per model (``dense`` and each mode) one self-contained decode graph per precision
(exporting/lm_graph.py): ``dense.onnx``, ``dense.int8.onnx``, ``modes/<mode>.onnx``,
``modes/<mode>.int8.onnx``. Every graph is checked before it is written: the fp32 graph's step
logits against its torch model (tight), the int8 graph's against the same (loose), the operator
allowlist of format 3 (bundle/graph_check.py), and each mode's greedy tokens on a fixed prompt
against the torch hard-gated mode (``greedy_match`` in the manifest). The directory appears in
one rename (bundle/atomic.py). docs/bundle-format.md describes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from taugate import __version__
from taugate.bundle.atomic import atomic_directory, write_bytes, write_text
from taugate.bundle.graph_check import check_model
from taugate.bundle.lm import KIND, LM_FORMAT_VERSION, parse_lm_manifest
from taugate.bundle.names import DENSE, check_mode_name
from taugate.bundle.safe_json import loads_strict
from taugate.bundle.schema import BUNDLE_FORMAT, PRECISIONS
from taugate.exporting.compaction import ParityError
from taugate.exporting.lm_decode import compact_lm, decoder_weights, ffn_macs, torch_greedy
from taugate.exporting.lm_graph import build_decoder
from taugate.exporting.lm_parity import check_step_parity, decoder_for
from taugate.exporting.quantize import DEFAULT_SCHEME, quantize

log = logging.getLogger(__name__)

FP32_ATOL = 1e-3  # step logits, fp32 graph vs torch (float rounding only)
INT8_RTOL = 0.5  # step logits, int8 graph vs torch: at most this many logit standard deviations
GREEDY_PROMPT = b"class Foo:\n    def __init__(self"  # continued with code, not blanks
GREEDY_TOKENS = 32


def _graph_bytes(name: str, model: nn.Module, precision: str, ids: torch.Tensor) -> tuple[bytes,
                                                                                       float]:
    proto = build_decoder(decoder_weights(model), name)
    data = proto.SerializeToString()
    if precision == "fp32":
        return data, check_step_parity(name, data, model, ids, FP32_ATOL)
    q = quantize(data, DEFAULT_SCHEME, weights_only=True)
    with torch.no_grad():
        spread = float(model.step(ids)[0].std())
    return q, check_step_parity(f"{name} ({precision})", q, model, ids, INT8_RTOL * spread)


def _entry(root: Path, stem: str, name: str, model: nn.Module, precisions, ids) -> dict:
    graphs, diffs = {}, {}
    for precision in precisions:
        data, diff = _graph_bytes(name, model, precision, ids)
        rel = f"{stem}.onnx" if precision == "fp32" else f"{stem}.{precision}.onnx"
        check_model(data, LM_FORMAT_VERSION, rel)
        write_bytes(root / rel, data)
        graphs[precision] = {"file": rel, "sha256": hashlib.sha256(data).hexdigest()}
        diffs[precision] = diff
    return {"graphs": graphs, "step_logit_diff": diffs}


def write_lm_bundle(foundation: nn.Module, modes: dict, out: str | Path,
                    precisions=("fp32", "int8"), calibration=None, *, overwrite: bool = False,
                    greedy_prompt: bytes = GREEDY_PROMPT, greedy_tokens: int = GREEDY_TOKENS
                    ) -> Path:
    """Write the LM bundle of ``foundation`` (a TinyLlama-layout decoder, dense) and ``modes``
    (name -> the foundation wrapped by the taugate method, or a GatedSpec) at ``out``.

    ``precisions``: "fp32" (always) and optionally "int8" (dynamic per-channel int8 weights of
    every weight MatMul). ``calibration``: token ids ``[N, T]``; a unit that fires on none of
    them is removed (None: only units with gain 0 are). Returns the bundle's path; raises
    :class:`~taugate.exporting.compaction.ParityError` when a graph does not compute what its
    torch model computes, and leaves nothing written on any error.
    """
    precisions = tuple(precisions)
    if "fp32" not in precisions or set(precisions) - set(PRECISIONS):
        raise ValueError(f"precisions: expected 'fp32' and optionally others of "
                         f"{list(PRECISIONS)}, got {list(precisions)}")
    if not isinstance(modes, dict) or not modes:
        raise ValueError("modes: expected a dict of at least one mode name -> mode model")
    for name in modes:
        check_mode_name(name)
    cfg = foundation.cfg
    foundation = foundation.eval()
    prompt = torch.tensor(list(bytes(greedy_prompt)), dtype=torch.long)
    if not (0 < len(prompt) and len(prompt) + greedy_tokens <= cfg.context):
        raise ValueError(f"greedy_prompt: expected 1..{cfg.context - greedy_tokens} bytes, got "
                         f"{len(prompt)}")
    ids = prompt.view(1, -1)
    dense_units = [cfg.ffn] * cfg.layers
    dense_macs = ffn_macs(dense_units, cfg.dim)
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        dense = _entry(tmp, "dense", DENSE, foundation, precisions, ids)
        dense.update(ffn_units=dense_units, ffn_macs=dense_macs)
        entries = {}
        for name, mode in modes.items():
            log.info("LM mode %s: compacting and lowering", name)
            c = compact_lm(name, foundation, mode, calibration)
            entry = _entry(tmp, f"modes/{name}", name, c.small, precisions, ids)
            macs = ffn_macs(c.units_kept, cfg.dim)
            entry.update(units_kept=c.units_kept, units_total=c.units_total, ffn_macs=macs,
                         ffn_mac_ratio=dense_macs / max(macs, 1),
                         greedy_match=_greedy_match(name, mode, c.small, tmp / entry["graphs"][
                             "fp32"]["file"], prompt, greedy_tokens))
            entries[name] = entry
        manifest = {
            "format": BUNDLE_FORMAT, "format_version": LM_FORMAT_VERSION, "kind": KIND,
            "created_by": f"taugate {__version__}",
            "lm": {"vocab": cfg.vocab, "dim": cfg.dim, "layers": cfg.layers, "heads": cfg.heads,
                   "context": cfg.context, "ffn": cfg.ffn, "tokenizer": "bytes"},
            "quantization": DEFAULT_SCHEME if "int8" in precisions else None,
            "greedy_prompt": bytes(greedy_prompt).decode("latin-1"),
            "dense": dense, "modes": entries,
        }
        text = json.dumps(manifest, indent=1)
        parse_lm_manifest(loads_strict(text))  # what the runtime reads, or the export fails
        write_text(tmp / "manifest.json", text)
    return out


def _greedy_match(name: str, mode, small: nn.Module, graph: Path, prompt: torch.Tensor,
                  tokens: int) -> bool:
    """Greedy tokens of the fp32 graph == those of the torch hard-gated mode (the wrapped
    model with hard gates, else the compacted one). The compacted model must match the graph
    exactly (else: an exporter bug, :class:`ParityError`); the uncompacted mode may differ only
    where calibration pruned a unit that fires on the prompt."""
    got = decoder_for(graph.read_bytes(), small).greedy(prompt.numpy(), tokens)
    if torch_greedy(small, prompt, tokens) != got:
        raise ParityError(f"{name}: greedy tokens of the decode graph differ from the "
                          f"compacted torch model's")
    if not isinstance(mode, nn.Module):
        return True
    import copy

    from taugate.training.gating import clear_gates, set_hard

    clear_gates(mode)
    hard = set_hard(copy.deepcopy(mode), True).eval()
    ref = torch_greedy(hard, prompt, tokens)
    clear_gates(hard)
    if ref != got:
        log.warning("%s: greedy tokens of the graph differ from the hard-gated torch mode's "
                    "(a unit pruned on the calibration tokens fires on the prompt)", name)
    return ref == got

