#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (offline, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# transformers' common model tests for the installed transformers (from its sdist on PyPI; cached after the first time)
.venv/bin/python tests/transformers_suite.py
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q "$@"
