"""Add (or replace) a bundle's router: ``taugate route BUNDLE --run RUN`` and ``export --router``.

The router is fitted from the run's calibration splits of exactly the bundle's modes
(:mod:`taugate.exporting.router`), then the bundle is rewritten in one atomic directory swap
(taugate/bundle/atomic.py, as ``export --into`` does): ``router.onnx`` beside the modes and a
``router`` object in ``manifest.json`` with its sha256. The new manifest is parsed with the
reader's rules and the graph passes the operator allowlist before the swap, so a failure leaves
the old bundle as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from taugate.bundle.atomic import atomic_directory, write_bytes, write_text
from taugate.bundle.graph_check import check_model
from taugate.bundle.manifest import load_manifest, parse_manifest
from taugate.exporting.into import bundle_lock
from taugate.exporting.router import FittedRouter, RouterConfig, fit_router

ROUTER_FILE = "router.onnx"


def calibration_inputs(run, modes: list) -> dict:
    """Mode name -> calibration inputs (numpy) of ``run`` (a loaded run), for ``modes``."""
    missing = [m for m in modes if m not in run.modes]
    if missing:
        raise ValueError(f"the run {run.path.name!r} has no modes {missing} of the bundle "
                         f"(it has {sorted(run.modes)}): fit the router from the run the bundle "
                         f"was exported from")
    return {m: run.modes[m].calibration[0].numpy() for m in modes}


def fit_for_bundle(bundle, run, cfg: RouterConfig | None = None) -> FittedRouter:
    """A router for the modes of ``bundle``, fitted on ``run``'s calibration splits."""
    _, manifest = load_manifest(bundle)
    data = calibration_inputs(run, list(manifest.modes))
    features = manifest.input.features
    for m, x in data.items():
        if x[0].size != features:
            raise ValueError(f"mode {m!r}: the run's rows have {x[0].size} values, the bundle's "
                             f"input {features}: not the run this bundle was exported from")
    return fit_router(data, cfg)


def write_router(bundle, fitted: FittedRouter) -> Path:
    """Rewrite ``bundle`` with ``fitted`` as its router; returns the bundle directory."""
    root, manifest = load_manifest(bundle)
    if sorted(fitted.modes) != sorted(manifest.modes):
        raise ValueError(f"router modes {sorted(fitted.modes)} are not the bundle's modes "
                         f"{sorted(manifest.modes)}")
    data = fitted.proto.SerializeToString()
    check_model(data, manifest.format_version, f"router: file {ROUTER_FILE!r}")
    raw = json.loads(json.dumps(manifest.raw))
    raw["router"] = fitted.manifest_entry(ROUTER_FILE, hashlib.sha256(data).hexdigest())
    parse_manifest(raw)  # the reader's rules, before anything is replaced
    with bundle_lock(root), atomic_directory(root, overwrite=True) as tmp:
        shutil.copytree(root, tmp, dirs_exist_ok=True)
        write_bytes(tmp / ROUTER_FILE, data)
        write_text(tmp / "manifest.json", json.dumps(raw, indent=1))
    return root
