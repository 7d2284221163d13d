# Set-up, the default demo, tests, the throughput benchmark and lint. Everything runs in ./.venv.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; set TORCH=torch for your platform's default build (e.g. CUDA).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/degrade sweep --depths 8,20,56
	$(BIN)/degrade plot

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/degrade bench --sweep

lint: install
	$(BIN)/ruff check degrade tests hydra_plugins

clean:
	rm -rf $(VENV) outputs
