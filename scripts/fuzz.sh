#!/usr/bin/env bash
# `make fuzz`: builds the cargo-fuzz targets of fuzz/ (nightly, AddressSanitizer, debug
# assertions) and runs each for FUZZ_SECONDS (default 600), one after the other, then prints
# the executions per target and whether a crash was found. Exits 1 when one was.
#
#   FUZZ_SECONDS=60 make fuzz                    # a shorter run
#   FUZZ_TARGETS="artifact tar" make fuzz        # some targets only
#   FUZZ_JOBS=4 make fuzz                        # four targets at a time (each its own core share)
#   FUZZ_RESEED=1 make fuzz                      # rewrite the seed corpora
#
# Targets: artifact (whole artifact bytes), tar (the artifact tar reader; writer round trip),
# protomsg (deviceconnect frames), auth_request (the device auth request body), device_keys
# (public keys, identities, signatures); see the doc comment of each in fuzz/fuzz_targets/.
#
# Everything it writes is outside the clone, under FUZZ_HOME (default
# ~/.cache/mender-rs/fuzz): seeds/<target> (from fuzz/seeds.py: real artifacts written by the
# mender-artifact CLI when installed, see scripts/deps.sh), corpus/<target> (what libFuzzer
# found; kept between runs), artifacts/<target> (crash, timeout and OOM inputs),
# logs/<target>.log. Build output goes to FUZZ_TARGET_DIR (default
# ~/.cache/mender-rs/fuzz-target), never to the main CARGO_TARGET_DIR (other flags).
# Reproduce a crash: cargo +nightly fuzz run --fuzz-dir fuzz <target> <crash file>.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-artifact tar protomsg auth_request device_keys}"
home="${FUZZ_HOME:-$HOME/.cache/mender-rs/fuzz}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/mender-rs/fuzz-target}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "[fuzz] installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if command -v cargo-fuzz >/dev/null 2>&1; then
    echo "[fuzz] cargo-fuzz: $(cargo-fuzz --version 2>/dev/null || echo installed)"
else
    echo "[fuzz] installing cargo-fuzz from crates.io"
    # Its own build directory: not the fuzz or main target directories.
    env -u CARGO_TARGET_DIR cargo install --locked cargo-fuzz
fi

if [ "${FUZZ_RESEED:-0}" = 1 ] || [ ! -d "$home/seeds" ]; then
    rm -rf "$home/seeds"
    python3 "$root/fuzz/seeds.py" "$home/seeds"
fi

fuzz=(cargo +nightly fuzz)
echo "[fuzz] building (first build: several minutes) into $CARGO_TARGET_DIR"
(cd "$root" && "${fuzz[@]}" build --fuzz-dir fuzz --debug-assertions)

jobs="${FUZZ_JOBS:-1}"

# One target for $seconds; writes its result line to logs/<target>.result.
run_target() {
    local t=$1
    local corpus="$home/corpus/$t" seeds="$home/seeds/$t" artifacts="$home/artifacts/$t"
    local log="$home/logs/$t.log"
    mkdir -p "$corpus" "$seeds" "$artifacts" "$(dirname "$log")"
    local before
    before="$(find "$artifacts" -type f | sort)"
    local dict=()
    [ -f "$root/fuzz/dicts/$t.dict" ] && dict=(-dict="$root/fuzz/dicts/$t.dict")
    echo "[fuzz] $t: ${seconds} s (log: $log)"
    local status=0
    (cd "$root" && "${fuzz[@]}" run --fuzz-dir fuzz --debug-assertions "$t" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "${dict[@]}") >"$log" 2>&1 || status=$?
    stat() { grep -Eo "stat::$1:[[:space:]]*[0-9]+" "$log" | tail -1 | grep -Eo '[0-9]+$' || true; }
    local execs rate cov new verdict
    execs="$(stat number_of_executed_units)"
    [ -n "$execs" ] || execs="$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
    rate="$(stat average_exec_per_sec)"
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -o '[0-9]*' || true)"
    new="$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -v '/slow-unit-' || true)"
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        verdict="CRASH (exit $status) ${new//$'\n'/ }"
        grep -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY' "$log" | head -5 || true
    else
        verdict="no crash"
    fi
    printf '%-13s %6ss %12s execs %8s/s  cov %6s  corpus %6s  %s\n' \
        "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "$(find "$corpus" -type f | wc -l)" "$verdict" >"$home/logs/$t.result"
}

# FUZZ_JOBS targets at a time (default 1: one after the other).
for t in $targets; do
    rm -f "$home/logs/$t.result"
    run_target "$t" &
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait
summary=()
crashed=0
for t in $targets; do
    line="$(cat "$home/logs/$t.result" 2>/dev/null || echo "$t: no result")"
    summary+=("$line")
    case "$line" in *"no crash"*) ;; *) crashed=1 ;; esac
done
echo
echo "[fuzz] results (seconds per target: $seconds)"
printf '  %s\n' "${summary[@]}"
exit "$crashed"
