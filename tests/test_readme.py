"""README.md as a tutorial that runs: every ```python example block is a complete program.

The blocks run in order, each in a fresh interpreter, in one scratch directory (the runtime
example reads what the training example wrote), on real MNIST from $TAUGATE_DATA. The only
change made to them is the data size: ``DataConfig()`` gets small limits so the suite stays
fast; the test fails if a block no longer contains it, so the substitution cannot go stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = "DataConfig(limit_train=3000, limit_test=500, calibration_size=500)"


def examples() -> list[str]:
    return re.findall(r"^```python example\n(.*?)^```", README.read_text("utf-8"), re.DOTALL | re.MULTILINE)


def test_readme_has_examples():
    blocks = examples()
    assert len(blocks) >= 2
    assert sum("DataConfig()" in b for b in blocks) >= 1


def test_readme_examples_run(data_root, tmp_path):
    env = {**os.environ, "TAUGATE_DATA": data_root, "MPLBACKEND": "Agg",
           "PYTHONPATH": str(README.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for i, block in enumerate(examples()):
        code = block.replace("DataConfig()", SMALL)
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, f"README example {i + 1} failed:\n{code}\n{done.stderr}"
    out = done.stdout.splitlines()  # the runtime example's
    assert out[0] == "['rot0', 'rot45', 'rot-30']" and "'angle': 45" in out[1]
    assert out[3] == "(8, 10)"
    assert (tmp_path / "bundle" / "manifest.json").is_file()
