# Set-up, the default demo, tests, the throughput benchmark and lint. Everything runs in ./.venv.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; set TORCH=torch for your platform's default build (e.g. CUDA).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test bench lint clean gpu-wheels gpu-check gpu-rehearsal

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,tensorboard]"
	touch $@

demo: install
	$(BIN)/degrade sweep --depths 8,20,56
	$(BIN)/degrade plot
	$(BIN)/degrade report

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/degrade bench --sweep

# Where there is a network: the wheels a CUDA machine without one needs for gpu-check (.whl/).
gpu-wheels: install
	scripts/gpu-wheels.sh $(BIN)/python

# On a CUDA machine (no network needed, no venv: $(PYTHON) must have torch with CUDA).
gpu-check:
	PYTHON=$(PYTHON) scripts/gpu-check.sh

# The same steps at toy sizes on the CPU (the suite runs this too).
gpu-rehearsal: install
	$(BIN)/python scripts/gpu_check.py --cpu

lint: install
	$(BIN)/ruff check degrade tests

clean:
	rm -rf $(VENV) outputs .gpu-site
