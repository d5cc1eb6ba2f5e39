# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
# The data root comes from TAUGATE_DATA (default: a user cache directory, downloaded on first use).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo
# TORCH=cpu installs torch and torchvision from PyTorch's CPU wheel index first (no CUDA
# libraries nor triton, about 4 GB less on Linux); empty = pip's default torch build.
TORCH ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH: expected 'cpu' or nothing, got '$(TORCH)')
endif

.PHONY: demo test test-compat bench report reproduce sweep clean wheel-smoke readme-demo peers lm

$(BIN)/taugate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifeq ($(TORCH),cpu)
	$(BIN)/python -m pip install --index-url $(TORCH_CPU_INDEX) 'torch>=2.4' 'torchvision>=0.19'
endif
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: $(BIN)/taugate
	$(BIN)/taugate demo --out $(OUT)

test: $(BIN)/taugate
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The training code on torch 2.4.1 / torchvision 0.19.1, the versions torch-directml 0.2.5 pins,
# with torch-directml installed (on Linux it cannot load: `--device auto` must fall back).
# A second venv; measured here under load: 2-5.5 min to install from PyPI, 4 min of tests (2 cores).
COMPAT_VENV ?= .venv-compat
COMPAT_PINS := torch==2.4.1 torchvision==0.19.1 torch-directml==0.2.5.dev240914
COMPAT_TESTS := tests/test_devices.py tests/test_methods.py tests/test_adapters.py \
	tests/test_sparsity.py tests/test_sources_mnist.py tests/test_experiment.py tests/test_end_to_end.py \
	tests/test_hardened.py tests/test_prune.py tests/test_export_families.py tests/test_compact.py \
	tests/test_vit_export.py tests/test_api.py

$(COMPAT_VENV)/bin/python: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install $(COMPAT_PINS) -e '.[train]' pytest
	touch $@

test-compat: $(COMPAT_VENV)/bin/python
	$(COMPAT_VENV)/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.4.1'), torch.__version__; print('compat leg: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

# TAUGATE_DATA set: a small seeded training run on real MNIST (~2 min); unset: a random tiny bundle.
bench: $(BIN)/taugate
	mkdir -p out/bench
	$(BIN)/python -m pytest benchmarks -q --bundle-out out/bench/bundle --benchmark-json out/bench/benchmarks.json

# A byte-level LLaMA-layout model pretrained on the stdlib's code and pydoc's prose, one FFN mode
# per domain; resumes from out/lm; writes out/lm/results.json (docs/lm.md). LM_SIZE=small: reduced; narrow: FFN 4x the width.
LM_SIZE ?= default
lm: $(BIN)/taugate
	$(BIN)/taugate lm --out out/lm --size $(LM_SIZE)

# TauGate (sparse) beside Torch-Pruning, a small MLP from scratch and dense int8, in one run.
peers: $(BIN)/taugate
	$(BIN)/taugate train --out out/peers/run --sparse --quiet
	$(BIN)/taugate peers out/peers/run --out out/peers

reproduce: $(BIN)/taugate
	$(BIN)/taugate reproduce --extras --out experiments/out

sweep: $(BIN)/taugate
	$(BIN)/taugate sweep --widths 128,512,1024 --out out/sweep

report: $(BIN)/taugate
	$(BIN)/taugate report --bench out/bench/benchmarks.json --bundle out/bench/bundle --reproduce experiments/out --sweep out/sweep --out report

# python -m build: a wheel and an sdist, each installed into a fresh venv and smoke-tested
wheel-smoke: $(BIN)/taugate
	PY=$(BIN)/python .ci/wheel_smoke.sh

# Regenerate the README's demo table from a real run (between the readme-demo markers)
readme-demo: $(BIN)/taugate
	$(BIN)/python scripts/readme_demo.py --out $(OUT)

clean:
	rm -rf out report .pytest_cache .benchmarks
