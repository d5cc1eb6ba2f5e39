"""Fit the prompt router of a language-model bundle, and add one to a bundle that has none.

:func:`fit_router` fits :class:`~taugate.runtime.lm_router.LMRouter` (a linear classifier over
byte-pair counts, runtime/lm_router.py): per domain a smoothed byte-pair model (naive Bayes),
its scores scaled to calibrated confidences on held-back windows of several prompt lengths. Its novelty threshold is a high percentile of the novelty of the shortest windows,
the most variable known prompts. :func:`add_router` writes a copy of an LM bundle with a
router (every file re-verified on the way, the directory appearing in one rename).
numpy only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from taugate.bundle.atomic import atomic_directory, write_bytes, write_text
from taugate.bundle.files import read_verified
from taugate.bundle.lm import graph_refs, parse_lm_manifest
from taugate.bundle.lm_router import LMRouter, features
from taugate.bundle.safe_json import loads_strict

ROUTER_FILE = "router.json"
LENGTHS = (16, 64, 256)  # prompt lengths (bytes) the router is fitted on
BUCKETS = 4093  # byte-pair bins (0: byte frequencies only)
NOVELTY_PERCENTILE = 99.5
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def windows(text, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random windows ``[count, length]`` of ``text`` (bytes or uint8 ids)."""
    ids = _ids(text)
    if ids.size < length + 1:
        raise ValueError(f"expected at least {length + 1} bytes of text per domain, got "
                         f"{ids.size}")
    starts = rng.integers(0, ids.size - length, count)
    return ids[starts[:, None] + np.arange(length)]


def _ids(text) -> np.ndarray:
    if isinstance(text, (bytes, bytearray)):
        return np.frombuffer(bytes(text), np.uint8).astype(np.int64)
    return np.asarray(text, np.uint8).astype(np.int64)


def fit_router(texts: dict, buckets: int = BUCKETS, lengths=LENGTHS, count: int = 200,
               min_confidence: float = 0.8, alpha: float = 0.5, seed: int = 0) -> LMRouter:
    """A router naming the keys of ``texts`` (mode -> that domain's text: bytes or uint8
    ids). Each class's weights are the smoothed log-frequencies (``alpha``: add-alpha) of the
    byte pairs (``buckets`` > 0; else of the bytes) of the first 80% of its text, so a
    prompt's score is its log-likelihood under a byte-pair model of the domain; one shared
    scale of the scores, fitted on ``count`` windows per domain and length of the last 20%,
    calibrates the confidence."""
    if not isinstance(texts, dict) or len(texts) < 1:
        raise ValueError("texts: expected a dict of mode name -> text, at least one")
    classes = list(texts)
    weights, calib, pooled = [], [], np.zeros(256)
    rng = np.random.default_rng(seed)
    for name in classes:
        ids = _ids(texts[name])
        cut = int(ids.size * 0.8)
        counts = features(ids[:cut], buckets, counts=True)
        width = buckets or 256
        grams = counts[256:] if buckets else counts[:256]
        logp = np.log((grams + alpha) / (grams.sum() + alpha * width))
        weights.append(np.concatenate([np.zeros(256), logp]) if buckets else logp)
        pooled += counts[:256]
        try:
            calib.append([windows(ids[cut:], n, count, rng) for n in lengths])
        except ValueError as exc:
            raise ValueError(f"texts[{name!r}]: held back 20%: {exc}") from None
    w = np.stack(weights)
    log_probs = np.log((pooled + 1) / (pooled.sum() + 256))
    scale = _calibrate(w, calib, buckets)
    short = np.concatenate([c[int(np.argmin(lengths))] for c in calib])
    novelty = -log_probs[short].mean(-1)
    threshold = float(np.percentile(novelty, NOVELTY_PERCENTILE))
    return LMRouter(classes, w * scale, np.zeros(len(classes)), buckets, min_confidence,
                    log_probs, threshold)


def _calibrate(w: np.ndarray, calib: list, buckets: int) -> float:
    """The scale of the scores with the least cross-entropy on the calibration windows."""
    rows, labels = [], []
    for k, per_length in enumerate(calib):
        for ws in per_length:
            rows += [w @ features(row, buckets, counts=True) for row in ws]
            labels += [k] * len(ws)
    z, y = np.stack(rows), np.array(labels)
    best, best_loss = 1.0, np.inf
    for scale in np.geomspace(0.01, 2.0, 48):
        s = z * scale
        s = s - s.max(1, keepdims=True)
        loss = -(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(1))).mean()
        if loss < best_loss:
            best, best_loss = float(scale), loss
    return best


def router_entry(router: LMRouter, root: Path) -> dict:
    """Write ``router`` as ``root/router.json``; its manifest entry."""
    data = router.to_json().encode("utf-8")
    write_bytes(root / ROUTER_FILE, data)
    return {"file": ROUTER_FILE, "sha256": hashlib.sha256(data).hexdigest(),
            "classes": list(router.classes)}


def add_router(bundle: str | Path, out: str | Path, texts: dict, *, overwrite: bool = False,
               **fit) -> Path:
    """Write at ``out`` a copy of the LM bundle at ``bundle`` with a router fitted on
    ``texts`` (mode -> text; the keys must be the bundle's modes)."""
    from taugate.bundle.safe_json import read_regular_file

    raw = loads_strict(read_regular_file(Path(bundle) / "manifest.json", MAX_MANIFEST_BYTES))
    manifest = parse_lm_manifest(raw)
    if sorted(texts) != sorted(manifest.modes):
        raise ValueError(f"texts: expected one text per mode of the bundle "
                         f"{sorted(manifest.modes)}, got {sorted(texts)}")
    if Path(out).resolve() == Path(bundle).resolve():
        raise ValueError("out: expected a new folder, got the bundle itself")
    router = fit_router({m: texts[m] for m in sorted(manifest.modes)}, **fit)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for ref in graph_refs(manifest):
            write_bytes(tmp / ref.file, read_verified(Path(bundle), ref))
        raw["router"] = router_entry(router, tmp)
        text = json.dumps(raw, indent=1)
        parse_lm_manifest(loads_strict(text))
        write_text(tmp / "manifest.json", text)
    return Path(out)
