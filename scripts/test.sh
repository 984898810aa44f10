#!/usr/bin/env bash
# Every test (`make test`, after `make setup`). The tests that run notebooks in the Rust kernel
# (tests/tests/notebook.rs and grade_notebooks.rs, the ones a plain `cargo test` lists as
# ignored) spend much of their time waiting on kernel starts and cell compiles, with a core left
# idle: they run in a second cargo process beside the others (cargo holds its build lock only
# while it builds), and their output follows the others' at the end. The grading test, whose
# endless submission has a time limit, runs second, once the others are done with the cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

# One build for both runs.
cargo test --workspace --no-run --quiet
mkdir -p target
log="$ROOT/target/kernel-tests.log"
kernel_test() { cargo test -p diffusion-tests --test "$1" -- --ignored; }
(
    status=0
    kernel_test notebook || status=1
    kernel_test grade_notebooks || status=1
    exit "$status"
) > "$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

others=0
cargo test --workspace || others=$?
say "the other tests are done; waiting for the notebooks in the kernel (log: $log)"
kernel=0
wait "$pid" || kernel=$?
trap - EXIT

say "the notebooks in the kernel (cargo test -p diffusion-tests --test notebook|grade_notebooks -- --ignored):"
cat "$log"
[ "$others" = 0 ] || die "some tests failed (see the first part of this output)"
[ "$kernel" = 0 ] || die "some notebook tests failed (see just above; the log is $log)"
say "all tests passed"
