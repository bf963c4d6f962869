#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what is missing, then runs every test and ends
# with one line totalling all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --lib --bins --tests: every unit and integration test; benches stay out (they are benchmarks).
# --no-fail-fast: one failing test binary does not hide the results of the others.
status=0
cargo test --release --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
