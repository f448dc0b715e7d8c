# Set-up and main entry points. Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On a machine without an NVIDIA GPU, install the CPU torch wheel first (otherwise pip would pick a multi-GB CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

.PHONY: demo test test-tf517 clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/.installed  ## train a small BD-LRU on a synthetic task, save, reload with AutoModelForCausalLM, generate
	$(BIN)/python scripts/demo.py

test: $(BIN)/.installed  ## the whole CPU test suite (Triton kernels under TRITON_INTERPRET=1)
	$(BIN)/python -m pytest -q tests

# The same suite against the oldest supported transformers (5.17), in its own venv.
VENV517 := .venv-tf517
$(VENV517)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV517)
	$(VENV517)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV517)/bin/pip install -q -e ".[dev]" "transformers==5.17.0"
	touch $@

test-tf517: $(VENV517)/bin/.installed
	$(VENV517)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) $(VENV517) .pytest_cache
