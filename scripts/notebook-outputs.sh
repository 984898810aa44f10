#!/usr/bin/env bash
# Re-executes notebooks/02_diffusion.ipynb in place with the course's full settings, so that the
# committed notebook shows fresh outputs. Close the notebook's kernel in JupyterLab first: both
# would build in the same evcxr directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
unset DIFFUSION_MAX_STEPS
tmp="$(mktemp --suffix=.ipynb)"
trap 'rm -f "$tmp"' EXIT
"$VENV/bin/python" "$ROOT/scripts/nbrun.py" run "$NOTEBOOK" "$tmp"
cp "$tmp" "$NOTEBOOK.tmp$$" && mv "$NOTEBOOK.tmp$$" "$NOTEBOOK"  # never half a notebook
say "outputs written to notebooks/02_diffusion.ipynb"
