#!/usr/bin/env bash
# Side-by-side benchmark: `diffusion bench` and bench_torch.py, alternately, ROUNDS times each,
# on the same machine, each with its own default threads (no thread variable is set, as a user
# runs them); then peak memory of a short `diffusion train` and of the same loop in PyTorch.
# Prints a Markdown table for bench/RESULTS.md.
#
#   bench/run.sh                 # needs PyTorch: python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy safetensors
#   ROUNDS=5 bench/run.sh
#   MODEL=optimized bench/run.sh # notebook 03's network instead of notebook 02's
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-5}
MODEL=${MODEL:-basic}
PY=${PY:-.venv-torch/bin/python}
[ -x "$PY" ] || { echo "PyTorch not found at $PY: python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy safetensors" >&2; exit 1; }
cargo build --release -q -p diffusion-cli
unset RAYON_NUM_THREADS OMP_NUM_THREADS CANDLE_NUM_THREADS MKL_NUM_THREADS
rust=(); torch=()
for i in $(seq "$ROUNDS"); do
    rust+=("$(./target/release/diffusion bench --runs "$RUNS" --model "$MODEL")")
    torch+=("$("$PY" bench/bench_torch.py --runs "$RUNS" --model "$MODEL")")
    echo "round $i: rust ${rust[-1]} | torch ${torch[-1]}" >&2
done
peak() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
data="${DIFFUSION_DATA:-data/fashion-mnist}"
rust_kb=$(peak ./target/release/diffusion train --model "$MODEL" --data "$data" --max-steps 20 --samples 1 --out /tmp/bench-run)
torch_kb=$(peak "$PY" bench/bench_torch.py --train-steps 20 --model "$MODEL")
THREADS=$("$PY" -c "import torch; print(torch.get_num_threads())")
"$PY" - "$THREADS" "$rust_kb" "$torch_kb" "$MODEL" "${rust[@]}" --- "${torch[@]}" <<'PY'
import platform, statistics, subprocess, sys
threads, rust_kb, torch_kb, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rest = sys.argv[5:]
cut = rest.index("---")
def parse(lines):
    rows = [dict(kv.split("=") for kv in l.split()) for l in lines]
    return {k: statistics.median(float(r[k]) for r in rows) for k in rows[0]}
r, t = parse(rest[:cut]), parse(rest[cut + 1:])
import torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
net = "notebook 02's U-Net" if model == "basic" else "notebook 03's U-Net"
print(f"Machine: {cpu}, {threads} threads. {rustc}, candle 0.11.1; torch {torch.__version__}. Network: {net}.\n")
print("| measure | Rust (ms) | PyTorch (ms) | PyTorch / Rust |")
print("| --- | --- | --- | --- |")
names = {"train_step_ms": "training step, batch 128", "sample150_ms": "150-step sample, batch 1", "sample150x64_ms": "150-step sample, 64 images"}
for k, name in names.items():
    print(f"| {name} | {r[k]:.1f} | {t[k]:.1f} | {t[k] / r[k]:.2f}x |")
print(f"| peak memory, 20 training steps (MiB) | {rust_kb / 1024:.0f} | {torch_kb / 1024:.0f} | {torch_kb / rust_kb:.2f}x |")
PY
