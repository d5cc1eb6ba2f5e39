"""The small measures every stage reports, implemented once: top-1 accuracy, Jaccard overlap,
and the ``kept/total`` units formatter (numpy + stdlib only, so the runtime-only install, the
report and the CLI can all use them)."""

from __future__ import annotations

import numpy as np


def top1(logits, labels) -> float:
    """Fraction of rows whose arg-max logit is the label (0.0 for no rows). Accepts numpy
    arrays or anything ``np.asarray`` takes (torch CPU tensors too)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"top1: {logits.shape[0]} rows of logits for {labels.shape[0]} labels")
    return hit_rate(logits.argmax(axis=1), labels)


def hit_rate(predictions, labels) -> float:
    """Fraction of predicted class ids equal to their labels (0.0 for no rows): the accuracy
    of class ids, e.g. ``ModeRuntime.predict``'s."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"hit_rate: predictions of shape {predictions.shape} for labels of "
                         f"shape {labels.shape}")
    return int((predictions == labels).sum()) / len(labels) if len(labels) else 0.0


def jaccard(a, b) -> float:
    """``|a & b| / |a | b|`` of two sets or two boolean masks of one shape; 1.0 when both are
    empty."""
    if isinstance(a, (set, frozenset)) or isinstance(b, (set, frozenset)):
        a, b = set(a), set(b)
        union = len(a | b)
        return 1.0 if union == 0 else len(a & b) / union
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"jaccard: masks of different shapes {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def units_kept(kept, total, empty: str = "–") -> str:
    """Per layer ``kept/total``, space-separated: ``[66, 92], [128, 128]`` -> ``"66/128 92/128"``;
    ``empty`` when there is nothing to show."""
    kept, total = list(kept or []), list(total or [])
    if not kept:
        return empty
    total = total if total else ["?"] * len(kept)
    return " ".join(f"{k}/{t}" for k, t in zip(kept, total))
