"""The import rules of docs/architecture.md, checked on the source: every ``taugate`` import
(module level or inside a function) points the way the layers allow, and the light layers never
import the heavy dependencies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import taugate

ROOT = Path(taugate.__file__).parent

# layer -> the taugate layers it may import (besides itself)
ALLOWED = {
    "bundle": set(),
    "spec": set(),
    "summaries": set(),
    "timing": set(),
    "runtime": {"bundle"},
    "server": {"runtime", "bundle", "mnist_style"},
    "mnist_style": set(),
    "bench": {"runtime", "bundle", "timing", "summaries"},
    "training": {"spec", "bundle", "summaries"},
    "exporting": {"training", "spec", "bundle", "summaries"},
    "lab": {"exporting", "training", "spec", "bundle", "runtime", "summaries", "timing",
            "bench"},
    "api": {"exporting", "training", "spec", "bundle", "runtime", "summaries"},
    "commands": {"*"},
    "cli": {"*"},
    "__init__": {"api"},
    "__main__": {"cli"},
}
# layer -> third-party packages it must never import
FORBIDDEN = {
    "bundle": {"torch", "onnx", "onnxruntime", "torchvision"},
    "spec": {"torch", "onnx", "onnxruntime"},
    "runtime": {"torch", "onnx", "torchvision"},
    "server": {"torch", "onnx", "torchvision"},
    "bench": {"torch", "onnx"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "taugate":  # from taugate import x: x is a layer (or __version__)
                found.update(f"taugate.{a.name}" for a in node.names if a.name[0] != "_")
    return found


CASES = list(modules())


@pytest.mark.parametrize("module, path", CASES, ids=[m for m, _ in CASES])
def test_imports_follow_the_layers(module, path):
    if module == "taugate":
        pytest.skip("the package itself: its lazy top-level API is checked by name")
    layer = layer_of(module)
    assert layer in ALLOWED, f"{module}: layer {layer!r} is not in docs/architecture.md's rules"
    allowed = ALLOWED[layer]
    bad = sorted(
        imp for imp in imports(path)
        if imp.startswith("taugate.") and layer_of(imp) != layer
        and "*" not in allowed and layer_of(imp) not in allowed
    )
    assert not bad, f"{module} ({layer}) imports {bad}; {layer} may import only {sorted(allowed)}"
    heavy = sorted(imp for imp in imports(path) if imp.split(".")[0] in FORBIDDEN.get(layer, ()))
    assert not heavy, f"{module} ({layer}) imports {heavy}"
