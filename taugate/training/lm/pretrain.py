"""Pretrain the foundation TinyLlama on a mixture of the corpus' domains: seeded, resumable.

Every batch is a pure function of ``(seed, step)`` (which domain each row comes from and
where its window starts), so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would. AdamW with linear warmup and cosine decay to ``min_lr_ratio * lr``.

A checkpoint is one safetensors file (``checkpoint.safetensors``: the weights, AdamW's
moments, and the JSON state in its metadata) written atomically every ``checkpoint_every``
steps, so a crash leaves the previous complete checkpoint. The result is a foundation
(``foundation.safetensors`` + ``foundation.json``) whose sha256 adapters are checked against.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from taugate.bundle.atomic import write_bytes, write_text
from taugate.training.lm.corpus import DOMAINS, fingerprint, python_tag
from taugate.training.lm.model import LMConfig, TinyLlama
from taugate.training.loop import Progress

CHECKPOINT = "checkpoint.safetensors"
FOUNDATION = "foundation"
KIND = "taugate-lm-foundation"


@dataclass(frozen=True)
class PretrainConfig:
    """Optimization of the foundation; ``mixture``: the share of rows from each domain."""

    steps: int = 1500
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    mixture: dict = field(default_factory=lambda: {"code": 0.5, "prose": 0.5})

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        unknown = set(self.mixture) - set(DOMAINS)
        if unknown or not self.mixture or min(self.mixture.values()) < 0:
            raise ValueError(f"mixture: expected non-negative shares of {', '.join(DOMAINS)}, "
                             f"got {self.mixture!r}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(self.steps - self.warmup, 1)
        low = self.lr * self.min_lr_ratio
        return low + (self.lr - low) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def sample_windows(data: dict[str, np.ndarray], mixture: dict, seed: int, step: int,
                   seq_len: int, batch_size: int) -> torch.Tensor:
    """Batch ``step``: ``[batch_size, seq_len + 1]`` windows of ``data``'s domains drawn by
    ``mixture`` (shares), a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    names = sorted(n for n in mixture if mixture[n] > 0 and n in data)
    if not names:
        raise ValueError(f"mixture {mixture!r}: no positive share of a domain given "
                         f"({sorted(data)})")
    shares = np.array([mixture[n] for n in names], dtype=np.float64)
    pick = rng.choice(len(names), size=batch_size, p=shares / shares.sum())
    rows = []
    for k in pick:
        arr = data[names[k]]
        if arr.size <= seq_len + 1:
            raise ValueError(f"domain {names[k]!r}: {arr.size} bytes, expected more than "
                             f"{seq_len + 1}")
        start = int(rng.integers(0, arr.size - seq_len - 1))
        rows.append(arr[start : start + seq_len + 1])
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _state_tensors(model, opt) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                out[f"adam.exp_avg.{names[id(p)]}"] = st["exp_avg"].contiguous()
                out[f"adam.exp_avg_sq.{names[id(p)]}"] = st["exp_avg_sq"].contiguous()
                out[f"adam.step.{names[id(p)]}"] = torch.as_tensor(st["step"]).reshape(1).float()
    return out


def _restore(model, opt, tensors: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for n, p in model.named_parameters():
        if f"adam.exp_avg.{n}" in tensors:
            opt.state[p] = {"exp_avg": tensors[f"adam.exp_avg.{n}"].clone(),
                            "exp_avg_sq": tensors[f"adam.exp_avg_sq.{n}"].clone(),
                            "step": tensors[f"adam.step.{n}"].reshape(()).clone()}


def _optimizer(model, config: PretrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=config.lr, betas=(0.9, 0.95))


def _save_checkpoint(path: Path, model, opt, state: dict) -> None:
    data = st_save(_state_tensors(model, opt), metadata={"state": json.dumps(state)})
    write_bytes(path / CHECKPOINT, data)
    write_text(path / "state.json", json.dumps(state, indent=2))


def save_lm_foundation(model: TinyLlama, out: str | Path, extra: dict | None = None) -> str:
    """Write ``out/foundation.safetensors`` + ``.json``; returns the weights' sha256 (the same
    as training/adapters.py's ``foundation_sha256(model)``)."""
    out = Path(out)
    data = st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    sha = hashlib.sha256(data).hexdigest()
    meta = {"kind": KIND, "config": model.cfg.to_json(), "sha256": sha, **(extra or {})}
    write_bytes(out / f"{FOUNDATION}.safetensors", data)
    write_text(out / f"{FOUNDATION}.json", json.dumps(meta, indent=2))
    return sha


def load_lm_foundation(out: str | Path) -> tuple[TinyLlama, dict]:
    """The foundation :func:`save_lm_foundation` wrote (sha256 verified), in eval mode."""
    out = Path(out)
    meta_path, st_path = out / f"{FOUNDATION}.json", out / f"{FOUNDATION}.safetensors"
    if not meta_path.exists() or not st_path.exists():
        raise FileNotFoundError(f"{out.name}/{FOUNDATION}.json/.safetensors: missing "
                                f"(expected a pretrained language-model foundation)")
    meta = json.loads(meta_path.read_text("utf-8"))
    if meta.get("kind") != KIND:
        raise ValueError(f"{meta_path.name}: expected kind {KIND!r}, got {meta.get('kind')!r}")
    data = st_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise ValueError(f"{st_path.name}: sha256 does not match {meta_path.name}")
    model = TinyLlama(LMConfig(**meta["config"]))
    model.load_state_dict(st_load(data))
    return model.eval(), meta


def pretrain(cfg: LMConfig, config: PretrainConfig, data: dict[str, np.ndarray],
             out: str | Path, progress: bool = True) -> tuple[TinyLlama, dict]:
    """Pretrain (or resume from ``out/checkpoint.safetensors``) and write the foundation.

    ``data``: train bytes per domain. Returns the model and its metadata (losses, wall time).
    An ``out`` whose foundation is already complete for these configs and data is loaded as
    is; a checkpoint of other configs or data is started over."""
    out = Path(out)
    wanted = {"lm": cfg.to_json(), "pretrain": asdict(config),
              "data": {k: fingerprint(v) for k, v in sorted(data.items())}}
    if (out / f"{FOUNDATION}.json").exists():
        model, meta = load_lm_foundation(out)
        if meta.get("configs") == wanted:
            return model, meta
    torch.manual_seed(config.seed)
    model = TinyLlama(cfg)
    opt = _optimizer(model, config)
    state = {"configs": wanted, "step": 0, "losses": [], "seconds": 0.0}
    if (out / CHECKPOINT).exists():
        with safe_open(str(out / CHECKPOINT), "pt") as f:
            saved = json.loads((f.metadata() or {}).get("state", "{}"))
        if saved.get("configs") == wanted:  # another size or schedule starts over
            _restore(model, opt, st_load((out / CHECKPOINT).read_bytes()))
            state = saved
    bar = Progress("pretrain", config.steps, enabled=progress)
    bar.update(state["step"])
    model.train()
    started, window = time.perf_counter() - state["seconds"], []
    for step in range(state["step"], config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        batch = sample_windows(data, config.mixture, config.seed, step,
                               min(config.seq_len, cfg.context), config.batch_size)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), batch[:, 1:].reshape(-1))
        value = loss.item()
        if not math.isfinite(value):
            raise RuntimeError(f"pretrain: loss is {value} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        window.append(value)
        state["step"] = step + 1
        bar.update(loss=sum(window[-20:]) / len(window[-20:]))
        if state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps:
            state["losses"].append([state["step"], sum(window) / len(window)])
            window = []
            state["seconds"] = time.perf_counter() - started
            _save_checkpoint(out, model, opt, state)
    model.eval()
    extra = {"configs": wanted, "losses": state["losses"], "seconds": state["seconds"],
             "python": python_tag()}
    sha = save_lm_foundation(model, out, extra)
    return model, {"kind": KIND, "sha256": sha, **extra}
