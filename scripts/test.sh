#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (offline, CPU). Extra arguments go to pytest
# (a file, -k NAME, -x ...; -n 0 runs the tests one after another in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# transformers' common model tests for the installed transformers (from its sdist on PyPI; cached after the first time)
.venv/bin/python tests/transformers_suite.py
# pytest-xdist workers, one per CPU up to 4 (tests/conftest.py shares the CPUs out among them as threads): on 2 cores
# two workers take about 2/3 of the time of one pytest process, because much of the suite is single-threaded
# (starting interpreters, imports, saving, ONNX export; BENCHMARKS.md). One CPU: no workers, the tests run in
# pytest's own process. --maxschedchunk 1: a worker gets its next test when it is free, so the slow tests, which
# start first, do not queue behind each other.
cpus=$(nproc)
workers=$((cpus < 4 ? cpus : 4))
if [ "$workers" -eq 1 ]; then
    workers=0
fi
# pytest's default verbosity: a dot per test; a test that runs long names itself every minute (tests/conftest.py);
# the summary lists failures and errors only (pyproject.toml).
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -n "$workers" --maxschedchunk 1 "$@"
