"""Decode tokens/s against the kept FFN fraction (issue 22, item 4): builds one LM bundle with a
mode per kept fraction (taugate/lab/lm_speed_sweep.py) and measures every model side by side:
batch-1 and batch-8 decode tokens/s (fp32 and int8, one thread, interleaved rounds, medians),
time to first token, and memory (graph bytes and resident growth on opening).

    python scripts/measure_lm_speed.py                       # random weights, the default size
    python scripts/measure_lm_speed.py --foundation out/lm/foundation

Writes docs/measured/lm-speed-default.json (every cell, the load before and after each batch)
and docs/figures/lm-tokens-vs-kept-default.png (``--json`` / ``--figure`` to choose). Needs taugate[train] and matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from taugate.lab.lm_speed_sweep import DEFAULT_FRACTIONS, kept_modes, measure, plot

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--foundation", type=Path, help="a directory with foundation.safetensors "
                    "+ .json (taugate lm's pretraining); default: random weights")
    ap.add_argument("--size", default="default", help="walk-through size of the random "
                    "foundation (taugate/lab/lm.py SIZES)")
    ap.add_argument("--kept", type=float, nargs="+", default=list(DEFAULT_FRACTIONS))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--json", type=Path, default=ROOT / "docs/measured/lm-speed-default.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs/figures/lm-tokens-vs-kept-default.png")
    args = ap.parse_args()

    import torch

    from taugate.exporting.lm_bundle import write_lm_bundle
    from taugate.lab.lm import SIZES
    from taugate.training.lm.model import LMConfig, TinyLlama
    from taugate.training.lm.pretrain import load_lm_foundation

    torch.set_num_threads(1)
    if args.foundation:
        foundation, _ = load_lm_foundation(args.foundation)
        source = f"foundation {args.foundation.name}"
    else:
        torch.manual_seed(0)
        foundation = TinyLlama(LMConfig(**SIZES[args.size].lm)).eval()
        source = f"random weights, size {args.size!r}"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="taugate-lm-speed-") as tmp:
        bundle = write_lm_bundle(foundation, kept_modes(foundation, args.kept), Path(tmp) / "b")
        result = measure(bundle, rounds=args.rounds, new_tokens=args.new_tokens)
    result = {"source": source, "lm": foundation.cfg.to_json(), "threads": 1,
              "cpu_count": os.cpu_count(), "seconds": round(time.perf_counter() - started, 1),
              **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.figure)
    dense = result["speed"]["batch1"]["models"]["dense"]
    for m, runs in result["speed"]["batch1"]["models"].items():
        print(m, result["facts"][m].get("ffn_mac_ratio"),
              {p: round(r["tokens_per_s"] / dense[p]["tokens_per_s"], 2) for p, r in runs.items()})
    print(f"wrote {args.json.name} and {args.figure.name}")


if __name__ == "__main__":
    main()
