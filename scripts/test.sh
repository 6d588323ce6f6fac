#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (offline, CPU). Extra arguments go to pytest
# (a file, -k NAME, -x ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# transformers' common model tests for the installed transformers (from its sdist on PyPI; cached after the first time)
.venv/bin/python tests/transformers_suite.py
# pytest's default verbosity: a line per test file, written when the file starts; a test that runs long names
# itself every minute (tests/conftest.py); the summary lists failures and errors only (pyproject.toml).
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
