# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
# The data root comes from TAUGATE_DATA (default: a user cache directory, downloaded on first use).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test bench peers report reproduce sweep clean

$(BIN)/taugate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
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

clean:
	rm -rf out report .pytest_cache .benchmarks
