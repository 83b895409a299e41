#!/bin/sh
# Builds the agent and calls it through `corral call` (set CORRAL to the binary if it is not on PATH).
set -eu
cd "$(dirname "$0")"
corral="${CORRAL:-corral}"
./build.sh
out=$("$corral" call {{name}}.wasm --input '{"name": "corral", "excited": true}' --json)
case "$out" in
  *'"greeting":"Hello, corral!"'*) echo "ok: $out" ;;
  *) echo "unexpected output: $out" >&2; exit 1 ;;
esac
# The host checks the input against the agent's schema: a wrong type is refused (exit 4).
set +e
"$corral" call {{name}}.wasm --input '{"name": 7}' >/dev/null 2>&1
code=$?
set -e
[ "$code" -eq 4 ] || { echo "a schema violation exited $code, not 4" >&2; exit 1; }
echo "ok: a schema violation is refused"
