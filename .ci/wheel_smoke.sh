#!/usr/bin/env bash
# Build the wheel and the sdist (python -m build), install each into a fresh venv and smoke-test
# it: `taugate --help`, and open a tiny bundle with the runtime (which must not import torch).
# Kept fast and offline: --no-isolation builds with this environment's setuptools; the fresh
# venv installs taugate alone (--no-deps), and a .pth line makes this environment's numpy +
# onnxruntime (the runtime's dependencies) importable there. taugate itself comes only from the
# installed wheel/sdist: the smoke test checks that it is imported from the fresh venv.
# Usage: PY=.venv/bin/python .ci/wheel_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m build --no-isolation --wheel --sdist --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
deps=$("$PY" -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
"$PY" -c "from taugate.exporting.synthetic import build_random_bundle as b; b('$work/tiny')"
for dist in "$work"/dist/*.whl "$work"/dist/*.tar.gz; do
  rm -rf "$work/venv"
  "$PY" -m venv --without-pip "$work/venv"
  site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$deps" > "$site/_smoke_deps.pth"
  # pip and setuptools (to build the sdist) come from $deps through the .pth line
  (cd "$work" && "$work/venv/bin/python" -m pip install --quiet --no-deps --no-index \
     --no-build-isolation "$dist")
  (cd "$work" && "$work/venv/bin/taugate" --help | grep predict > /dev/null)
  (cd "$work" && "$work/venv/bin/python" - "$work/tiny" <<'PYEOF'
import sys

import numpy as np

import taugate
from taugate.runtime import ModeRuntime

assert taugate.__file__.startswith(sys.prefix), f"taugate imported from {taugate.__file__}"
rt = ModeRuntime.open(sys.argv[1])
assert rt.predict("rot0", np.zeros((2, 784), np.float32)).shape == (2,)
assert "torch" not in sys.modules, "the runtime imported torch"
PYEOF
  )
  echo "wheel smoke: $(basename "$dist") OK"
done
