#!/usr/bin/env bash
# Runs every fuzz target (or those named in $TARGETS) for SECONDS each (default 600), one after
# another, as one single-job libFuzzer process. Needs `cargo install cargo-fuzz`; on stable Rust,
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its sanitizer flags. Logs go to fuzz/logs/<target>.log.
#
#   fuzz/run-all.sh 600
#   TARGETS="jwt duration" fuzz/run-all.sh 60
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-600}
targets=${TARGETS:-token_response jwt error_body duration endpoint_url ca_bundle template}
export RUSTC_BOOTSTRAP=1
# No backtrace on a failed check: symbolising one allocates more than -malloc_limit_mb allows.
export RUST_BACKTRACE=0
# More than cargo-fuzz's default of one codegen unit: the operator pulls in k8s-openapi.
build=(--codegen-units 8)
mkdir -p logs
cargo fuzz build "${build[@]}"
for target in $targets; do
    case $target in
        duration | endpoint_url) max_len=4096 ;; # CRD-bounded strings (url: 2048 characters)
        template) max_len=16385 ;;               # byte 0 (mode), then the CRD's limit on one template
        *) max_len=66000 ;;                      # a little over the 64 KiB response body limit
    esac
    echo "==> $target for ${seconds}s"
    # libFuzzer's -jobs mode writes the job's output to fuzz-0.log.
    cargo fuzz run "${build[@]}" "$target" -- -max_total_time="$seconds" -jobs=1 -workers=1 \
        -rss_limit_mb=512 -malloc_limit_mb=2 -timeout=5 -max_len="$max_len" \
        -dict="dicts/$target.dict" -print_final_stats=1 || status=$?
    mv fuzz-0.log "logs/$target.log"
    # The last coverage line (cov: edges, ft: features, corp: units/size) and the totals.
    grep -E 'cov: ' "logs/$target.log" | tail -n 1 || true
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)' "logs/$target.log" | sort -u || true
    [ "${status:-0}" = 0 ] || { echo "$target failed (status $status); see logs/$target.log and artifacts/$target"; exit "$status"; }
done
