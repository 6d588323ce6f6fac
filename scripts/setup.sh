#!/usr/bin/env bash
# Create .venv and install the project with its test extra. Idempotent: re-runs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch and torchvision first, as a matching pair: torchvision's compiled ops only load beside
    # the torch they were built for (a mismatched pair fails with "operator torchvision::nms does not exist").
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi
