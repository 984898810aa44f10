#!/usr/bin/env bash
# Builds `diffusion` with the `cuda` feature on a machine without a CUDA toolkit or GPU, to carry
# the binary to one that has them (CUDA 13 driver):
#
#   scripts/build-cuda.sh          # -> target-cuda/release/diffusion
#
# nvcc, the CUDA headers and libraries come from PyPI into .venv-cuda. The binary links against
# libcuda.so.1, the driver, which only a GPU machine has: for the link step this script makes a
# stand-in library that exports the driver's function names and nothing else. At run time the
# real driver is loaded in its place (the binary records only the name libcuda.so.1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv-cuda
if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cublas nvidia-curand
CU=$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13)
LINK=$VENV/link
mkdir -p "$LINK"
for lib in cublas.so.13 cublasLt.so.13 cudart.so.13 curand.so.10 nvrtc.so.13; do
    ln -sf "$CU/lib/lib$lib" "$LINK/lib${lib%.so.*}.so"
done

export PATH=$CU/bin:$PATH CUDA_ROOT=$CU CUDA_PATH=$CU CUDA_HOME=$CU
export LIBRARY_PATH=$LINK:$CU/lib:${LIBRARY_PATH:-}
# cudarc 0.19 knows CUDA up to 13.4; the 13.x driver API it binds is the same.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13040}
# No GPU to ask: compile the kernels for compute capability 9.0 (H100, H200) unless told otherwise.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=$ROOT/target-cuda

# Compile the crates first; the link of the binary then names the driver functions it needs.
cargo build --release -p diffusion --features cuda --lib
if [ ! -e "$LINK/libcuda.so" ]; then
    nm -u --format=just-symbols "$CARGO_TARGET_DIR"/release/deps/lib{cudarc,candle_core}-*.rlib 2>/dev/null |
        grep -E '^cu[A-Z]' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' > "$LINK/libcuda_stand_in.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/libcuda_stand_in.c"
fi
cargo build --release -p diffusion-cli --features cuda
echo "built $CARGO_TARGET_DIR/release/diffusion (needs the CUDA 13 driver and the libraries of $CU/lib at run time)"
