"""Candidates for per-mode corrections on the width-128 rot45 mode (issue 21, item 4).

Usage: ``python scripts/measure_corrections.py NAME '{"target_mac_ratio": 2.0, "rank": 4,
"alpha": 0.4}'`` with TAUGATE_DATA set and the width-128 foundation at /work/runs/mlp
(``taugate train --out /work/runs/mlp --sparse``). Keys beyond TauGateConfig's: ``bias`` (the
consumers' biases train too), ``rank``/``alpha``/``rank_layers`` (a LoRA-form correction of
those layers: scale alpha / rank), ``epochs`` (sparse-phase epochs), ``ft_teacher`` (N: distil
from the foundation fully fine-tuned N epochs on the mode; needs ``distill``). Prints one JSON
line: dense and hard-gated test accuracy, kept-MAC ratio, trainable parameters. Results:
docs/measured/corrections_rot45_w128.json; what shipped: ``--correction-rank``.
"""
import copy
import json
import sys
import time

import torch
from torch import nn

import taugate.training.pipeline as P
import taugate.training.sparsity as S
from taugate.training.adapters import load_foundation
from taugate.training.gating import targets_of
from taugate.training.loop import TrainConfig, accuracy
from taugate.training.methods.lora import LoRALinear
from taugate.training.methods.taugate import TauGate
from taugate.training.pipeline import AdaptConfig, adapt
from taugate.training.recipes import sparse_recipe
from taugate.training.sources import DataConfig, MNISTModes
from taugate.training.sparsity import dense_macs, kept_macs
from taugate.training.targets import get_module, set_module

torch.set_num_threads(1)
name = sys.argv[1]
extra = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
bias = extra.pop("bias", False)
rank = extra.pop("rank", 0)
rank_layers = extra.pop("rank_layers", [0])
epochs = extra.pop("epochs", 1)
ft_teacher = extra.pop("ft_teacher", 0)
alpha = extra.pop("alpha", None)

class Corrected(TauGate):
    name = "taugate"
    def inject(self, model):
        super().inject(model)
        if bias:
            for s in targets_of(model).sites:
                lin = get_module(model, s.consumer)
                lin.bias = nn.Parameter(lin.bias.detach().clone())
        if rank:
            for i in rank_layers:
                path = f"linears.{i}"
                set_module(model, path, LoRALinear(get_module(model, path), rank, float(alpha if alpha else rank)))

foundation, meta = load_foundation("/work/runs/mlp/foundation")
data = MNISTModes(DataConfig(root="/work/shared/datasets"))
mode = data.mode("rot45")
dense_acc = accuracy(foundation, mode.test)
cfg = {**sparse_recipe([128, 128]), **extra}

if ft_teacher:
    from taugate.training.loop import train
    teacher = copy.deepcopy(foundation)
    teacher.requires_grad_(True)
    torch.manual_seed(0)
    train(teacher, list(teacher.parameters()), mode.train, TrainConfig(epochs=ft_teacher), lr_scale=S.cosine, progress=False)
    teacher.eval()
    teacher.requires_grad_(False)
    print("teacher", accuracy(teacher, mode.test), flush=True)
    S._teacher = lambda *a, **k: teacher
P.get_method = lambda n, c: Corrected(c)
t = time.time()
method, model = adapt(foundation, mode, AdaptConfig("taugate", cfg, TrainConfig(epochs=epochs, min_steps=200)), progress=False)
model.set_hard(True)
acc = accuracy(model, mode.test)
ratio = dense_macs(model) / kept_macs(model)
n = sum(p.numel() for p in method.trainable(model).values())
print(json.dumps({"name": name, "cfg": cfg, "bias": bias, "rank": rank, "epochs": epochs,
                  "dense": round(dense_acc, 4), "acc_hard": round(acc, 4), "mac_ratio": round(ratio, 3),
                  "trainable": n, "sec": round(time.time() - t)}), flush=True)
