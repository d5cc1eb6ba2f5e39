"""How well and how cheaply an LM bundle's prompt router routes (docs/lm.md, "Routing").

:func:`measure_routing` fits routers of each feature set (bytes; hashed byte pairs) on each
domain's training text, then routes random windows of each domain's held-out text at several
prompt lengths: accuracy (routed to its own domain), the share left ``unknown`` and the
accuracy among the routed, per length; unknown detection on bytes of no domain; and the
router's time per prompt beside one decode step of the bundle's dense model, interleaved,
medians, one onnxruntime thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from taugate.exporting.lm_router import BUCKETS, fit_router, windows
from taugate.runtime.generate import Generator, encode
from taugate.runtime.lm_router import UNKNOWN
from taugate.training.lm.corpus import python_tag

LENGTHS = (16, 64, 256)
FEATURES = {"bytes": 0, "byte_pairs": BUCKETS}
THRESHOLDS = (0.5, 0.7, 0.8, 0.9)  # min_confidence values reported (0.5: always the top class)


def accuracy(router, held_out: dict, lengths=LENGTHS, count: int = 300, seed: int = 1,
             thresholds=THRESHOLDS) -> dict:
    """Per prompt length and ``min_confidence`` threshold: ``accuracy`` (routed to its own
    domain), ``unknown`` share and ``routed_accuracy`` over ``count`` held-out windows per
    domain (the router's own threshold is the one it is saved with)."""
    rng = np.random.default_rng(seed)
    out = {}
    for length in lengths:
        rows = []  # (true, best class, confidence, novel)
        for name, text in held_out.items():
            for w in windows(text, length, count, rng):
                r = router.route(w)
                best = max(r.probabilities, key=r.probabilities.get)
                rows.append((name, best, r.confidence, r.novelty > router.novelty_threshold))
        per = {}
        for t in thresholds:
            known = [(a, b) for a, b, c, novel in rows if c >= t and not novel]
            right = sum(a == b for a, b in known)
            per[str(t)] = {"accuracy": right / len(rows), "unknown": 1 - len(known) / len(rows),
                           "routed_accuracy": right / len(known) if known else None}
        out[str(length)] = {"prompts": len(rows), "by_min_confidence": per}
    return out


def foreign(router, count: int = 200, seed: int = 2) -> dict:
    """Share of prompts of no domain flagged unknown: random bytes, and non-Latin text."""
    rng = np.random.default_rng(seed)
    rand = [router.route(rng.integers(0, 256, 64)).mode == UNKNOWN for _ in range(count)]
    cjk = "这是一个用中文写的句子，不是代码也不是英文。语言模型只见过英文和代码。".encode()
    return {"random_bytes_64": float(np.mean(rand)),
            "cjk_text": router.route(np.frombuffer(cjk, np.uint8)).mode == UNKNOWN}


def cost(router, bundle: str | Path, prompts: dict, rounds: int = 200) -> dict:
    """Median seconds of routing each of ``prompts`` (name -> bytes) and of one dense decode
    step (fp32, one thread), interleaved round by round."""
    gen = Generator.open(bundle, "dense", "fp32", threads=1)
    start = encode(b"def f(x):\n")
    decoding = gen.start(1)
    logits = decoding.feed(start)
    ids = {k: encode(v) for k, v in prompts.items()}
    route_s, step_s = {k: [] for k in ids}, []
    for _ in range(rounds):
        for k, v in ids.items():
            t = time.perf_counter()
            router.route(v)
            route_s[k].append(time.perf_counter() - t)
        if decoding.room < 1:
            decoding = gen.start(1)
            logits = decoding.feed(start)
        t = time.perf_counter()
        logits = decoding.feed(logits.argmax(-1)[:, None])
        step_s.append(time.perf_counter() - t)
    step = float(np.median(step_s))
    return {"decode_step_s": step, "rounds": rounds,
            "route_s": {k: float(np.median(v)) for k, v in route_s.items()},
            "route_over_step": {k: float(np.median(v)) / step for k, v in route_s.items()}}


def measure_routing(bundle: str | Path, train: dict, held_out: dict) -> dict:
    """The routing report: per feature set, accuracy by prompt length, unknown detection and
    cost; ``train`` / ``held_out``: mode -> that domain's text."""
    report = {"lengths": list(LENGTHS), "python": python_tag(),
              "load_average_before": list(os.getloadavg()),
              "held_out_bytes": {k: int(len(v)) for k, v in held_out.items()}, "routers": {}}
    first = held_out[next(iter(held_out))]
    prompts = {str(n): bytes(windows(first, n, 1, np.random.default_rng(0))[0].astype(np.uint8))
               for n in LENGTHS}
    for name, buckets in FEATURES.items():
        router = fit_router(train, buckets=buckets)
        report["routers"][name] = {
            "buckets": buckets, "min_confidence": router.min_confidence,
            "by_length": accuracy(router, held_out), "foreign_flagged": foreign(router),
            "cost": cost(router, bundle, prompts)}
    report["load_average_after"] = list(os.getloadavg())
    return report
