"""Measure what the default adaptation budget gains on a small mode (issue: modes that win on
small data): a tabular user model trained on clean rows, adapted to a shifted mode with 500
training rows, through taugate.train with the default budget, the paper's one epoch
(adapt_min_steps=0) and a long run. Prints one line per run: optimizer steps and test accuracy
(frozen vs adapted, soft gate).

    PYTHONPATH=$PWD python scripts/measure_small_data.py [--rows 500] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import numpy as np
import torch


def data(seed: int, rows: int, shift: str = "offset"):
    """Teacher-labelled 64-feature rows; the shifted mode adds 0.8 to every feature
    (``offset``) or scales and offsets half of them (``scale``: scripts/measure_layouts.py's
    tabular data)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(64, 10)).astype(np.float32)

    def split(n, shifted):
        x = rng.normal(size=(n, 64)).astype(np.float32)
        y = (x @ teacher).argmax(1).astype(np.int64)
        if shifted and shift == "offset":
            x = x + np.float32(0.8)
        elif shifted:
            x[:, ::2] = 1.8 * x[:, ::2] + 0.6
        return x, y

    return split(12000, False), {"shifted": {"train": split(rows, True),
                                             "test": split(2000, True)}}


def user_model(clean, seed: int) -> torch.nn.Module:
    """The user's model, trained on clean rows only (Adam, 5 epochs)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    x, y = (torch.from_numpy(a) for a in clean)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(5):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    import taugate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--seeds", default="0")
    p.add_argument("--long-steps", type=int, default=2000)
    p.add_argument("--shift", choices=("offset", "scale"), default="offset")
    args = p.parse_args()
    runs = {"paper (1 epoch)": {"adapt_min_steps": 0}, "default": {},
            f"long ({args.long_steps} steps)": {"adapt_min_steps": args.long_steps}}
    for seed in (int(s) for s in args.seeds.split(",")):
        clean, modes = data(seed, args.rows, args.shift)
        model = user_model(clean, seed)
        for label, options in runs.items():
            with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                o = taugate.train(modes, out, model=model, seed=seed, **options).outcomes["shifted"]
            print(f"{args.shift} seed {seed} rows {args.rows} {label:>20}: {o.steps:5d} steps, frozen "
                  f"{o.frozen:.4f}, adapted {o.adapted:.4f} ({100 * (o.adapted - o.frozen):+.1f} "
                  f"points), {len(w)} warning(s)", flush=True)


if __name__ == "__main__":
    main()
