"""The prompt router of a language-model bundle: which mode (domain) a prompt belongs to.

A small linear classifier over the prompt's bytes, fitted at export (exporting/lm_router.py)
and stored as ``router.json`` (listed in the manifest with its sha256 and its classes, which
must be the bundle's modes). Features: the byte histogram (256 frequencies) and, when
``buckets`` > 0, the histogram of byte pairs hashed into ``buckets`` bins; scores ``W x + b``,
softmax. A prompt is :data:`UNKNOWN` when no class reaches ``min_confidence``, or when its
bytes are unlike every domain's (mean ``-log p(byte)`` under the domains' pooled byte
frequencies above ``novelty_threshold``: random bytes, another script). numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taugate.bundle.errors import BundleFormatError, RuntimeConfigError
from taugate.bundle.files import read_verified
from taugate.bundle.lm import LMManifest

ROUTER_KIND = "byte-ngram-linear"
UNKNOWN = "unknown"
POLICIES = ("refuse", "dense")  # what auto routing does with an unknown prompt
PAIR_HASH = 263  # byte pair (a, b) -> bin (a * PAIR_HASH + b) % buckets
NO_ROUTER = ("this bundle has no prompt router, so mode 'auto' cannot route; add one with "
             "`taugate lm-router BUNDLE --out NEW_BUNDLE` (or export with router texts)")


def features(ids: np.ndarray, buckets: int) -> np.ndarray:
    """``[256 + buckets]`` features of one prompt's byte ids: byte and byte-pair frequencies."""
    ids = np.asarray(ids, np.int64)
    n = max(len(ids), 1)
    out = [np.bincount(ids, minlength=256)[:256] / n]
    if buckets:
        pairs = (ids[:-1] * PAIR_HASH + ids[1:]) % buckets
        out.append(np.bincount(pairs, minlength=buckets) / max(len(ids) - 1, 1))
    return np.concatenate(out)


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


def load_router(bundle: str | Path, manifest: LMManifest) -> LMRouter:
    """The router of the LM bundle at ``bundle`` after the path and sha256 checks; a
    :class:`RuntimeConfigError` saying how to get one when the bundle has none."""
    ref = manifest.router
    if ref is None:
        raise RuntimeConfigError(NO_ROUTER)
    router = LMRouter.from_json(read_verified(Path(bundle), ref.file))
    if router.classes != ref.classes:
        raise BundleFormatError(f"router.json: classes: expected the manifest's "
                                f"{list(ref.classes)}, got {list(router.classes)}")
    return router
