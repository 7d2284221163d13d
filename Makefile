# Set-up, the default demo, tests, the throughput benchmark and lint. Everything runs in ./.venv.
PYTHON ?= python3
VENV ?= .venv
# The Ray extra pins older cloudpickle and joblib: its test gets a venv of its own.
RAY_VENV ?= .venv-ray
# The CPU build of torch; set TORCH=torch for your platform's default build (e.g. CUDA).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
comma := ,

.PHONY: install demo test test-ray bench lint docs docs-serve clean gpu-wheels gpu-check gpu-rehearsal

# A venv at $(1) with torch and the project (editable) with the extras $(2).
define make-venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q "$(TORCH)"
	$(1)/bin/python -m pip install -q -e ".[$(2)]"
	touch $(1)/.installed
endef

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(call make-venv,$(VENV),dev$(comma)tensorboard$(comma)docs)

$(RAY_VENV)/.installed: pyproject.toml
	$(call make-venv,$(RAY_VENV),dev$(comma)ray)

demo: install
	$(BIN)/degrade sweep --depths 8,20,56
	$(BIN)/degrade plot
	$(BIN)/degrade report

# Spread over the cores by test file (a file's fixtures are built once, in one worker).
test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The Ray launcher's test (a local Ray in a loopback-only network namespace; needs root).
test-ray: $(RAY_VENV)/.installed
	$(RAY_VENV)/bin/python -m pytest -q -m ray -rA tests/test_ray.py

bench: install
	$(BIN)/degrade bench --concurrent

# Where there is a network: the wheels a CUDA machine without one needs for gpu-check (.whl/).
gpu-wheels: install
	scripts/gpu-wheels.sh $(BIN)/python

# On a CUDA machine (no network needed, no venv: $(PYTHON) must have torch with CUDA).
gpu-check:
	PYTHON=$(PYTHON) scripts/gpu-check.sh

# The same steps at toy sizes on the CPU (the suite runs this too).
gpu-rehearsal: install
	$(BIN)/python scripts/gpu_check.py --cpu

# The gates CI runs before the tests (and .pre-commit-config.yaml on each commit).
lint: install
	$(BIN)/ruff check degrade tests hydra_plugins scripts
	$(BIN)/ruff format --check degrade tests hydra_plugins scripts
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into site/; any warning fails (the test suite builds it too).
# NO_MKDOCS_2_WARNING: the theme's end-of-life banner is news about the theme, not about these pages.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The site at http://127.0.0.1:8000, rebuilt as the pages change.
docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) $(RAY_VENV) outputs .gpu-site site .cache
