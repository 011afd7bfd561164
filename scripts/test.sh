#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite, then ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/setup.sh
"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -p no:cacheprovider "$@"
