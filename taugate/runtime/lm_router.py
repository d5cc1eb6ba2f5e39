"""Loading the prompt router of a language-model bundle (format: bundle/lm_router.py) for
``mode="auto"`` (runtime/lm_auto.py): the file is read after the path and sha256 checks and its
classes must be the manifest's. numpy only."""

from __future__ import annotations

from pathlib import Path

from taugate.bundle.errors import BundleFormatError, RuntimeConfigError
from taugate.bundle.files import read_verified
from taugate.bundle.lm import LMManifest
from taugate.bundle.lm_router import UNKNOWN, LMRouter, Route, features

__all__ = ["NO_ROUTER", "POLICIES", "UNKNOWN", "LMRouter", "Route", "features", "load_router"]

POLICIES = ("refuse", "dense")  # what auto routing does with an unknown prompt
NO_ROUTER = ("this bundle has no prompt router, so mode 'auto' cannot route; add one with "
             "`taugate lm-router BUNDLE --out NEW_BUNDLE` (or export with router texts)")


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
