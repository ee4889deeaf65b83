#!/usr/bin/env bash
# Fuzzes every decoder of peer input for SECONDS each (default 60), in an optimized build
# that keeps overflow checks and debug assertions (an overflow is a finding, as in a
# debug build). Extra arguments go to the fuzz binary, e.g. `--seed 7` or a target name
# instead of `all`:
#
#   scripts/fuzz.sh 60              # all four targets, 60 s each
#   scripts/fuzz.sh 10 job_graph    # one target
#
# Exits non-zero on the first finding, which prints the input (hex), the seed and the
# command that reproduces it. The build lives in target/fuzz so that it does not disturb
# the ordinary release build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
cargo build --release --target-dir target/fuzz -p rill-benches --bin fuzz
# Without a target name the binary runs them all.
exec target/fuzz/release/fuzz --seconds "$seconds" "$@"
