#!/usr/bin/env bash
# Mutation testing of the course-step files with cargo-mutants (`cargo install cargo-mutants`):
# each mutant is one small change to the code (an operator swapped, a function returning a
# default); the tests that guard these files should fail on it ("caught"). The summary and the
# missed mutants are written under target/mutants-report/FILE/mutants.out/.
#
#   scripts/mutants.sh                    # all eight files
#   scripts/mutants.sh schedule forward   # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(schedule forward reverse loss sample train adam checkpoint)
# The tests that exercise these files (built and run for each mutant): the crate's unit tests and the cross-cutting tests of the
# course steps (the notebooks, walkthroughs and parity tests of the other networks are left out).
tests=(--lib --test adam --test bad_input --test checkpoint --test samplers --test train
       --test parity --test torch_fixtures)
# cargo-mutants 27 builds its baseline from the mutated package's tests only, which ignores
# --test-package: the baseline is skipped and the time limits are given instead (the unmutated
# tests pass in about 10 s under this profile, `cargo test --profile mutants` with these targets).
args=(--baseline skip --timeout 90 --build-timeout 600)
for t in "${tests[@]}"; do args+=(--cargo-arg="$t"); done
# ITERATE=1 tests again only the mutants the last run of a file missed (after tests were added).
[ "${ITERATE:-0}" = 1 ] && args+=(--iterate)
for f in "${files[@]}"; do
    out="target/mutants-report/$f"
    mkdir -p "$out"
    # the trainer's labelled path, moving average and cosine schedule are exercised by the
    # tests of notebooks 04 and 03
    extra=()
    [ "$f" = train ] && extra=(--cargo-arg=--test=guidance04 --cargo-arg=--test=ablation03)
    cargo mutants --in-place --no-shuffle --profile mutants \
        --test-package diffusion --test-package diffusion-tests "${args[@]}" "${extra[@]}" \
        --file "diffusion/src/$f.rs" --output "$out" || true
    echo "== $f: $(cat "$out/mutants.out/caught.txt" 2>/dev/null | wc -l) caught," \
        "$(cat "$out/mutants.out/missed.txt" 2>/dev/null | wc -l) missed," \
        "$(cat "$out/mutants.out/timeout.txt" 2>/dev/null | wc -l) timeout," \
        "$(cat "$out/mutants.out/unviable.txt" 2>/dev/null | wc -l) unviable"
done
