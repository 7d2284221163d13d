#!/usr/bin/env bash
# Fetch into .whl/ the wheels the GPU check needs on a CUDA machine without a network: the
# versions of this venv's hydra-core, omegaconf, antlr4-python3-runtime, submitit and Hydra
# launcher plugins (all pure Python; antlr4 4.9.3 exists only as source and is built here).
# Usage: scripts/gpu-wheels.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
names = ["hydra-core", "omegaconf", "antlr4-python3-runtime", "submitit",
         "hydra-joblib-launcher", "hydra-submitit-launcher"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
rm -rf .whl && mkdir -p .whl
# --no-deps: the GPU image has the rest (PyYAML, packaging, cloudpickle, joblib, typing_extensions).
"$PY" -m pip wheel -q --no-deps --disable-pip-version-check -w .whl $pins
ls -l .whl
du -sh .whl
