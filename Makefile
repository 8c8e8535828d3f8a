# aestudy: `make run` executes the notebook series, `make test` runs everything CI checks.
# Both set the environment up first (idempotent). See README.md.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.aestudy-setup
PROFILE ?= standard

# CPU-only machines get the CPU build of torch pinned by constraints/cpu.txt (fast, small);
# machines with an NVIDIA driver resolve torch normally (a CUDA build). Override with TORCH=cpu|cuda.
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH ?= $(if $(HAS_NVIDIA),cuda,cpu)
ifeq ($(TORCH),cpu)
PIP_TORCH := -c constraints/cpu.txt
else
PIP_TORCH :=
endif

.PHONY: setup data browser run timings test lint unit notebooks e2e bench lab clean help gpu-wheels gpu-check

help:
	@echo "make setup  - create .venv, install aestudy[dev,bench], register the 'aestudy' kernel, fetch data"
	@echo "make run    - setup, then run the notebook series with papermill into runs/ (PROFILE=$(PROFILE))"
	@echo "make timings RUN=runs/NAME [NOTE=...] - merge that run's wall times into notebooks/timings.json"
	@echo "make test   - setup, then ruff + unit tests + notebooks (smoke) + browser tests"
	@echo "make bench  - setup, then the training-speed / quality benchmarks"
	@echo "make lab    - JupyterLab on the venv, opened on notebooks/"

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints/cpu.txt
	@echo "==> creating virtual environment $(VENV) (torch: $(TORCH) build)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> installing aestudy (editable) with extras dev,bench"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(PIP_TORCH) -e '.[dev,bench]'
	@echo "==> registering Jupyter kernel 'aestudy' inside the venv"
	$(BIN)/python -m ipykernel install --sys-prefix --name aestudy --display-name "Python (aestudy)" >/dev/null
	@touch $(STAMP)

# Fetch Fashion-MNIST (local copy, Debian package, or checksummed download). As root on Debian/Ubuntu,
# install the `dataset-fashion-mnist` package when every other route failed.
data: $(STAMP)
	@echo "==> fetching the default dataset (fashion-mnist)"
	@$(BIN)/aestudy data fetch fashion-mnist || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "==> installing Debian package dataset-fashion-mnist"; \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	    $(BIN)/aestudy data fetch fashion-mnist; \
	  else exit 1; fi; }

# Debian's Chromium for the browser tests (never `playwright install`, which downloads a browser).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "==> installing Debian package chromium (browser tests)"; \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	fi

run: setup
	$(BIN)/aestudy run --profile $(PROFILE)

# The run time each notebook shows at its top is read from notebooks/timings.json; this merges a finished run's
# wall times into it (NOTE: how it ran when that matters, e.g. "5 notebooks at once").
timings: $(STAMP)
	@test -n "$(RUN)" || { echo "make timings needs RUN=runs/NAME (a finished aestudy run)"; exit 2; }
	$(BIN)/python -m aestudy.runner.timings "$(RUN)" "$(NOTE)"

lint: $(STAMP)
	@echo "==> ruff"
	$(BIN)/ruff check .

# Two pytest-xdist workers (whole files each: nbval cells and module fixtures stay together) keep both cores busy;
# one worker left the second core mostly idle while the other ran pure-Python or single-threaded torch work.
TEST_WORKERS ?= 2

# The suite runs several processes at once on few cores (pytest, kernels, JupyterLab, Chromium, Dask workers);
# one OpenMP/BLAS thread each avoids oversubscription, which was measured here to slow torch 10-30x.
test: setup browser lint
	@echo "==> pytest (unit, notebooks in the smoke profile, end-to-end)"
	OMP_NUM_THREADS=1 AESTUDY_PROFILE=smoke $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests notebooks \
	  --nbval-lax --nbval-current-env --nbval-sanitize-with $(CURDIR)/tests/nbval_sanitize.cfg --durations=15

bench: setup
	$(BIN)/python -m benchmarks.train_speed

# The study on a GPU machine without network (benchmarks/README.md, "On a GPU"): gpu-wheels here fills the
# git-ignored .gpu-carry/ (wheels the machine lacks + Fashion-MNIST); gpu-check runs there with it carried.
gpu-wheels:
	bash benchmarks/gpu_check.sh --prepare --python $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

gpu-check:
	bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
