#!/usr/bin/env bash
# Installs limner with its development tools, then runs the linters and the test suite.
# Usage: scripts/test.sh [--fast] [pytest arguments]. --fast leaves out the tests marked
# slow (torch.compile, OpenVINO conversion, whole-model loads and real server processes);
# CI runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ruff check src tests benchmarks training
mypy src/limner
mypy tests
if [ "${1:-}" = "--fast" ]; then
  shift
  python -m pytest -q -m "not slow" "$@"
else
  python -m pytest -q "$@"
fi
