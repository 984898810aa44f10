#!/usr/bin/env bash
# Times `make lab` as a student meets it: from the command to the moment JupyterLab serves the
# first notebook (set-up included), then stops JupyterLab. Run it in a fresh clone to time a
# cold start, and again for a second run:
#   git clone <repo> /tmp/fresh && /tmp/fresh/scripts/time-lab.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
log=$(mktemp)
start=$(date +%s.%N)
setsid make lab > "$log" 2>&1 &
pid=$!
trap 'kill -- -$pid 2>/dev/null || true; rm -f "$log"' EXIT
notebook=$(basename "$FIRST_NOTEBOOK") # JupyterLab serves the folder of the notebook it opens
while sleep 0.2; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log"; die "make lab stopped before serving"; }
    url=$(grep -o 'http://127.0.0.1:[0-9]*/lab?token=[0-9a-f]*' "$log" | head -n 1 || true)
    [ -n "$url" ] || continue
    base=${url%%/lab?*}
    token=${url##*token=}
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/contents/$notebook?token=$token" || true)
    if [ "$code" = 200 ]; then
        grep '^==>' "$log" || true
        printf 'make lab: JupyterLab served %s after %.1f s\n' "$notebook" "$(echo "$(date +%s.%N) - $start" | bc)"
        exit 0
    fi
done
