"""The prompt router of a language-model bundle (``router.json``): which mode (domain) a
prompt belongs to. The format and its scoring, standard library + numpy; the runtime loads it
through runtime/lm_router.py, the exporter fits it (exporting/lm_router.py).

A small linear classifier over the prompt's bytes, fitted at export (exporting/lm_router.py)
and stored as ``router.json`` (listed in the manifest with its sha256 and its classes, which
must be the bundle's modes). Features: byte counts (256) and, when ``buckets`` > 0, counts of
byte pairs hashed into ``buckets`` bins; scores ``W x + b``, softmax: with the exporter's
weights, each domain's calibrated log-likelihood of the prompt, so longer prompts route with
more confidence. A prompt is :data:`UNKNOWN` when no class reaches ``min_confidence``, or when its
bytes are unlike every domain's (mean ``-log p(byte)`` under the domains' pooled byte
frequencies above ``novelty_threshold``: random bytes, another script). numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from taugate.bundle.errors import BundleFormatError

ROUTER_KIND = "byte-ngram-linear"
UNKNOWN = "unknown"
PAIR_HASH = 263  # byte pair (a, b) -> bin (a * PAIR_HASH + b) % buckets



def features(ids: np.ndarray, buckets: int, counts: bool = True) -> np.ndarray:
    """``[256 + buckets]`` features of one prompt's byte ids: how often each byte occurs and
    each byte pair (hashed into ``buckets`` bins) follows; ``counts=False``: as frequencies."""
    ids = np.asarray(ids, np.int64)
    out = [np.bincount(ids, minlength=256)[:256].astype(np.float64)]
    if buckets:
        pairs = (ids[:-1] * PAIR_HASH + ids[1:]) % buckets
        out.append(np.bincount(pairs, minlength=buckets).astype(np.float64))
    x = np.concatenate(out)
    if not counts:
        x[:256] /= max(len(ids), 1)
        x[256:] /= max(len(ids) - 1, 1)
    return x


@dataclass(frozen=True)
class Route:
    """Where a prompt goes: ``mode`` (a class or :data:`UNKNOWN`), the top class's
    probability, every class's probability, and the prompt's novelty."""

    mode: str
    confidence: float
    probabilities: dict
    novelty: float


class LMRouter:
    """A fitted router (see the module docstring); :meth:`from_json` checks every field."""

    def __init__(self, classes, weights, bias, buckets: int, min_confidence: float,
                 log_probs, novelty_threshold: float):
        self.classes = tuple(classes)
        self.weights = np.asarray(weights, np.float64)
        self.bias = np.asarray(bias, np.float64)
        self.buckets, self.min_confidence = int(buckets), float(min_confidence)
        self.log_probs = np.asarray(log_probs, np.float64)
        self.novelty_threshold = float(novelty_threshold)
        k, width = len(self.classes), 256 + self.buckets
        if self.weights.shape != (k, width) or self.bias.shape != (k,) \
                or self.log_probs.shape != (256,):
            raise BundleFormatError(f"router.json: expected weights [{k}, {width}], bias [{k}] "
                                    f"and log_probs [256], got {list(self.weights.shape)}, "
                                    f"{list(self.bias.shape)}, {list(self.log_probs.shape)}")
        if not all(np.isfinite(a).all() for a in (self.weights, self.bias, self.log_probs)):
            raise BundleFormatError("router.json: expected finite weights, bias and log_probs")

    def to_json(self) -> str:
        return json.dumps({"kind": ROUTER_KIND, "classes": list(self.classes),
                           "buckets": self.buckets, "min_confidence": self.min_confidence,
                           "weights": self.weights.tolist(), "bias": self.bias.tolist(),
                           "log_probs": self.log_probs.tolist(),
                           "novelty_threshold": self.novelty_threshold})

    @classmethod
    def from_json(cls, text: str | bytes) -> LMRouter:
        from taugate.bundle.safe_json import loads_strict

        d = loads_strict(text)
        if not isinstance(d, dict) or d.get("kind") != ROUTER_KIND:
            raise BundleFormatError(f"router.json: kind: expected {ROUTER_KIND!r}, got "
                                    f"{d.get('kind') if isinstance(d, dict) else d!r}")
        buckets, conf = d.get("buckets"), d.get("min_confidence")
        if not isinstance(buckets, int) or isinstance(buckets, bool) or not 0 <= buckets <= 1 << 16:
            raise BundleFormatError(f"router.json: buckets: expected an integer in 0..65536, got "
                                    f"{buckets!r}")
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise BundleFormatError(f"router.json: min_confidence: expected a number in 0..1, "
                                    f"got {conf!r}")
        try:
            return cls(d["classes"], d["weights"], d["bias"], buckets, conf, d["log_probs"],
                       d["novelty_threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleFormatError(f"router.json: expected classes, weights, bias, log_probs "
                                    f"and novelty_threshold as numbers: {exc}") from None

    def route(self, ids: np.ndarray) -> Route:
        """Route one prompt's byte ids (at least one)."""
        ids = np.asarray(ids, np.int64)
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError(f"prompt: expected at least one byte, got {len(ids)}")
        z = self.weights @ features(ids, self.buckets) + self.bias
        p = np.exp(z - z.max())
        p /= p.sum()
        novelty = float(-self.log_probs[ids].mean())
        best = int(p.argmax())
        known = p[best] >= self.min_confidence and novelty <= self.novelty_threshold
        return Route(self.classes[best] if known else UNKNOWN, float(p[best]),
                     {c: float(v) for c, v in zip(self.classes, p)}, novelty)
