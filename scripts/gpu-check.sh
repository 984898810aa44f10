#!/usr/bin/env bash
# The GPU check in one command: `diffusion gpu-check` (parity of the GPU with the CPU and with
# PyTorch, timings, a full training run) and bench/bench_torch.py on the same GPU, with TF32 off
# and on, plus the machine's versions, all collected into one folder.
#
#   scripts/gpu-check.sh prepare    # here, after scripts/build-cuda.sh: pack what the GPU machine needs
#   scripts/gpu-check.sh            # on the GPU machine, from the repository root
#   DRY_RUN=1 scripts/gpu-check.sh  # on a CPU machine: the same steps on the CPU, 20 training steps
#   scripts/gpu-check.sh stand-in DIR  # only build the cuRAND stand-in into DIR
#
# `prepare` writes target-cuda/carry/: diffusion.xz (the CUDA binary built by
# scripts/build-cuda.sh, debug information stripped, compressed) and lib/libcurand.so.10, a
# stand-in used only when the GPU machine has no cuRAND 10 (see below). Carry target-cuda/carry
# and data/fashion-mnist (prepare prints their size: the device tool carries 64 MiB). The GPU machine needs the CUDA 13 driver,
# python3 with PyTorch, and no Rust: the binary is target-cuda/release/diffusion if it is there,
# else unpacked from target-cuda/carry/diffusion.xz.
#
# The binary links libcublas.so.13, libcublasLt.so.13, libnvrtc.so.13 and libcurand.so.10
# (and the driver's libcuda.so.1). They are looked for in the Python installation (PyTorch's
# nvidia/cu13/lib), then in /usr/local/cuda*; their folders go on LD_LIBRARY_PATH. PyTorch 2.15
# ships no cuRAND, and the real library (105 MB) does not fit the 64 MiB that travel to the GPU
# machine: then the stand-in is used. candle opens a cuRAND generator for every CUDA device and
# draws a network's initial weights with it, which this crate always overwrites with its own
# seeded draws (checkpoint::init_weights, or the weights being loaded); the stand-in's
# generators fill device memory with NaN (through the driver's cuMemsetD32Async), so a value
# ever used from it shows up as NaN instead of passing unnoticed.
#
# Output: $OUT if set (the device tool's folder), else runs/gpu-check-DATE. In it: summary.md
# (versions, the Rust report, Rust against PyTorch), gpu-check/ (report.md, model.safetensors,
# losses.csv, samples.npy, samples.png), torch-*.txt, env.txt, gpu-check.log.
#
# Settings (environment): RUNS (timing repetitions, default 10; dry run 3), EPOCHS (3),
# MAX_STEPS (unset; dry run 20), HOLD_OUT_TEST (1: train on the 60,000 train images only; by
# default the course's 70,000), DATA
# (data/fashion-mnist), CHECK_TIMEOUT (seconds for `diffusion gpu-check`, default 300),
# TORCH_TIMEOUT (seconds per bench_torch.py run, default 80), PY (python3; dry run
# .venv-torch/bin/python when present), BIN (the diffusion binary).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

CARRY_ARG=${CARRY:-target-cuda/carry}
case $CARRY_ARG in /*) CARRY=$CARRY_ARG ;; *) CARRY=$ROOT/$CARRY_ARG ;; esac
NEEDED_LIBS="libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcudart.so.13 libcurand.so.10"

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The C source of the cuRAND stand-in: the 27 functions of libcurand.so.10 under its symbol
# version, generators that fill with NaN (uniform, normal) or 0 (integers).
curand_stand_in_source() {
    cat <<'C'
/* A stand-in for libcurand.so.10 (see scripts/gpu-check.sh): generators write NaN. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

typedef int st;
typedef struct { void *stream; } gen;
typedef int (*memset32_fn)(unsigned long long, unsigned int, size_t, void *);

enum { OK = 0, NOT_INITIALIZED = 101, ALLOCATION_FAILED = 102, LAUNCH_FAILURE = 201,
       INITIALIZATION_FAILED = 203 };
#define NAN32 0x7fc00000u  /* a float NaN */
#define NAN64 0x7ff80000u  /* twice: 0x7ff800007ff80000, a double NaN */

static st fill(void *g, void *out, size_t words, unsigned int value) {
    static memset32_fn memset32;
    if (!g) return NOT_INITIALIZED;
    if (!memset32) memset32 = (memset32_fn)dlsym(RTLD_DEFAULT, "cuMemsetD32Async");
    if (!memset32) return INITIALIZATION_FAILED;
    if (words == 0) return OK;
    return memset32((unsigned long long)(size_t)out, value, words, ((gen *)g)->stream) == 0
        ? OK : LAUNCH_FAILURE;
}

st curandCreateGenerator(void **g, int type) {
    (void)type;
    if (!g) return NOT_INITIALIZED;
    *g = calloc(1, sizeof(gen));
    return *g ? OK : ALLOCATION_FAILED;
}
st curandCreateGeneratorHost(void **g, int type) { (void)g; (void)type; return INITIALIZATION_FAILED; }
st curandDestroyGenerator(void *g) { free(g); return OK; }
st curandSetStream(void *g, void *stream) {
    if (!g) return NOT_INITIALIZED;
    ((gen *)g)->stream = stream;
    return OK;
}
st curandSetPseudoRandomGeneratorSeed(void *g, unsigned long long seed) { (void)seed; return g ? OK : NOT_INITIALIZED; }
st curandSetGeneratorOffset(void *g, unsigned long long offset) { (void)offset; return g ? OK : NOT_INITIALIZED; }
st curandSetGeneratorOrdering(void *g, int order) { (void)order; return g ? OK : NOT_INITIALIZED; }
st curandSetQuasiRandomGeneratorDimensions(void *g, unsigned int d) { (void)d; return g ? OK : NOT_INITIALIZED; }
st curandGenerateSeeds(void *g) { return g ? OK : NOT_INITIALIZED; }
st curandGenerate(void *g, unsigned int *out, size_t n) { return fill(g, out, n, 0); }
st curandGenerateLongLong(void *g, unsigned long long *out, size_t n) { return fill(g, out, 2 * n, 0); }
st curandGenerateUniform(void *g, float *out, size_t n) { return fill(g, out, n, NAN32); }
st curandGenerateNormal(void *g, float *out, size_t n, float m, float s) { (void)m; (void)s; return fill(g, out, n, NAN32); }
st curandGenerateLogNormal(void *g, float *out, size_t n, float m, float s) { (void)m; (void)s; return fill(g, out, n, NAN32); }
st curandGenerateUniformDouble(void *g, double *out, size_t n) { return fill(g, out, 2 * n, NAN64); }
st curandGenerateNormalDouble(void *g, double *out, size_t n, double m, double s) { (void)m; (void)s; return fill(g, out, 2 * n, NAN64); }
st curandGenerateLogNormalDouble(void *g, double *out, size_t n, double m, double s) { (void)m; (void)s; return fill(g, out, 2 * n, NAN64); }
st curandGeneratePoisson(void *g, unsigned int *out, size_t n, double l) { (void)l; return fill(g, out, n, 0); }
st curandGeneratePoissonMethod(void *g, unsigned int *out, size_t n, double l, int m) { (void)l; (void)m; return fill(g, out, n, 0); }
st curandCreatePoissonDistribution(double l, void **d) { (void)l; (void)d; return INITIALIZATION_FAILED; }
st curandDestroyDistribution(void *d) { (void)d; return OK; }
st curandGetDirectionVectors32(void **v, int set) { (void)v; (void)set; return INITIALIZATION_FAILED; }
st curandGetDirectionVectors64(void **v, int set) { (void)v; (void)set; return INITIALIZATION_FAILED; }
st curandGetScrambleConstants32(unsigned int **c) { (void)c; return INITIALIZATION_FAILED; }
st curandGetScrambleConstants64(unsigned long long **c) { (void)c; return INITIALIZATION_FAILED; }
st curandGetVersion(int *v) { if (v) *v = 10405; return OK; }
st curandGetProperty(int type, int *value) {
    static const int parts[3] = {10, 4, 5};
    if (!value || type < 0 || type > 2) return NOT_INITIALIZED;
    *value = parts[type];
    return OK;
}
C
}

# Builds the stand-in into $1/libcurand.so.10.
build_curand_stand_in() {
    local dir=$1 tmp
    command -v gcc >/dev/null || { echo "gcc not found: cannot build the cuRAND stand-in" >&2; return 1; }
    mkdir -p "$dir"
    tmp=$(mktemp -d)
    curand_stand_in_source > "$tmp/curand_stand_in.c"
    printf 'libcurand.so.10 { global: curand*; local: *; };\n' > "$tmp/curand.map"
    gcc -O2 -shared -fPIC -Wl,-soname,libcurand.so.10 -Wl,--version-script="$tmp/curand.map" \
        -o "$dir/libcurand.so.10" "$tmp/curand_stand_in.c" -ldl || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
}

# --------------------------------------------------------------------------------------------
if [ "${1:-}" = "stand-in" ]; then
    [ -n "${2:-}" ] || die "usage: scripts/gpu-check.sh stand-in DIR (writes DIR/libcurand.so.10)"
    build_curand_stand_in "$2" || die "could not build the cuRAND stand-in"
    echo "$2/libcurand.so.10"
    exit 0
fi
if [ "${1:-}" = "prepare" ]; then
    SRC=${PREPARE_FROM:-target-cuda/release/diffusion}
    [ -x "$SRC" ] || die "$SRC not found: build it first with scripts/build-cuda.sh (13+ minutes)"
    mkdir -p "$CARRY/lib"
    say "stripping and compressing $SRC into $CARRY/diffusion.xz"
    strip --strip-debug -o "$CARRY/diffusion" "$SRC" || die "strip failed"
    xz -T0 -9 -f "$CARRY/diffusion" || die "xz failed"
    (cd "$CARRY" && sha256sum diffusion.xz > diffusion.xz.sha256)
    say "building the cuRAND stand-in into $CARRY/lib/libcurand.so.10"
    build_curand_stand_in "$CARRY/lib" || die "could not build the cuRAND stand-in"
    ls -la "$CARRY" "$CARRY/lib"
    total=$(du -sbc "$CARRY" data/fashion-mnist 2>/dev/null | tail -1 | cut -f1)
    echo "carry: $CARRY_ARG and data/fashion-mnist: $((total / 1024 / 1024)) MiB (limit 64 MiB)"
    [ "$total" -lt $((64 * 1024 * 1024)) ] || echo "warning: over 64 MiB" >&2
    echo "then, on the GPU machine, from the repository root: scripts/gpu-check.sh"
    exit 0
fi

# --------------------------------------------------------------------------------------------
DRY=${DRY_RUN:-0}
[ "$DRY" = "0" ] || [ "$DRY" = "1" ] || die "DRY_RUN must be 0 or 1"
DEST=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$DEST" || die "cannot create $DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
exec > >(tee "$DEST/gpu-check.log") 2>&1
TEE_PID=$!

DATA=${DATA:-data/fashion-mnist}
EPOCHS=${EPOCHS:-3}
HOLD_OUT_TEST=${HOLD_OUT_TEST:-0}
if [ "$DRY" = "1" ]; then
    # a 2-core machine: PyTorch's 64-image sampling alone takes 10 to 30 s there
    CHECK_TIMEOUT=${CHECK_TIMEOUT:-600}
    TORCH_TIMEOUT=${TORCH_TIMEOUT:-300}
    DEVICE=cpu
    RUNS=${RUNS:-3}
    MAX_STEPS=${MAX_STEPS:-20}
    if [ -z "${PY:-}" ]; then
        if [ -x .venv-torch/bin/python ]; then PY=.venv-torch/bin/python; else PY=python3; fi
    fi
    TF32_SETTINGS="default off on"  # on the CPU they only exercise the switch
else
    # within the 10 minutes a command may take on the device machine: 300 + 3 x 80 s at most
    CHECK_TIMEOUT=${CHECK_TIMEOUT:-300}
    TORCH_TIMEOUT=${TORCH_TIMEOUT:-80}
    DEVICE=cuda
    RUNS=${RUNS:-10}
    MAX_STEPS=${MAX_STEPS:-}
    PY=${PY:-python3}
    TF32_SETTINGS="default off on"
fi
say "GPU check, $( [ "$DRY" = 1 ] && echo "DRY RUN on the CPU" || echo "on CUDA" ), into $DEST"

# ---- the binary
if [ -n "${BIN:-}" ]; then
    :
elif [ "$DRY" = "1" ]; then
    if [ -x target/release/diffusion ]; then
        BIN=target/release/diffusion
    else
        BIN="cargo run --release -q -p diffusion-cli --"
    fi
elif [ -x target-cuda/release/diffusion ]; then
    BIN=target-cuda/release/diffusion
elif [ -f "$CARRY/diffusion.xz" ]; then
    say "unpacking $CARRY_ARG/diffusion.xz"
    BIN=$WORK/diffusion
    if [ -f "$CARRY/diffusion.xz.sha256" ] && ! (cd "$CARRY" && sha256sum -c --quiet diffusion.xz.sha256); then
        echo "error: $CARRY_ARG/diffusion.xz is damaged (its sha256 differs); PyTorch is measured all the same"
        BIN=""
    elif ! "$PY" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$CARRY/diffusion.xz" "$BIN"; then
        echo "error: cannot unpack $CARRY_ARG/diffusion.xz; PyTorch is measured all the same"
        BIN=""
    else
        chmod +x "$BIN"
    fi
else
    echo "error: no CUDA binary: neither target-cuda/release/diffusion nor $CARRY_ARG/diffusion.xz (build it with scripts/build-cuda.sh, then scripts/gpu-check.sh prepare, and carry $CARRY_ARG); PyTorch is measured all the same"
    BIN=""
fi
say "binary: ${BIN:-none}"

# ---- versions
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    if command -v nvidia-smi >/dev/null; then
        echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -4 | tr '\n' ';')"
        nvidia-smi 2>&1 | head -15
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - <<'PY' 2>&1
import sys
try:
    import torch
except Exception as e:
    print(f"torch: not importable ({e})")
    sys.exit(0)
print(f"python: {sys.version.split()[0]} ({sys.executable})")
print(f"torch: {torch.__version__}, torch.version.cuda: {torch.version.cuda}, cudnn: {torch.backends.cudnn.version()}")
ok = torch.cuda.is_available()
print(f"torch.cuda.is_available: {ok}" + (f", {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}" if ok else ""))
PY
} > "$DEST/env.txt"
cat "$DEST/env.txt"

# ---- the CUDA libraries
lib_dirs() {
    "$PY" - <<'PY' 2>/dev/null
import os, site, sys
dirs = []
try:
    dirs += site.getsitepackages()
except Exception:
    pass
try:
    dirs.append(site.getusersitepackages())
except Exception:
    pass
dirs += [p for p in sys.path if p.endswith("-packages")]
try:
    import torch
    dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
try:
    import nvidia
    dirs += list(nvidia.__path__)
except Exception:
    pass
seen = set()
for d in dirs:
    if d and os.path.isdir(d) and d not in seen:
        seen.add(d)
        print(d)
PY
    ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu 2>/dev/null
}
LIBPATH=""
STAND_IN=0
MISSING=""
SEARCH=$(lib_dirs)
for lib in $NEEDED_LIBS; do
    found=""
    while IFS= read -r d; do
        [ -n "$d" ] || continue
        found=$(find "$d" -maxdepth 5 -name "$lib" \( -type f -o -type l \) 2>/dev/null | head -1)
        [ -n "$found" ] && break
    done <<< "$SEARCH"
    note=""
    if [ -z "$found" ] && [ "$lib" = "libcurand.so.10" ]; then
        if [ -f "$CARRY/lib/libcurand.so.10" ]; then
            found=$CARRY/lib/libcurand.so.10
        elif build_curand_stand_in "$WORK/lib" 2>/dev/null; then
            found=$WORK/lib/libcurand.so.10
        fi
        if [ -n "$found" ]; then
            STAND_IN=1
            note=" (the stand-in: no cuRAND 10 on this machine)"
        fi
    fi
    if [ -z "$found" ]; then
        MISSING="$MISSING $lib"
        echo "library $lib: NOT FOUND"
        continue
    fi
    echo "library $lib: $found$note"
    dir=$(cd "$(dirname "$found")" && pwd)
    case ":$LIBPATH:" in *":$dir:"*) ;; *) LIBPATH=${LIBPATH:+$LIBPATH:}$dir ;; esac
done > "$WORK/libs.txt"
cat "$WORK/libs.txt"
cat "$WORK/libs.txt" >> "$DEST/env.txt"
if [ "$DRY" = "1" ]; then
    echo "dry run: the CPU binary needs none of these; on the GPU machine LD_LIBRARY_PATH would get: ${LIBPATH:-nothing}"
else
    export LD_LIBRARY_PATH=${LIBPATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$DEST/env.txt"
    [ -z "$MISSING" ] || echo "warning: not found:$MISSING; the binary may not start" | tee -a "$DEST/env.txt"
    if [ -f "$BIN" ]; then
        echo "ldd $BIN:" >> "$DEST/env.txt"
        ldd "$BIN" 2>&1 | tee -a "$DEST/env.txt" | grep -E 'not found|cu|nvrtc' || true
    fi
fi

# ---- 1. diffusion gpu-check
args=(gpu-check --device "$DEVICE" --out "$DEST/gpu-check" --data "$DATA" --runs "$RUNS" --epochs "$EPOCHS")
[ -n "$MAX_STEPS" ] && args+=(--max-steps "$MAX_STEPS")
[ "$HOLD_OUT_TEST" = "1" ] && args+=(--hold-out-test)
say "$BIN ${args[*]}   (timeout ${CHECK_TIMEOUT}s)"
start=$SECONDS
if [ -n "$BIN" ]; then
    # shellcheck disable=SC2086 # BIN may be "cargo run ... --"
    timeout --kill-after=10 "$CHECK_TIMEOUT" $BIN "${args[@]}"
    CHECK_RC=$?
    echo "diffusion gpu-check: exit status $CHECK_RC after $((SECONDS - start)) s$( [ $CHECK_RC = 124 ] && echo ' (TIMED OUT: report.md holds the parts it finished)')"
    if [ $CHECK_RC != 0 ] && grep -qi 'ptx' "$DEST/gpu-check.log" 2>/dev/null; then
        echo "hint: a PTX error means the driver is older than the nvcc that compiled candle's kernels: compare 'CUDA Version' of nvidia-smi above with the nvcc of scripts/build-cuda.sh, and build with nvidia-cuda-nvcc of the driver's version"
    fi
else
    CHECK_RC=127
fi

# ---- 2. PyTorch on the same device
TORCH_DEVICE=$DEVICE
for tf in $TF32_SETTINGS; do
    say "$PY bench/bench_torch.py --device $TORCH_DEVICE --runs $RUNS --tf32 $tf   (timeout ${TORCH_TIMEOUT}s)"
    timeout --kill-after=5 "$TORCH_TIMEOUT" "$PY" bench/bench_torch.py --device "$TORCH_DEVICE" --runs "$RUNS" --tf32 "$tf" \
        > "$DEST/torch-tf32-$tf.txt" 2> "$DEST/torch-tf32-$tf.err"
    rc=$?
    cat "$DEST/torch-tf32-$tf.err" "$DEST/torch-tf32-$tf.txt"
    [ $rc = 0 ] || echo "bench_torch.py --tf32 $tf: exit status $rc$( [ $rc = 124 ] && echo ' (timed out)')"
done

# ---- 3. summary.md
# shellcheck disable=SC2086 # one argument per setting
"$PY" - "$DEST" "$DRY" "$CHECK_RC" "$STAND_IN" "$RUNS" $TF32_SETTINGS <<'PY'
import os, re, sys
dest, dry, check_rc, stand_in, runs = sys.argv[1:6]
settings = sys.argv[6:]
out = []
title = "GPU check: CPU dry run" if dry == "1" else "GPU check"
out.append(f"# {title}\n")
env = open(os.path.join(dest, "env.txt")).read().splitlines()
keep = [l for l in env if re.match(r"(date|host|cpu|nvidia-smi|python|torch|library|LD_LIBRARY_PATH|warning)", l)]
out.append("```\n" + "\n".join(keep) + "\n```\n")
if stand_in == "1":
    out.append("cuRAND: the stand-in of scripts/gpu-check.sh (this machine has no libcurand.so.10); "
               "it fills with NaN, and no value from it is used.\n")
report = os.path.join(dest, "gpu-check", "report.md")
rust = {}
if os.path.exists(report):
    text = open(report).read()
    out.append(text.rstrip() + "\n")
    for label, line in re.findall(r"^\| ([^|]+) \| [^\n]*`(train_step_ms=[^`]+)`", text, re.M):
        rust[label.strip()] = dict(kv.split("=") for kv in line.split())
else:
    out.append("`diffusion gpu-check` wrote no report.\n")
if check_rc != "0":
    out.append(f"`diffusion gpu-check` exit status: {check_rc}" + (" (timed out)" if check_rc == "124" else "") + "\n")
torch = {}
for s in settings:
    p = os.path.join(dest, f"torch-tf32-{s}.txt")
    line = open(p).read().strip() if os.path.exists(p) else ""
    m = re.search(r"train_step_ms=\S+ sample150_ms=\S+ sample150x64_ms=\S+", line)
    if m:
        torch[s] = dict(kv.split("=") for kv in m.group(0).split())
names = {"train_step_ms": "training step, batch 128", "sample150_ms": "150-step sample, 1 image",
         "sample150x64_ms": "150-step sample, 64 images"}
out.append(f"### Rust against PyTorch on the same device (ms, medians of {runs} runs)\n")
cols = []  # (header, dict)
for label, d in rust.items():
    cols.append((f"Rust, {label}", d))
for s, d in torch.items():
    cols.append((f"PyTorch, TF32 {s}" + (" (no effect on the CPU)" if dry == "1" and s != "default" else ""), d))
if cols:
    out.append("| measure | " + " | ".join(h for h, _ in cols) + " |")
    out.append("| --- |" + " --- |" * len(cols))
    for k, name in names.items():
        out.append(f"| {name} | " + " | ".join(d.get(k, "-") for _, d in cols) + " |")
    base = rust.get("TF32 off") or rust.get("CPU")
    ref = torch.get("off")
    if base and ref:
        out.append("")
        out.append("PyTorch / Rust, both with TF32 off (above 1: Rust is faster): " + ", ".join(
            f"{names[k]} {float(ref[k]) / float(base[k]):.2f}x" for k in names))
    out.append("")
else:
    out.append("No timings came back.\n")
if dry == "1":
    out.append("A CPU dry run: these are CPU figures of this machine, not GPU figures.\n")
out.append("PyTorch's `default` is its own setting: float32 matrix products without TF32, cuDNN "
           "convolutions with TF32 allowed. candle's convolutions on CUDA are matrix products "
           "(im2col and cuBLAS), so its TF32 switch covers them too.\n")
open(os.path.join(dest, "summary.md"), "w").write("\n".join(out) + "\n")
PY
say "summary: $DEST/summary.md"
ls -la "$DEST" "$DEST/gpu-check" 2>/dev/null
if [ "$CHECK_RC" = 0 ]; then say "done: parity passed"; else say "done: diffusion gpu-check exited with $CHECK_RC (see summary.md)"; fi
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit "$CHECK_RC"
