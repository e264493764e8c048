#!/usr/bin/env bash
# Installs what the demo needs and compares plain and self-speculative decoding on the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m selfspec generate --compare \
  --prompt "${PROMPT:-Summarise in two sentences why the sky is blue.}" --max-new-tokens 96 "$@"
