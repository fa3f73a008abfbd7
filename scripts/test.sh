#!/usr/bin/env bash
# Installs limner with its development tools, then runs the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ruff check src tests
mypy src/limner
python -m pytest -q "$@"
