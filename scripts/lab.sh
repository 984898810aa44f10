#!/usr/bin/env bash
# Opens the first notebook in JupyterLab (the others are beside it) (after `make setup`). Jupyter prints the address to open,
# with its access token, a few lines below.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
say "starting JupyterLab; open the http://localhost:... address printed below (Ctrl+C twice to stop)"
args=()
# Jupyter refuses to run as root unless told; containers and course VMs often are root.
[ "$(id -u)" = 0 ] && args+=(--allow-root)
exec "$VENV/bin/jupyter" lab "${args[@]}" "$FIRST_NOTEBOOK" "$@"
