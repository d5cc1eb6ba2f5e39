"""The ViT family end to end: `taugate train --family vit` -> `taugate export` (torch engine,
shared backbone) -> `ModeRuntime.open`, every graph operator inside the runtime's allowlist
(the class token used to export as ConstantOfShape, which the allowlist refuses)."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from taugate.bundle.graph_check import ALLOWED_OPS
from taugate.cli import main
from taugate.runtime import ModeRuntime
from taugate.training.families.vit import ViT, ViTConfig

TINY = ["--family-option", "patch=4", "--family-option", "dim=8", "--family-option", "heads=2",
        "--family-option", "depth=1", "--family-option", "ffn=16"]


def write_image_modes(root, n=48):
    """Two 1x8x8 image modes: label = whether the top half is brighter than the bottom."""
    for seed, name in enumerate(["up", "down"]):
        rng = np.random.default_rng(seed)
        (root / name).mkdir(parents=True)
        for split in ("train", "test"):
            x = rng.uniform(size=(n, 1, 8, 8)).astype(np.float32)
            y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).astype(np.int64)
            np.savez(root / name / f"{split}.npz", x=x, y=y)


def test_class_token_broadcast_is_exact():
    torch.manual_seed(0)
    model = ViT(ViTConfig(height=8, width=8, patch=4, dim=8, heads=2, depth=1, ffn=16)).eval()
    with torch.no_grad():
        model.cls_token.normal_()
        x = torch.rand(3, 64)
        tokens = model.patch_embed(model.patches((x - model.input_mean) / model.input_std))
        h = torch.cat([model.cls_token.expand(3, -1, -1), tokens], dim=1) + model.pos_embed
        for block in model.blocks:
            h = block(h)
        reference = model.head(model.norm(h)[:, 0])
        assert torch.equal(model(x), reference)


def test_vit_run_exports_and_opens(tmp_path, capsys):
    write_image_modes(tmp_path / "modes")
    run, bundle = tmp_path / "run", tmp_path / "b"
    assert main(["train", "--out", str(run), "--modes-dir", str(tmp_path / "modes"),
                 "--family", "vit", *TINY, "--epochs", "1", "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(bundle), "--allow-worse"]) == 0
    allowed = ALLOWED_OPS[2][""]
    graphs = sorted(bundle.rglob("*.onnx"))
    assert len(graphs) == 3  # dense + two modes
    for path in graphs:
        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        assert "ConstantOfShape" not in ops and ops <= allowed, (path.name, sorted(ops - allowed))
    runtime = ModeRuntime.open(bundle)
    for n in (1, 4):  # the batch stays dynamic through the class token's broadcast
        x = np.random.default_rng(n).uniform(size=(n, 1, 8, 8)).astype(np.float32)
        for mode in ("dense", "up", "down"):
            logits = runtime.run(mode, x)
            assert logits.shape == (n, 2) and np.isfinite(logits).all()
