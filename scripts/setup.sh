#!/usr/bin/env bash
# Creates .venv and installs limner into it. torch comes first and pinned, so pip takes the
# CPU build instead of pulling a multi-GB CUDA one. Usage: scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
if [ -n "$extras" ]; then
  python -m pip install --quiet -e ".[$extras]"
else
  python -m pip install --quiet -e .
fi
# The playground's browser tests drive Debian's chromium package; Playwright's own browser
# download cannot run here. Installed as root or with passwordless sudo; otherwise those
# tests skip, saying what is missing.
if [[ ",$extras," == *",dev,"* ]] && ! command -v chromium >/dev/null 2>&1; then
  as_root=""
  can_install=no
  if [ "$(id -u)" = 0 ]; then
    can_install=yes
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    can_install=yes
    as_root="sudo -n"
  fi
  if [ "$can_install" = yes ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (apt-get) for the playground's browser tests" >&2
    if ! { $as_root apt-get update -qq \
           && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; then
      echo "setup: 'apt-get install chromium' failed; the playground's browser tests will" \
           "be skipped" >&2
    fi
  else
    echo "setup: chromium is missing and cannot be installed here (it needs apt-get, as" \
         "root or with passwordless sudo); the playground's browser tests will be skipped" >&2
  fi
fi
