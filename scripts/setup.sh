#!/usr/bin/env bash
# Create .venv and install the project with its test extra. Idempotent: installs again only when the
# dependencies in pyproject.toml change. Prints one line per step; pip's own output only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "setup: creating .venv with $("$PYTHON" --version)"; "$PYTHON" -m venv .venv; }
# The stamp names the hash of pyproject.toml less its test and lint settings ([tool.pytest...], [tool.ruff...]):
# a change there needs no new install.
stamp=".venv/.installed-$(awk '/^\[/ { skip = /^\[tool\.(pytest|ruff)/ } !skip' pyproject.toml | sha1sum | cut -c1-12)"
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
    # --no-compile, then one compileall on every core: pip writes each package's bytecode on one core, which took
    # a third of the install here (torch alone: 39 s with, 20 s without). The bytecode is still written, so that no
    # process compiles the packages' sources on import (nor fails to cache them, under PYTHONDONTWRITEBYTECODE).
    echo "setup: installing torch 2.14.1 and torchvision 0.29.1 (a minute or more the first time)"
    run .venv/bin/python -m pip install --no-compile "torch==2.14.1" "torchvision==0.29.1"
    echo "setup: installing swin_tiny_hf and its test tools (pip install -e '.[test]')"
    run .venv/bin/python -m pip install --no-compile -e ".[test]"
    compile_bytecode() {
        # Exit status 1 says some files did not compile: packages ship files that are not Python 3 (templates, code
        # for another Python), which pip's own step skips too. Anything above 1 (killed, crashed) fails the set-up,
        # so that the next run installs again.
        .venv/bin/python -m compileall -q -j 0 .venv/lib || [ $? -eq 1 ]
    }
    echo "setup: writing the packages' bytecode"
    run compile_bytecode
    rm -f .venv/.installed-*
    touch "$stamp"
    echo "setup: installed in ${SECONDS} s (pip's log: $log)"
    echo "setup: in each new shell, activate the environment first: source .venv/bin/activate"
fi
# accelerate's default config for this machine (its GPUs, or the CPU), once: without one, every
# `accelerate launch` warns about the values it had to assume. `accelerate config` changes it.
# The path accelerate reads (accelerate.commands.config.config_args.default_config_file), found without
# importing accelerate (and torch), which takes seconds.
accelerate_config="${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/accelerate/default_config.yaml"
if [ ! -f "$accelerate_config" ]; then
    .venv/bin/accelerate config default >/dev/null
    echo "setup: wrote accelerate's default config for this machine ($accelerate_config); change it with: accelerate config"
fi
