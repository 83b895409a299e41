#!/bin/sh
# Builds the agent component: ./{{name}}.wasm (installs the pinned componentize-js into node_modules first).
set -eu
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
CORRAL_WIT=wit CORRAL_SDK=corral-sdk/index.js node build.mjs . {{name}}.wasm
