#!/usr/bin/env bash
# Installs tensordb with the extras named in $1 (default: test) into the project's Python (scripts/python.sh).
# torch==2.13.0 goes first: it is the local CPU build; any other torch pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-test}"
source scripts/python.sh
PIP=("$PYTHON" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[$EXTRAS]"
