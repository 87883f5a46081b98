#!/usr/bin/env bash
# Create .venv and install fl-election with its dev tools (the README's set-up step).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch and torchvision first, pinned to the builds this workplace serves from disk.
python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
python -m pip install --quiet -e ".[dev,byzfl]"
echo "fl-election installed in $(pwd)/.venv; activate with: . .venv/bin/activate"
