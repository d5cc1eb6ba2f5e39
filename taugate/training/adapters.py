"""Save and load foundations and mode adapters: safetensors tensors + a JSON config.

A foundation is ``<stem>.safetensors`` + ``<stem>.json``; the JSON names its model family
(training/families/: ``mlp``, ``vit``, or ``user`` with the ``FILE.py:FACTORY`` that builds it;
no ``family`` key: the paper's mlp) and what the family needs to rebuild the modules. An adapter holds only the tensors its
method trains, plus the method's config, the mode, and the sha256 of the foundation it was
trained on; loading it onto any other foundation is refused. No pickle anywhere: safetensors
and JSON only. Writes are atomic (taugate/bundle/atomic.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from taugate import __version__
from taugate.bundle.atomic import write_bytes, write_text
from taugate.training.families import family_of, get_family
from taugate.training.methods import AdaptationMethod, get_method
from taugate.training.targets import Targets

FOUNDATION_KIND = "taugate-foundation"
ADAPTER_KIND = "taugate-adapter"


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    # appended, not with_suffix: a mode name may hold a dot ("noise0.6")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def foundation_sha256(model: nn.Module) -> str:
    """sha256 of the foundation's safetensors bytes (identical to the saved file's hash)."""
    return hashlib.sha256(_tensor_bytes(model.state_dict())).hexdigest()


def _read_json(path: Path, kind: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (expected the JSON config of a {kind})")
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: expected kind {kind!r}, got {meta.get('kind')!r}")
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (expected safetensors weights)")
    try:
        return st_load(path.read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def save_foundation(model: nn.Module, path: str | Path, extra: dict | None = None,
                    factory: str | None = None) -> str:
    """Write ``model`` as a foundation; returns its sha256. A user model needs the
    ``factory`` (``FILE.py:FACTORY``) that rebuilds its modules."""
    st_path, json_path = _paths(path)
    data = _tensor_bytes(model.state_dict())
    sha = hashlib.sha256(data).hexdigest()
    meta = {
        "kind": FOUNDATION_KIND,
        "created_by": f"taugate {__version__}",
        **family_of(model).foundation_meta(model, factory),
        "sha256": sha,
        **(extra or {}),
    }
    write_bytes(st_path, data)
    write_text(json_path, json.dumps(meta, indent=2))
    return sha


def load_foundation(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Read a foundation written by :func:`save_foundation`; verifies its sha256. ``model``:
    the foundation itself, given from Python (a run of a module that no ``FILE.py:FACTORY``
    rebuilds): checked against the saved sha256 instead of rebuilt."""
    st_path, json_path = _paths(path)
    meta = _read_json(json_path, FOUNDATION_KIND)
    if model is not None:
        sha = foundation_sha256(model)
        if sha != meta.get("sha256"):
            raise ValueError(f"the model given is not this run's foundation: its weights' sha256 "
                             f"is {sha[:12]}, {json_path.name} says {str(meta.get('sha256'))[:12]}")
        return model.eval(), meta
    data = st_path.read_bytes() if st_path.exists() else None
    if data is None:
        raise FileNotFoundError(f"{st_path}: missing (expected the foundation's weights)")
    sha = hashlib.sha256(data).hexdigest()
    if sha != meta.get("sha256"):
        raise ValueError(f"{st_path}: sha256 {sha} does not match its config ({meta.get('sha256')})")
    model = get_family(meta.get("family", "mlp")).load(meta)
    try:
        model.load_state_dict(st_load(data), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{st_path}: weights do not fit the backbone in {json_path}: {exc}") from exc
    model.eval()
    return model, meta


@dataclass
class Adapter:
    """A loaded adapter: the method, the adapted model, and its JSON config."""

    method: AdaptationMethod
    model: nn.Module
    meta: dict


def save_adapter(
    path: str | Path,
    method: AdaptationMethod,
    model: nn.Module,
    foundation_sha: str,
    mode: dict,
    extra: dict | None = None,
) -> Path:
    """Write the tensors ``method`` trained in ``model`` and the config to rebuild it (the
    method's config, the mode, and the targets it was attached to)."""
    from taugate.training.gating import targets_of

    st_path, json_path = _paths(path)
    tensors = {k: v.detach() for k, v in method.trainable(model).items()}
    meta = {
        "kind": ADAPTER_KIND,
        "created_by": f"taugate {__version__}",
        "method": method.name,
        "method_config": method.config_dict(),
        "mode": mode,
        "foundation_sha256": foundation_sha,
        "tensors": sorted(tensors),
        "targets": targets_of(model).to_dict(),
        **(extra or {}),
    }
    write_bytes(st_path, _tensor_bytes(tensors))
    write_text(json_path, json.dumps(meta, indent=2))
    return st_path


def load_adapter(path: str | Path, foundation: nn.Module, foundation_sha: str | None = None) -> Adapter:
    """Rebuild an adapted model from ``foundation`` and the adapter at ``path``.

    Refuses an adapter that was trained on a different foundation (sha256 mismatch).
    """
    st_path, json_path = _paths(path)
    meta = _read_json(json_path, ADAPTER_KIND)
    sha = foundation_sha or foundation_sha256(foundation)
    if meta.get("foundation_sha256") != sha:
        raise ValueError(
            f"{json_path}: this adapter was trained on foundation "
            f"{str(meta.get('foundation_sha256'))[:12]}..., not on the one given ({sha[:12]}...); "
            f"load it onto the foundation it was trained with"
        )
    method = get_method(meta["method"], meta.get("method_config") or {})
    targets = Targets.from_dict(meta["targets"]) if meta.get("targets") else None
    model = method.wrap(foundation, targets)
    tensors = _read_tensors(st_path)
    params = method.trainable(model)
    if set(tensors) != set(params):
        raise ValueError(
            f"{st_path}: tensors {sorted(tensors)} do not match method {method.name!r}'s "
            f"trainable parameters {sorted(params)}"
        )
    with torch.no_grad():
        for name, p in params.items():
            if tensors[name].shape != p.shape:
                raise ValueError(
                    f"{st_path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"expected {tuple(p.shape)}"
                )
            p.copy_(tensors[name])
    model.eval()
    return Adapter(method=method, model=model, meta=meta)
