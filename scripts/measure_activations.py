"""What the hard gate ``1[z > τ]`` prunes, and costs, for activations that are not zero below 0.

    python scripts/measure_activations.py OUT [--acts relu,gelu,silu]

Per activation, an MLP 784-128-128-10 (``OUT/<act>/model.py:build``) is pretrained the paper's
way (SGD 0.05, momentum 0.9, batch 256, 2 epochs on the 50/50 mixture of 0° and 45° MNIST, seed
0; the first ``--limit-train`` 20,000 training images per mode, for a short run), then
``taugate train --model ... --sparse`` adapts it to rot0 and rot45 on the same images (2,000
held out for calibration). Per mode it reports
the frozen model's test accuracy, the soft-gated and hard-gated adapted model's (unpruned), the
units kept (the exporter's rule: gain not 0 and the hard gate fires on a calibration example),
and, over the kept units on the test set, what the hard gate removes beyond the activation:
the share of unit outputs it sets to 0 where ``act(z) != 0`` (for ReLU only ``0 < z <= τ``) and
the share of ``sum |γ·act(z)|`` those outputs held. Writes ``OUT/activations.json`` and prints a
markdown table (docs/byom.md's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODEL_PY = '''import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.{act}(),
                               torch.nn.Linear(128, 128), torch.nn.{act}(),
                               torch.nn.Linear(128, 10))
'''
MODULES = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "mish": "Mish"}


def pretrain(folder: Path, act: str, limit_train: int | None) -> None:
    from safetensors.torch import save_file

    from taugate.training.loop import TrainConfig, train
    from taugate.training.sources.mnist import DataConfig, MNISTModes

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY.format(act=MODULES[act]))
    namespace: dict = {}
    exec(compile((folder / "model.py").read_text(), str(folder / "model.py"), "exec"), namespace)
    model = namespace["build"]()
    data = MNISTModes(DataConfig(limit_train=limit_train)).mixture(["rot0", "rot45"])
    # SGD 0.05, momentum 0.9, batch 256, seed 0: TrainConfig's defaults
    train(model, model.parameters(), data, TrainConfig(epochs=2), label=f"{act} foundation",
          progress=False)
    save_file(model.state_dict(), str(folder / "weights.safetensors"))


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def at_sites(model, sites, x) -> dict:
    """Per site producer: (its gated activation module, that module's input z, its output)."""
    import torch

    seen: dict = {}
    hooks = [model.get_submodule(s.act).register_forward_hook(
        lambda mod, inp, out, p=s.producer: seen.__setitem__(p, (mod, inp[0], out)))
        for s in sites]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def gate_effect(model, sites, x) -> dict:
    """Per site, over the kept units: outputs the hard gate zeroes where act(z) != 0, and the
    share of sum |gain * act(z)| they held."""
    import torch

    from taugate.training.activations import apply

    seen = at_sites(model, sites, x)
    out = {}
    for s in sites:
        mod, z, _ = seen[s.producer]
        t = torch.from_numpy(mod.threshold())
        gain = mod.gain.detach()
        a = (gain * apply(mod.site_kind, z)).abs()
        fires = z > t
        kept = fires.any(0) & (gain != 0)
        a, fires, nonzero = a[:, kept], fires[:, kept], a[:, kept] > 0
        cut = ~fires & nonzero
        out[s.producer] = {"zeroed": float(cut.float().mean()),
                           "mass_removed": float(a[cut].sum() / a.sum())}
    return out


def measure(folder: Path) -> dict:
    from taugate.training.gating import set_hard
    from taugate.training.loaded import load_run

    run = load_run(folder / "run")
    rows = {}
    for name, mode in run.modes.items():
        soft = set_hard(mode.adapter.model, False).eval()
        x, y = mode.test
        cx, _ = mode.calibration
        soft_acc = accuracy(soft, x, y)
        hard = mode.hard_model()
        fired = at_sites(hard, run.sites, cx)
        rows[name] = {"frozen": accuracy(run.foundation, x, y), "soft": soft_acc,
                      "hard": accuracy(hard, x, y),
                      "kept": [int((fired[s.producer][2] != 0).any(0).sum()) for s in run.sites],
                      "units": [s.units for s in run.sites],
                      "gate": gate_effect(hard, run.sites, x)}
    return rows


def table(results: dict) -> str:
    lines = ["| activation | mode | frozen | soft | hard | hard − soft | units kept | "
             "outputs zeroed by the gate (layer 1 / 2) | of their Σ\\|γ·act\\| |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for act, modes in results.items():
        for name, r in modes.items():
            g = list(r["gate"].values())
            lines.append(
                f"| {act} | {name} | {r['frozen']:.4f} | {r['soft']:.4f} | {r['hard']:.4f} | "
                f"{r['hard'] - r['soft']:+.4f} | {' '.join(map(str, r['kept']))} | "
                f"{' / '.join(format(e['zeroed'], '.0%') for e in g)} | "
                f"{' / '.join(format(e['mass_removed'], '.1%') for e in g)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--acts", default="relu,gelu,silu")
    p.add_argument("--limit-train", type=int, default=20000,
                   help="the first N MNIST training images per mode, for the foundation and "
                        "the adapters (2,000 of them held out for calibration)")
    args = p.parse_args()
    results = {}
    for act in args.acts.split(","):
        folder = args.out / act
        if not (folder / "weights.safetensors").exists():
            pretrain(folder, act, args.limit_train)
        if not (folder / "run" / "run.json").exists():
            subprocess.run([sys.executable, "-m", "taugate.cli", "train", "--model",
                            f"{folder / 'model.py'}:build", "--weights",
                            folder / "weights.safetensors", "--modes", "rot0,rot45", "--sparse",
                            "--limit-train", str(args.limit_train), "--calibration-size", "2000",
                            "--out", folder / "run", "--quiet"], check=True)
        results[act] = measure(folder)
    results_with_load = {"load_average": list(os.getloadavg()), "activations": results}
    (args.out / "activations.json").write_text(json.dumps(results_with_load, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
