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

.PHONY: demo test bench report reproduce sweep clean wheel-smoke readme-demo

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
	$(BIN)/python -m pytest -q

# TAUGATE_DATA set: a small seeded training run on real MNIST (~2 min); unset: a random tiny bundle.
bench: $(BIN)/taugate
	mkdir -p out/bench
	$(BIN)/python -m pytest benchmarks -q --bundle-out out/bench/bundle --benchmark-json out/bench/benchmarks.json

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
