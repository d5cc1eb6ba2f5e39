"""The language-model walk-through: pretrain a byte-level TinyLlama on two domains that ship
with Python (the stdlib's code, pydoc's prose), train one TauGate mode per domain, and
measure each mode against the dense frozen model: held-out perplexity, FFN MACs, and, from
its ONNX decode bundle, decode tokens/s and greedy agreement.

Every stage resumes: the foundation from its checkpoint, a mode from its saved adapter.
Writes ``OUT/results.json`` (top-level ``"modes"``: per domain ``perplexity``,
``dense_perplexity``, ``frozen_perplexity``, ``ffn_mac_ratio``, ``tokens_per_s``,
``dense_tokens_per_s``, ``greedy_match``).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from taugate.bundle.atomic import write_text

PROMPT = b"class Foo:\n    def __init__(self"  # a continuation of code, not of blanks
NEW_TOKENS = 32
PRECISIONS = ("fp32", "int8")
DENSE_MODE = "dense"  # the bundle's mode name for the uncompacted foundation


@dataclass(frozen=True)
class Size:
    """Everything a walk-through size fixes (kept as plain dicts until torch is imported)."""

    lm: dict
    pretrain: dict
    mode: dict
    caps: dict = field(default_factory=lambda: {"code": 4_000_000, "prose": 1_000_000})
    eval_tokens: int = 65_536  # held-out bytes each perplexity is measured on
    decode_tokens: int = 64  # new tokens per decode-speed measurement


SIZES = {
    # seconds: for tests
    "toy": Size(lm=dict(dim=32, heads=2, layers=2, ffn=128, context=64),
                pretrain=dict(steps=30, batch_size=4, seq_len=64, warmup=5, checkpoint_every=10),
                mode=dict(sparse_steps=10, retune_steps=10, batch_size=4, seq_len=64,
                          importance_windows=4),
                caps={"code": 100_000, "prose": 50_000}, eval_tokens=2048, decode_tokens=8),
    # a reduced walk-through for a loaded machine (about a fifth of the default's compute)
    "small": Size(lm=dict(dim=256, heads=4, layers=4, ffn=1024, context=256),
                  pretrain=dict(steps=400, batch_size=8, seq_len=128, warmup=30,
                                checkpoint_every=50),
                  mode=dict(sparse_steps=80, retune_steps=240, batch_size=8, seq_len=128,
                            distill=0.5),
                  eval_tokens=16_384),
    # the walk-through: an FFN 8x the width, ~82% of batch-1 decode MACs (docs/lm.md); its
    # modes keep a quarter of the FFN MACs, with the retune and correction that needs
    "default": Size(lm=dict(dim=256, heads=4, layers=4, ffn=2048, context=256),
                    pretrain=dict(steps=600, batch_size=8, seq_len=256, warmup=50,
                                  checkpoint_every=50),
                    mode=dict(sparse_steps=60, retune_steps=480, batch_size=8, seq_len=256,
                              distill=0.5, target_mac_ratio=4.0, correction_rank=16)),
    # the earlier walk-through: an FFN 4x the width (~71% of decode MACs); its int8 decode
    # stays under 1.8x dense at 3x fewer FFN MACs (docs/lm.md, "The narrow shape")
    "narrow": Size(lm=dict(dim=384, heads=6, layers=4, ffn=1536, context=256),
                   pretrain=dict(steps=600, batch_size=8, seq_len=256, warmup=50,
                                 checkpoint_every=50),
                   mode=dict(sparse_steps=60, retune_steps=240, batch_size=8, seq_len=256,
                             distill=0.5)),
}


@contextmanager
def _threads(n: int | None):
    """torch's intra-op threads for the block (on a shared machine 1 often beats 2)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_measures(foundation, modes: dict, out: Path, decode_tokens: int,
                  rounds: int = 5, router_texts: dict | None = None) -> dict:
    """Export the dense and per-mode decode graphs (fp32 and int8) into ``out/bundle`` and
    measure them side by side (``router_texts``: mode -> its domain's training text, for the
    bundle's prompt router): per mode the fields of :func:`decode_results` (batch-1
    tokens/s, time to first token, greedy agreement of the torch hard-gated mode and its
    graph) plus batch-8 tokens/s; the timing's load averages under ``"_timing"``."""
    from taugate.exporting.lm_bundle import write_lm_bundle
    from taugate.runtime.lm_speed import compare_decode_speed, decode_results

    bundle = write_lm_bundle(foundation, modes, out / "bundle", precisions=PRECISIONS,
                             overwrite=True, greedy_prompt=PROMPT, greedy_tokens=NEW_TOKENS,
                             router_texts=router_texts)
    timing = dict(prompt=PROMPT, new_tokens=decode_tokens, rounds=rounds)
    results = decode_results(bundle, precisions=PRECISIONS, **timing)
    batch8 = compare_decode_speed(bundle, precisions=PRECISIONS, batch=8, **timing)["models"]
    for name, row in results.items():
        if name in modes:
            row["tokens_per_s_batch8"] = {p: v["tokens_per_s"] for p, v in batch8[name].items()}
            row["dense_tokens_per_s_batch8"] = {
                p: v["tokens_per_s"] for p, v in batch8[DENSE_MODE].items()}
    return results


def run(out: str | Path = "out/lm", size: str = "default", progress: bool = True,
        threads: int | None = None, export: bool = True) -> dict:
    """The whole walk-through at ``size`` (``toy``, ``small``, ``default`` or ``narrow``); returns and
    writes ``out/results.json``. ``threads``: torch's intra-op threads (default: torch's).
    ``export=False`` skips the ONNX step."""
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    with _threads(threads):
        return _run(Path(out), size, SIZES[size], progress, export)


def _run(out: Path, size_name: str, size: Size, progress: bool, export: bool) -> dict:
    import torch

    from taugate.training.lm.corpus import load_corpus, python_tag
    from taugate.training.lm.measure import decode_macs, greedy, perplexity
    from taugate.training.lm.model import LMConfig
    from taugate.training.lm.modes import ModeConfig, train_modes
    from taugate.training.lm.pretrain import PretrainConfig, pretrain

    started = time.perf_counter()
    corpus = load_corpus(size.caps)
    train = {k: d.train for k, d in corpus.items()}
    cfg = LMConfig(**size.lm)
    foundation, meta = pretrain(cfg, PretrainConfig(**size.pretrain), train, out, progress)
    pretrain_s = time.perf_counter() - started
    mode_config = ModeConfig(**size.mode)
    modes = train_modes(foundation, train, mode_config, out / "modes", progress)
    modes_s = time.perf_counter() - started - pretrain_s

    def ppl(model, name):
        return perplexity(model, corpus[name].held_out, max_tokens=size.eval_tokens)

    greedy_torch = {DENSE_MODE: greedy(foundation, PROMPT, NEW_TOKENS)}
    rows = {}
    for name, (model, info) in modes.items():
        dense = ppl(foundation, name)
        other = [d for d in corpus if d != name]
        greedy_torch[name] = greedy(model, PROMPT, NEW_TOKENS)
        rows[name] = {
            "perplexity": ppl(model, name),
            "dense_perplexity": dense,
            # the frozen foundation is the dense model here: no domain shifted from pretraining
            "frozen_perplexity": dense,
            "other_domain_perplexity": {o: ppl(model, o) for o in other},
            "ffn_mac_ratio": info["ffn_mac_ratio"],
            "kept_units": info["kept"],
            "tokens_per_s": {p: None for p in PRECISIONS},
            "dense_tokens_per_s": {p: None for p in PRECISIONS},
            "greedy_match": None,
        }
        rows[name]["perplexity_ratio"] = rows[name]["perplexity"] / dense
    texts = {n: corpus[n].train for n in modes if n in corpus}
    onnx = onnx_measures(foundation, {n: m for n, (m, _) in modes.items()}, out,
                         size.decode_tokens,
                         router_texts=texts if len(texts) == len(modes) else None
                         ) if export else None
    if onnx is not None:
        for name, row in rows.items():
            row.update(onnx[name])
            row["ffn_mac_ratio"] = onnx[name]["ffn_mac_ratio"]  # the exported graph's count
    dense_macs = decode_macs(cfg)
    results = {
        "size": size_name,
        "python": python_tag(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "lm": cfg.to_json(),
        "pretrain": {**size.pretrain, "losses": meta.get("losses"),
                     "train_seconds": meta.get("seconds")},
        "mode_config": asdict(mode_config),
        "corpus": {k: d.summary() for k, d in corpus.items()},
        "eval_tokens": size.eval_tokens,
        "decode_macs_per_token": dense_macs,
        "ffn_share_of_decode_macs": dense_macs["ffn"] / sum(dense_macs.values()),
        "greedy": {"prompt": PROMPT.decode(), "torch": {
            k: bytes(v).decode("utf-8", "replace") for k, v in greedy_torch.items()}},
        "onnx": onnx["_timing"] if onnx is not None else "skipped",
        "seconds": {"pretrain": pretrain_s, "modes": modes_s,
                    "total": time.perf_counter() - started},
        "modes": rows,
    }
    write_text(out / "results.json", json.dumps(results, indent=2))
    return results
