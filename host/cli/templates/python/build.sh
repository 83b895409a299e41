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
# An agent that sends HTTP requests (`http = [...]`, `corral_sdk.http`) lists
# `http` in a `features` file and is built against the `agent-http` world.
world=agent
if [ -f features ] && grep -qw http features; then world=agent-http; fi
PYTHONDONTWRITEBYTECODE=1 "$tool" --quiet -d wit -w "$world" componentize app -p . -o {{name}}.wasm
echo "built {{name}}.wasm"
