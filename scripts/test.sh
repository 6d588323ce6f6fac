#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (offline, CPU). Extra arguments go to pytest
# (a file, -k NAME, -x ...), which then runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# transformers' common model tests for the installed transformers (from its sdist on PyPI; cached after the first time)
.venv/bin/python tests/transformers_suite.py
# The whole suite (no arguments) runs in pytest-xdist's workers, one per CPU up to 4 (tests/suite_runner.py shares the
# CPUs out among them as threads): on 2 cores in about 2/3 of the time of one pytest process, as much of the suite is
# single-threaded (starting interpreters, imports, saving, ONNX export; BENCHMARKS.md). --maxschedchunk 1: tests are
# handed out a few at a time as workers free up (xdist keeps two waiting on each), not in blocks, so the slow tests,
# which start first, spread over the workers. With arguments (a file, -k, -x, --pdb), pytest runs in one process as
# they expect, unless they ask for workers themselves (-n 2). One CPU: always one process.
workers=()
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) # the CPUs this process may use: nproc alone counts OMP's
if [ "$#" -eq 0 ] && [ "$cpus" -gt 1 ]; then
    workers=(-n "$((cpus < 4 ? cpus : 4))" --maxschedchunk 1)
fi
# pytest's default verbosity: with workers a dot per test, in one process a line per test file; a test that runs long
# names itself every minute (tests/suite_runner.py); the summary lists failures and errors only (pyproject.toml).
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest ${workers[@]+"${workers[@]}"} "$@"
