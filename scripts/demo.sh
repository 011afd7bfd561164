#!/usr/bin/env bash
# Sets up (idempotent) and runs the main demo: build a store, train Deep Memory, evaluate, query.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/setup.sh
"$PYTHON" -m tensordb demo "$@"
