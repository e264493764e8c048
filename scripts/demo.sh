#!/usr/bin/env bash
# Installs what the demo needs and opens the web app on the embedded default model:
# http://127.0.0.1:7860 (host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, e.g. 0.0.0.0 / 8080).
# The command-line comparison is `python -m selfspec generate --compare --prompt "..."`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
