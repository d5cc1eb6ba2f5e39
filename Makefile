# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
# The data root comes from TAUGATE_DATA (default: a user cache directory, downloaded on first use).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test bench report reproduce sweep clean

$(BIN)/taugate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: $(BIN)/taugate
	$(BIN)/taugate demo --out $(OUT)

test: $(BIN)/taugate
	$(BIN)/python -m pytest -q

bench: $(BIN)/taugate
	mkdir -p out/bench
	$(BIN)/python -m pytest benchmarks -q --benchmark-json out/bench/benchmarks.json

report: $(BIN)/taugate
	$(BIN)/taugate report --bench out/bench/benchmarks.json --out report

clean:
	rm -rf out report .pytest_cache .benchmarks
