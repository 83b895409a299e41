#!/bin/sh
# Builds the agent component: ./{{name}}.wasm (installs the pinned componentize-py into .venv first).
set -eu
cd "$(dirname "$0")"
# COMPONENTIZE_PY may name an installed componentize-py of the same version.
tool="${COMPONENTIZE_PY:-.venv/bin/componentize-py}"
if [ ! -x "$tool" ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
PYTHONDONTWRITEBYTECODE=1 "$tool" --quiet -d wit -w agent componentize app -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
