#!/usr/bin/env bash
# Instructions per service call of each representation of the content
# routes (examples/bench_representations.rs), counted by callgrind: the
# same on a busy machine as on a quiet one, unlike requests per second.
#
#   bash benches/load/callgrind.sh            # release build
#
# Each case runs at two call counts; (total at HIGH - total at LOW) /
# (HIGH - LOW) is the cost of one call, with setup and warm-up cancelled.
# Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
PROFILE=${LAYERS_BENCH_PROFILE:-release}
LOW=${LAYERS_CALLGRIND_LOW:-200}
HIGH=${LAYERS_CALLGRIND_HIGH:-2200}
if [ "$PROFILE" = release ]; then
  cargo build -q --release --example bench_representations
  BIN=target/release/examples/bench_representations
else
  cargo build -q --example bench_representations
  BIN=target/debug/examples/bench_representations
fi
total() { # total CASE N: instructions callgrind counted for the whole run
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 \
    | awk '/Collected :/{print $NF}'
}
# case and the case it is compared with (the same request shape answered 200).
CASES="container_200:container_200 container_200_other_tag:container_200 container_304:container_200_other_tag
container_identity_ae:container_200 container_br:container_identity_ae container_gzip:container_identity_ae
asset_200:asset_200 asset_200_other_tag:asset_200 asset_304:asset_200_other_tag"
echo "| case | instructions per call | compared with | ratio |"
echo "|---|---:|---|---:|"
declare -A PER=()
for pair in $CASES; do
  c=${pair%%:*}
  ref=${pair#*:}
  lo=$(total "$c" "$LOW")
  hi=$(total "$c" "$HIGH")
  PER[$c]=$(( (hi - lo) / (HIGH - LOW) ))
  printf '| %s | %s | %s | %s |\n' "$c" "${PER[$c]}" "$ref" \
    "$(awk -v a="${PER[$c]}" -v b="${PER[$ref]}" 'BEGIN{printf "%.2fx", a / b}')"
done
