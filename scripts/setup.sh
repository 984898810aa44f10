#!/usr/bin/env bash
# Installs what the notebook needs, skipping every step that is already done:
#   1. the rust-src component (evcxr reads the standard library's sources),
#   2. JupyterLab, nbconvert and nbclient in the virtual environment .venv/,
#   3. the FashionMNIST files (`diffusion data`), unless `--without-data`: `make lab` passes it,
#      as the notebook fetches the files itself when they are missing, which spares a student a
#      compile of the whole command line before JupyterLab opens,
#   4. the notebook's dependencies, compiled by cargo alone as the kernel will ask for them,
#   5. evcxr_jupyter, the Rust kernel, into .tools/ (never the user's global cargo root),
#   6. the kernel's description (kernelspec) inside .venv/, pointing at .tools/,
#   7. a short headless run of the notebook's first cell, so that its first cell starts warm.
# Steps 2 to 4 need no kernel: they run in the background while step 5 compiles it, which keeps
# both cores of a small machine busy through the serial stretches of each build.
# Run it as `make setup`; it is safe to run again at any time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
with_data=1
case "${1:-}" in
    "") ;;
    --without-data) with_data=0 ;;
    *) die "unknown option $1 (the one option is --without-data)" ;;
esac

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
command -v python3 >/dev/null || die "python3 not found: install Python 3.9 or newer"

# 1. rust-src
if command -v rustup >/dev/null; then
    if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
        say "installing the rust-src component"
        rustup component add rust-src
    fi
else
    sysroot="$(rustc --print sysroot)"
    [ -d "$sysroot/lib/rustlib/src/rust/library" ] \
        || die "the Rust standard library sources are missing and rustup is not available; install rust-src for $(rustc -V)"
fi

# Background jobs stop with the script (an error, Ctrl+C).
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# 2. Python virtual environment, in the background (step 6 waits for it).
req="$ROOT/scripts/requirements-notebook.txt"
venv_job=""
if ! { [ -x "$VENV/bin/jupyter-lab" ] && cmp -s "$req" "$VENV/.requirements-notebook.txt"; }; then
    say "installing JupyterLab, nbconvert and nbclient into .venv/ (beside the next step)"
    (
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
        cp "$req" "$VENV/.requirements-notebook.txt"
        say "JupyterLab installed"
    ) &
    venv_job=$!
fi

# 3. data, in the background, by the `diffusion` binary of the tests' build (`cargo test
#    --no-run`), which `make test` then finds done: `cargo run -p diffusion-cli` would leave out
#    the features the tests' dev-dependencies turn on (the image decoder's, on bytemuck), and so
#    compile candle and everything above it a second time (96 s alone on 2 cores).
data="$ROOT/data/fashion-mnist"
have_data=1
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$data/$f.gz" ] || [ -f "$data/$f" ] || have_data=0
done
if [ "${DIFFUSION_DATA:-}" != "" ]; then
    have_data=1 # the user points at their own copy
fi
data_job=""
if [ "$have_data" = 0 ] && [ "$with_data" = 1 ]; then
    say "fetching FashionMNIST into data/fashion-mnist (beside the next step)"
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug/diffusion"
    ( cargo test --workspace --no-run --quiet && "$bin" data && say "FashionMNIST fetched" ) &
    data_job=$!
fi

# 4. the notebook's dependencies, compiled by cargo alone in the configuration the kernel will
#    use (scripts/nbrun.py prebuild; it does nothing when the build is already warm).
python3 "$ROOT/scripts/nbrun.py" prebuild &
prebuild_job=$!

# 5. evcxr_jupyter into .tools/
# The kernel runs rust-analyzer in its own process at every start (the type of each `let`), and
# that is most of a first cell's time: the crates it spends that time in (name resolution, type
# inference, the syntax tree, salsa's query engine) are optimised fully, the rest (completion,
# assists, the ZeroMQ and async stack) lightly. Measured on a 2-core VM, alone: the kernel builds
# in 235 s (opt-level 1 throughout: 220 s, 13.0 s for notebook 01's first cell; this mix: 10.9 s;
# opt-level 3 throughout: 10.5 s, from a build that took 614-889 s beside CI's other builds).
# No LTO, no debug information and many codegen units keep the build short. The stamp rebuilds a
# kernel built with other settings.
EVCXR_HOT="ra_ap_hir_ty ra_ap_hir_def ra_ap_hir_expand ra_ap_hir ra_ap_syntax ra_ap_parser rowan salsa
ra_ap_base_db ra_ap_intern ra_ap_mbe ra_ap_tt ra_ap_span ra_ap_rustc_type_ir
ra_ap_rustc_next_trait_solver ra_ap_vfs ra_ap_syntax_bridge ra_ap_rustc_lexer hashbrown ra_ap_stdx
ra_ap_cfg ra_ap_project_model ra_ap_rustc_abi ra_ap_rustc_index ra_ap_edition ra_ap_paths
ra_ap_ide_db"
hot_config=()
for crate in $EVCXR_HOT; do
    hot_config+=(--config "profile.release.package.$crate.opt-level=3")
done
EVCXR_PROFILE="opt-level=1 lto=off codegen-units=64 debug=0; opt-level=3 for: $(echo $EVCXR_HOT)"
if ! { [ -x "$EVCXR_BIN" ] && grep -q "evcxr_jupyter $EVCXR_VERSION " "$TOOLS/.crates.toml" 2>/dev/null \
        && [ "$(cat "$TOOLS/evcxr-profile" 2>/dev/null)" = "$EVCXR_PROFILE" ]; }; then
    say "building evcxr_jupyter $EVCXR_VERSION into .tools/ (several minutes, once)"
    start=$(date +%s)
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=64 CARGO_PROFILE_RELEASE_DEBUG=0 \
        CARGO_PROFILE_RELEASE_STRIP=debuginfo \
        cargo install "${hot_config[@]}" --locked --force --quiet evcxr_jupyter \
        --version "$EVCXR_VERSION" --root "$TOOLS"
    printf '%s\n' "$EVCXR_PROFILE" > "$TOOLS/evcxr-profile.tmp" && mv "$TOOLS/evcxr-profile.tmp" "$TOOLS/evcxr-profile"
    say "evcxr_jupyter built in $(( $(date +%s) - start )) s"
fi

if [ -n "$venv_job" ]; then
    wait "$venv_job" || die "installing JupyterLab into .venv/ failed (see above); run the set-up again"
fi
wait "$prebuild_job" || die "compiling the notebook's dependencies failed (see above); run the set-up again"
if [ -n "$data_job" ]; then
    wait "$data_job" || die "fetching the data failed (see above); run the set-up again, or \
\`cargo run -p diffusion-cli -- data\` alone to see why"
fi

# 6. kernelspec: what `evcxr_jupyter --install` writes, but into .venv/ (JUPYTER_PATH) and with
#    JUPYTER_PATH also set for the kernel itself, so that its start-up self-update looks at this
#    kernelspec and never at one the user installed globally.
spec="$KERNEL_DIR/kernel.json"
want=$("$VENV/bin/python" - "$EVCXR_BIN" "$VENV/share/jupyter" <<'PY'
import json, sys
print(json.dumps({
    "argv": [sys.argv[1], "--control_file", "{connection_file}"],
    "display_name": "Rust",
    "language": "rust",
    "interrupt_mode": "message",
    "env": {
        "JUPYTER_PATH": sys.argv[2],
        # The kernel's allocator (mimalloc) otherwise backs rust-analyzer's memory with
        # transparent huge pages and hands freed pages back at once; on a virtual machine each
        # fresh page is a costly fault. Measured on a 2-core VM: kernel start 4.1-8.0 s -> 2.9-3.7 s.
        "MIMALLOC_ALLOW_THP": "0",
        "MIMALLOC_PURGE_DELAY": "-1",
    },
}, indent=2))
PY
)
if ! { [ -f "$spec" ] && [ "$(cat "$spec")" = "$want" ] && [ -f "$KERNEL_DIR/version.txt" ]; }; then
    say "registering the Rust kernel in .venv/"
    JUPYTER_PATH="$VENV/share/jupyter" "$EVCXR_BIN" --install >/dev/null
    printf '%s\n' "$want" > "$spec"
fi

# 7. warm the notebook's build directory: the kernel compiles the first cell's own crate
"$VENV/bin/python" "$ROOT/scripts/nbrun.py" warm

say "set-up complete"
