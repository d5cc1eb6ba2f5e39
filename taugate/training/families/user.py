"""The user's own frozen model: ``--model FILE.py:FACTORY [--weights W.safetensors]``.

``FACTORY`` is a function in ``FILE.py`` that takes no arguments and returns an ``nn.Module``
(the user's code runs, as with any model definition they hand over). Weights, when given, are
read with safetensors (never ``torch.load``: no pickle) and loaded strictly: every key of the
module's state dict must be present with the same shape, and nothing else. A mismatch is one
error listing the missing keys, the unexpected keys and the shape mismatches.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from taugate.training.families.base import Family


def parse_factory(spec: str) -> tuple[Path, str]:
    """``"models/net.py:build"`` -> (path, function name), with the file checked to exist."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ValueError(f"--model: expected FILE.py:FACTORY (a Python file and a function in it "
                         f"returning an nn.Module), got {spec!r}")
    p = Path(path).expanduser()
    if p.suffix != ".py":
        raise ValueError(f"--model: expected a .py file before ':', got {path!r}")
    if not p.is_file():
        raise FileNotFoundError(f"--model: {p} does not exist")
    return p.resolve(), name


def load_factory(spec: str) -> nn.Module:
    """Import ``FILE.py`` and call ``FACTORY()``; the result must be an ``nn.Module``."""
    path, name = parse_factory(spec)
    module_name = f"taugate_user_model_{abs(hash(str(path)))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise ValueError(f"--model: cannot import {path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling-free copies look it up
    loader.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ValueError(f"--model: {path} has no function {name!r}; callables there: "
                         f"{', '.join(found) or '(none)'}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {name}() in {path} returned {type(model).__name__}, "
                         f"expected an torch.nn.Module")
    return model


def state_dict_mismatch(model: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between ``model``'s state dict and ``tensors`` (empty: fit)."""
    want = model.state_dict()
    problems = []
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(want[k].shape)}"
              for k in sorted(set(want) & set(tensors)) if tensors[k].shape != want[k].shape]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes)}")
    return problems


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors file into ``model`` strictly (see the module docstring)."""
    from safetensors.torch import load as st_load

    p = Path(path).expanduser()
    if p.suffix != ".safetensors":
        raise ValueError(f"--weights: expected a .safetensors file (pickled .pt/.pth files are "
                         f"never loaded; convert with safetensors.torch.save_file(model."
                         f"state_dict(), 'w.safetensors')), got {p.name!r}")
    if not p.is_file():
        raise FileNotFoundError(f"--weights: {p} does not exist")
    try:
        tensors = st_load(p.read_bytes())
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"--weights: {p} is not a readable safetensors file ({exc})") from exc
    problems = state_dict_mismatch(model, tensors)
    if problems:
        raise ValueError(f"--weights: {p} does not fit the model: {'; '.join(problems)}")
    want = model.state_dict()
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()}, strict=True)
    return model


class UserFamily(Family):
    """The user's own model: rebuilt by calling ``FILE.py:FACTORY``, never pretrained here."""

    name = "user"
    pretrainable = False

    def config(self, values):
        raise ValueError("family 'user': the model comes from --model FILE.py:FACTORY; taugate "
                         "pretrains only the built-in families")

    def foundation_config(self, fc):
        return self.config(fc.family_config)

    def build(self, config=None) -> nn.Module:
        """``config``: the ``FILE.py:FACTORY`` that builds the model."""
        if not isinstance(config, str):
            return self.config(config)
        return load_factory(config)

    def owns(self, model: nn.Module) -> bool:
        return False  # the family of every module no built-in family owns (families.family_of)

    def fit_to_data(self, fc, facts):
        return fc

    def foundation_meta(self, model: nn.Module, factory: str | None = None) -> dict:
        # factory None: a module given from Python; reopening the run needs it again
        return {"family": self.name, "factory": factory, "module": type(model).__name__}

    def load(self, meta: dict) -> nn.Module:
        if not meta.get("factory"):
            raise ValueError(f"this run's foundation (a {meta.get('module', 'module')}) was given "
                             f"from Python, not as FILE.py:FACTORY: pass it again "
                             f"(taugate.export(run, model=module)), or train with "
                             f"model='FILE.py:FACTORY' so the run can rebuild it")
        return load_factory(meta["factory"])
