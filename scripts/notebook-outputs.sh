#!/usr/bin/env bash
# Re-executes the notebooks in place with the course's full settings, so that the committed
# notebooks show fresh outputs: all of notebooks/[0-9]*.ipynb, or the ones named
# (`scripts/notebook-outputs.sh notebooks/01_unet.ipynb`). Close their kernels in JupyterLab
# first: both would build in the same evcxr directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
unset DIFFUSION_MAX_STEPS DIFFUSION_MAX_SAMPLES # the limits of a quick run (diffusion::limits)
if [ $# -eq 0 ]; then
    set -- notebooks/[0-9]*.ipynb
fi
for notebook in "$@"; do
    tmp="$(mktemp --suffix=.ipynb)"
    "$VENV/bin/python" "$ROOT/scripts/nbrun.py" run "$notebook" "$tmp"
    cp "$tmp" "$notebook.tmp$$" && mv "$notebook.tmp$$" "$notebook"  # never half a notebook
    rm -f "$tmp"
    say "outputs written to $notebook"
done
