#!/usr/bin/env bash
# Create .venv (if missing) and install relatent with its test extras.
# torch/torchvision resolve to the wheels on this machine's disk (pip is capped at
# torch<=2.14.1 here, and pyproject.toml asks for no newer release).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
