# Shared paths for the notebook scripts (sourced, not run).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
EVCXR_VERSION="0.22.0"
EVCXR_BIN="$TOOLS/bin/evcxr_jupyter"
KERNEL_DIR="$VENV/share/jupyter/kernels/rust"
FIRST_NOTEBOOK="notebooks/01_unet.ipynb"
EVCXR_TMPDIR_NB="$ROOT/notebooks/.evcxr"

# Each message carries the seconds since the script started (bash's SECONDS), which shows where
# a set-up spends its time.
say() { printf '==> [%4ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
