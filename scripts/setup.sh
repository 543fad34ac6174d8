#!/usr/bin/env bash
# Create .venv (if needed) and install the project with the train, test, central and fhir extras.
# Idempotent: re-installs only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "==> installing the project and its train/test/central/fhir extras into .venv (first time: a few minutes)"
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[train,test,central,fhir]"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup failed: pip could not install the project (full log: $log)" >&2
        exit 1
    fi
    .venv/bin/python -c "import bedside, trainer, export, devices, torch, onnxruntime" \
        || { echo "setup failed: the packages above do not import; see pip's messages" >&2; exit 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
fi
