"""How tests/data/v1_bundle and tests/data/v1_expected.npz were made (kept for the record).

Run once at commit bff6efe (the last release writing format_version 1), with that commit's
exporter and runtime:  PYTHONPATH=. python tests/data/make_v1_bundle.py
It cannot be rerun with later code (the writer now writes format 2); the files it wrote are the
fixture of tests/test_runtime_v1_compat.py.
"""

from pathlib import Path

import numpy as np

from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import ModeRuntime

HERE = Path(__file__).parent

if __name__ == "__main__":
    path = build_random_bundle(HERE / "v1_bundle", modes=("rot0", "rot45"), seed=7, widths=(8, 6),
                               pruned=True, n_examples=64)
    rng = np.random.default_rng(11)
    x = rng.random((5, 784), dtype=np.float32)
    u8 = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with ModeRuntime.open(path, providers="cpu") as rt:
        out = {"x": x, "u8": u8}
        for mode in ("dense", *rt.modes):
            out[f"logits_{mode}"] = rt.run(mode, x)
            out[f"u8_logits_{mode}"] = rt.run(mode, u8)
    np.savez(HERE / "v1_expected.npz", **out)
