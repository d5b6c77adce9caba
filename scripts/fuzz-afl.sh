#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ through cargo-afl (issue 17): builds
# `duet-fuzz-afl` with AFL's instrumentation, writes each parser's seeds
# (`duet-fuzz --write-seeds`), and runs afl-fuzz on each parser for SECONDS
# (default 600). Prints each run's executions, corpus and crashes, from
# afl-fuzz's fuzzer_stats. Crashing inputs land in
# target/afl/<parser>/default/crashes/; replay one with
#   DUET_FUZZ_TARGET=<parser> target/afl-build/release/duet-fuzz-afl < FILE
# Needs cargo-afl: `cargo install cargo-afl` (it builds AFL++ itself).
#
#   scripts/fuzz-afl.sh [SECONDS] [PARSER...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
all="carp arp peer-status ctnetlink peer-link unit-file image-json"
targets=${*:-$all}
CARGO_TARGET_DIR=target/afl-build cargo afl build --release --locked -p duet-fuzz --features afl --bin duet-fuzz-afl
cargo run --release --locked -q -p duet-fuzz --bin duet-fuzz -- --write-seeds target/afl/seeds
printf '%-12s %12s %10s %8s %8s %8s\n' parser executions execs/s corpus edges crashes
status=0
for t in $targets; do
    rm -rf "target/afl/$t"
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1 DUET_FUZZ_TARGET="$t" \
        cargo afl fuzz -V "$secs" -i "target/afl/seeds/$t" -o "target/afl/$t" target/afl-build/release/duet-fuzz-afl \
        > "target/afl/$t.log" 2>&1 || { echo "$t: afl-fuzz failed (target/afl/$t.log)"; status=1; continue; }
    stats="target/afl/$t/default/fuzzer_stats"
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    printf '%-12s %12s %10s %8s %8s %8s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" \
        "$(get corpus_count)" "$(get edges_found)/$(get total_edges)" "$(get saved_crashes)"
    [ "$(get saved_crashes)" = 0 ] || status=1
done
exit $status
