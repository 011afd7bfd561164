#!/usr/bin/env bash
# Installs tensordb and its test/benchmark extras into the current Python.
# torch==2.13.0 goes first: it is the local CPU build; any other torch pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"
