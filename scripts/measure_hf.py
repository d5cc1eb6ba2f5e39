"""The foundations of docs/huggingface.md's measurements: pretrain a tiny BERT on two synthetic
token modes (written to OUT/modes) or a tiny ViT on MNIST rot0+rot45, then save_pretrained.

    python scripts/measure_hf.py OUT bert 2     # OUT/bert, OUT/modes/{plain,padded}
    python scripts/measure_hf.py OUT llama 2    # OUT/llama, OUT/modes/{plain,padded}
    python scripts/measure_hf.py OUT vit 2      # OUT/vit ($TAUGATE_DATA holds MNIST)

then ``taugate train --hf OUT/bert ... && taugate export ...`` (the commands in the doc).
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(2)
L, V = 32, 100

def token_mode(n, seed, distract):
    # label: is token 5 more frequent than token 6? "distract": ids from the upper half of the vocab, padded rows
    rng = np.random.default_rng(seed)
    lo, hi = (50, 100) if distract else (7, 50)
    ids = rng.integers(lo, hi, (n, L))
    k5, k6 = rng.integers(0, 6, n), rng.integers(0, 6, n)
    for i in range(n):
        pos = rng.choice(L - 8, k5[i] + k6[i], replace=False)
        ids[i, pos[:k5[i]]] = 5
        ids[i, pos[k5[i]:]] = 6
    keep = k5 != k6
    ids, y = ids[keep], (k5 > k6)[keep].astype(np.int64)
    mask = np.ones_like(ids)
    if distract:
        mask[:, L - 8:] = 0
        ids[:, L - 8:] = 0
    return ids, mask, y

def train(model, batches, epochs, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for ep in range(epochs):
        t = time.time()
        tot = 0
        for xb, yb in batches():
            loss = torch.nn.functional.cross_entropy(xb(model), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach())
        print("epoch", ep, tot, time.time() - t, flush=True)
    return model.eval()

def tiny_text_model(kind):
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, max_position_embeddings=L, num_labels=2, attn_implementation="eager"))
    # pad id 0: the classifier reads each row's last token that is not padding
    return LlamaForSequenceClassification(LlamaConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=256, max_position_embeddings=L, num_labels=2, pad_token_id=0, attn_implementation="eager"))

if sys.argv[2] in ("bert", "llama"):
    for mode, d in (("plain", False), ("padded", True)):
        for split, n, s in (("train", 3000, 1), ("test", 1000, 2)):
            ids, mask, y = token_mode(n, s + 10 * d, d)
            (OUT / "modes" / mode).mkdir(parents=True, exist_ok=True)
            np.savez(OUT / "modes" / mode / f"{split}.npz", input_ids=ids, attention_mask=mask, y=y)
    parts = [token_mode(3000, 1 + 10 * d, d) for d in (False, True)]
    ids = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    mask = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    m = tiny_text_model(sys.argv[2])
    def batches():
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            j = perm[i:i + 64]
            yield (lambda mm, j=j: mm(input_ids=ids[j], attention_mask=mask[j]).logits), y[j]
    train(m, batches, int(sys.argv[3]), 1e-3)
    for mode in ("plain", "padded"):
        d = np.load(OUT / "modes" / mode / "test.npz")
        with torch.no_grad():
            acc = (m(input_ids=torch.from_numpy(d["input_ids"]), attention_mask=torch.from_numpy(d["attention_mask"])).logits.argmax(1).numpy() == d["y"]).mean()
        print(mode, "dense test acc", acc)
    m.save_pretrained(OUT / sys.argv[2])
else:
    from taugate.training.sources import DataConfig, MNISTModes
    src = MNISTModes(DataConfig(root=os.environ["TAUGATE_DATA"], calibration_size=1000, limit_train=6000, limit_test=1000))
    mix = src.mixture(["rot0", "rot45"])
    x, y = mix.x.reshape(-1, 1, 28, 28), mix.y
    m = ViTForImageClassification(ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, num_labels=10, attn_implementation="eager"))
    def batches():
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 128):
            j = perm[i:i + 128]
            yield (lambda mm, j=j: mm(pixel_values=x[j]).logits), y[j]
    train(m, batches, int(sys.argv[3]), 2e-3)
    for mode in ("rot0", "rot45"):
        t = src.mode(mode).test
        with torch.no_grad():
            print(mode, "dense test acc", (m(pixel_values=t.x.reshape(-1, 1, 28, 28)).logits.argmax(1) == t.y).float().mean().item())
    m.save_pretrained(OUT / "vit")
