#!/usr/bin/env bash
# Installs limner (if needed) and serves the embedded default model on 127.0.0.1:8000.
# Any arguments go to `limner serve` (e.g. --port 9000, --api-key KEY, --model PATH); with
# --model, the diffusers extra is installed too.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
for arg in "$@"; do
  case "$arg" in --model|--model=*) extras="diffusers" ;; esac
done
scripts/setup.sh $extras
exec .venv/bin/limner serve "$@"
