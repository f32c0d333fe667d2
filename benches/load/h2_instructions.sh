#!/usr/bin/env bash
# Instructions per hit of the whole server, HTTP/1.1 against h2, under
# valgrind's callgrind (repeatable on a busy machine, unlike timings).
#
#   bash benches/load/h2_instructions.sh
#
# Needs valgrind and h2load (apt-get install -y valgrind nghttp2-client) and
# a release build (cargo build --release --bin layers-gateway --examples).
# Starts the bench origin and, per protocol and request count, the gateway
# under callgrind on benches/load/gateway.toml's ports (they must be free);
# requests the hot asset N times with h2load (--h1 -m1, or h2 -m10), stops
# the gateway with SIGTERM and reads callgrind's total. Per hit = (total at
# 12,000 - total at 2,000) / 10,000. BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
B=${CARGO_TARGET_DIR:-$ROOT/target}/release
KEY=lp_test_DEM0ADM1N0000A01_demoOnly_orgA_allScopes_notASecret_00000001
HOT=/v1/content/cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/assets/slide-1
for t in valgrind h2load curl; do command -v $t >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
[ -x "$B/layers-gateway" ] && [ -x "$B/examples/bench_origin" ] || { echo "build first: cargo build --release --bin layers-gateway --examples" >&2; exit 2; }
W=$(mktemp -d "${TMPDIR:-/tmp}/h2-instructions.XXXXXX")
OPID=""
cleanup() { [ -n "$OPID" ] && kill "$OPID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
sed -e "s|^keys_file = \"../../config/keys.toml\"|keys_file = \"$ROOT/config/keys.toml\"|" benches/load/gateway.toml >"$W/gw.toml"
"$B/examples/bench_origin" --listen 127.0.0.1:18081 --stats 127.0.0.1:18082 --containers 100 --cold 1 \
  --ids-out "$W/ids" --cold-out "$W/cold" >"$W/origin.log" 2>&1 &
OPID=$!
for i in $(seq 1 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:18082/stats && break; sleep 0.1; done
declare -A TOTAL
for proto in h1 h2; do
  for n in 2000 12000; do
    valgrind --tool=callgrind --callgrind-out-file="$W/cg.$proto.$n" "$B/layers-gateway" serve \
      --config "$W/gw.toml" --allow-demo-keys >"$W/gw.$proto.$n.log" 2>&1 &
    vpid=$!
    for i in $(seq 1 600); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:19091/readyz && break; sleep 0.2; done
    curl -s -o /dev/null -H "X-Api-Key: $KEY" "http://127.0.0.1:18080$HOT"
    if [ $proto = h1 ]; then flags=(--h1 -m 1); else flags=(-m 10); fi
    h2load "${flags[@]}" -n "$n" -c 16 -H "x-api-key: $KEY" "http://127.0.0.1:18080$HOT" >"$W/h2load.txt" 2>&1
    grep -q "$n succeeded" "$W/h2load.txt" || { cat "$W/h2load.txt" >&2; exit 1; }
    kill -TERM "$vpid"
    wait "$vpid" || true
    TOTAL[$proto.$n]=$(callgrind_annotate "$W/cg.$proto.$n" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(/,/, "", $1); print $1}')
  done
  echo "$proto: $(( (TOTAL[$proto.12000] - TOTAL[$proto.2000]) / 10000 )) instructions per hit"
done
