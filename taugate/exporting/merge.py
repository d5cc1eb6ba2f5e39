"""Add modes to an existing bundle: ``taugate export RUN --modes ... --into BUNDLE``.

The new modes are exported as a bundle of their own first (the one writer, bundle.py); this
module then rewrites the existing bundle with their files and manifest entries added, keeping
every mode it had, in one atomic directory swap (_atomic.py): a reader sees the old bundle or
the new one, never a mix, and a failure (including the caller's ``verify``) leaves the old one
as it was. Both bundles must hold the same dense model (same sha256): modes of different
foundations cannot share a bundle. Format version 1 only (v2's shared backbone needs its own
merge).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

from taugate.bundle.atomic import atomic_directory, write_text

log = logging.getLogger(__name__)
FORMAT = "taugate-bundle"
VERSIONS = (1, 2)


def _manifest(bundle: Path) -> dict:
    path = bundle / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle}: no manifest.json (expected a bundle directory)")
    manifest = json.loads(path.read_text("utf-8"))
    got = (manifest.get("format"), manifest.get("format_version"))
    if got[0] != FORMAT or got[1] not in VERSIONS:
        raise ValueError(f"{bundle}: adding modes supports {FORMAT} format_version "
                         f"{' or '.join(map(str, VERSIONS))}, got {got[0]!r} version {got[1]!r}")
    return manifest


def _files(entry: dict) -> list[str]:
    """Every file of a mode entry: its graph, its weights (shared backbone), its variants."""
    files = [entry["file"]]
    if isinstance(entry.get("weights"), dict):
        files.append(entry["weights"]["file"])
    for variant in (entry.get("variants") or {}).values():
        files.append(variant["file"])
    return files


def merge_into(bundle: str | Path, addition: str | Path, replace: bool = False,
               verify: Callable[[Path], None] | None = None) -> list[str]:
    """Rewrite ``bundle`` with the modes of ``addition`` added; returns the added mode names.

    A mode already in ``bundle`` is refused unless ``replace``. ``verify(path)`` is called on
    the complete new bundle before it replaces the old one (raise to keep the old one)."""
    bundle, addition = Path(bundle), Path(addition)
    old, new = _manifest(bundle), _manifest(addition)
    if old["dense"]["sha256"] != new["dense"]["sha256"]:
        raise ValueError(
            f"--into {bundle}: its dense model (sha256 {old['dense']['sha256'][:12]}) is not this "
            f"run's foundation (sha256 {new['dense']['sha256'][:12]}); modes of another "
            f"foundation need a bundle of their own (--out)")
    if old["format_version"] != new["format_version"]:
        raise ValueError(f"--into {bundle}: format_version {old['format_version']} there, "
                         f"{new['format_version']} in this export; re-export both with one "
                         f"taugate version")
    old_bb, new_bb = old.get("backbone"), new.get("backbone")
    if (old_bb or new_bb) and (old_bb or {}).get("sha256") != (new_bb or {}).get("sha256"):
        raise ValueError(f"--into {bundle}: its shared backbone is not this run's foundation's; "
                         f"modes of another foundation need a bundle of their own (--out)")
    clash = sorted(set(old["modes"]) & set(new["modes"]))
    if clash and not replace:
        raise FileExistsError(f"--into {bundle}: modes {clash} are already in the bundle; pass "
                              f"--force to replace them")
    merged = json.loads(json.dumps(old))
    merged["modes"].update(new["modes"])
    if merged.get("router") is not None and set(merged["modes"]) != set(old["modes"]):
        # a router names exactly the bundle's modes: one fitted before this mode cannot route
        # to it, so the bundle goes on without one until `taugate route` fits it again
        router = merged.pop("router")
        stale_router = router.get("file") if isinstance(router, dict) else None
        log.warning("--into %s: its router does not know the added modes and was removed; fit "
                    "a new one with `taugate route %s --run RUN`", bundle.name, bundle.name)
    else:
        stale_router = None
    accs = merged["dense"].get("test_accuracy")
    if isinstance(accs, dict):
        accs.update(new["dense"].get("test_accuracy") or {})
    with atomic_directory(bundle, overwrite=True) as tmp:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        if isinstance(stale_router, str):  # no file the manifest does not name
            stale = (tmp / stale_router).resolve()
            if stale.is_relative_to(tmp.resolve()) and stale.is_file():
                stale.unlink()
        for entry in new["modes"].values():
            for rel in _files(entry):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(addition / rel, target)
        write_text(tmp / "manifest.json", json.dumps(merged, indent=1))
        if verify is not None:
            verify(tmp)
    return list(new["modes"])
