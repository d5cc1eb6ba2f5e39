"""Tiny Hugging Face models built from configs (no downloads) and mode folders for them:
token ids + masks for the text models, pixels for ViT (seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LENGTH, VOCAB = 12, 40


def bert(num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=num_labels))


def vit(num_labels: int = 3):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=num_labels))


def llama(num_labels: int = 2):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=32, max_position_embeddings=16,
        num_labels=num_labels, pad_token_id=0))


def tokens(n: int, seed: int = 0, shift: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, mask, y): right-padded rows (every other row has 4 pad tokens), label: whether the
    first id beats the second."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB // 2, (n, LENGTH)) + shift
    mask = np.ones_like(ids)
    mask[::2, LENGTH - 4:] = 0
    ids[mask == 0] = 0
    return ids, mask, (ids[:, 0] > ids[:, 1]).astype(np.int64)


def token_modes(root: Path) -> Path:
    """MODES/{low,high}/{train,test}.npz of token ids + masks."""
    for i, (mode, shift) in enumerate((("low", 0), ("high", VOCAB // 2 - 1))):
        for j, (split, n) in enumerate((("train", 48), ("test", 24))):
            ids, mask, y = tokens(n, seed=10 * i + j, shift=shift)
            (root / mode).mkdir(parents=True, exist_ok=True)
            np.savez(root / mode / f"{split}.npz", input_ids=ids, attention_mask=mask, y=y)
    return root


def pixel_modes(root: Path) -> Path:
    """MODES/{plain,bright}/{train,test}.npz of float pixels [N, 1, 8, 8], 3 classes."""
    for i, (mode, offset) in enumerate((("plain", 0.0), ("bright", 0.5))):
        for j, (split, n) in enumerate((("train", 48), ("test", 24))):
            rng = np.random.default_rng(10 * i + j)
            y = rng.integers(0, 3, n)
            x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.5 + offset
            x[:, 0, y * 2, :] += 1.0  # the class is a bright row
            (root / mode).mkdir(parents=True, exist_ok=True)
            np.savez(root / mode / f"{split}.npz", x=x, y=y.astype(np.int64))
    return root


def bert_bundle(root: Path) -> Path:
    """A tokens bundle (tiny BERT, one mode "low", pruned; a few seconds): ROOT/bundle."""
    from taugate.cli import main

    bert().save_pretrained(root / "hf")
    modes = token_modes(root / "modes")
    main(["train", "--hf", str(root / "hf"), "--modes-dir", str(modes), "--out",
          str(root / "run"), "--modes", "low", "--adapt-min-steps", "2", "--batch-size", "16",
          "--quiet", "--device", "cpu"])
    main(["export", str(root / "run"), "--out", str(root / "bundle"), "--no-measure",
          "--allow-worse", "--prune-below", "0.5", "--max-accuracy-drop", "1"])
    return root / "bundle"
