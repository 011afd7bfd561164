#!/usr/bin/env bash
# Sets up (idempotent) and runs ruff, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
bash scripts/setup.sh test
"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -p no:cacheprovider "$@"
