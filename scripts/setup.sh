#!/usr/bin/env bash
# Create .venv and install the project with its test extra. Idempotent: re-runs only when pyproject.toml changes.
# Prints one line per step; pip's own output only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "setup: creating .venv with $("$PYTHON" --version)"; "$PYTHON" -m venv .venv; }
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    log=.venv/install.log
    run() {  # a step's pip output goes to the log, shown only if the step fails
        if ! "$@" >>"$log" 2>&1; then
            echo "setup: failed: $*" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
    }
    : >"$log"
    echo "setup: upgrading pip"
    run .venv/bin/python -m pip install --upgrade pip
    # torch and torchvision first, as a matching pair: torchvision's compiled ops only load beside
    # the torch they were built for (a mismatched pair fails with "operator torchvision::nms does not exist").
    echo "setup: installing torch 2.14.1 and torchvision 0.29.1 (a few minutes the first time)"
    run .venv/bin/python -m pip install "torch==2.14.1" "torchvision==0.29.1"
    echo "setup: installing swin_tiny_hf and its test tools (pip install -e '.[test]')"
    run .venv/bin/python -m pip install -e ".[test]"
    touch "$stamp"
    echo "setup: done (.venv; the log of the install is $log). Activate it with: source .venv/bin/activate"
fi
# accelerate's default config for this machine (its processes, GPUs or CPU), once: without one, every
# `accelerate launch` warns about the values it had to assume. `accelerate config` changes it.
if ! .venv/bin/python -c "from accelerate.commands.config.config_args import default_config_file as f; import os, sys; sys.exit(not os.path.isfile(f))"; then
    .venv/bin/accelerate config default >/dev/null
    echo "setup: wrote accelerate's default config for this machine (accelerate config default); change it with: accelerate config"
fi
