#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) on a CUDA machine that may have no network.
#
# Uses $PYTHON (default python3), which must have torch with CUDA. Whatever else degrade needs
# and that Python lacks (hydra-core, omegaconf, antlr4, submitit, the Hydra launcher plugins) is
# installed offline from the wheels `make gpu-wheels` put in .whl/, into .gpu-site/ (put on
# PYTHONPATH); degrade itself runs from this source tree. Arguments go to gpu_check.py
# (e.g. --cpu for the rehearsal).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
needs='import hydra, omegaconf, antlr4, submitit, hydra_plugins.hydra_joblib_launcher, hydra_plugins.hydra_submitit_launcher'
if ! "$PY" -c "$needs" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "error: $PY lacks degrade's dependencies and .whl/ has no wheels; run 'make gpu-wheels' where there is a network and bring .whl/ along" >&2
        exit 2
    fi
    rm -rf .gpu-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target .gpu-site .whl/*.whl
    export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "$needs"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py "$@"
