#!/bin/sh
# Builds the agent component: ./{{name}}.wasm (installs the pinned componentize-py into .venv first).
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/componentize-py --quiet -d wit -w agent componentize app -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
