#!/usr/bin/env bash
# Load benchmark: layers-gateway side by side with nginx proxy_cache and a
# bare hyper server, on loopback, with wrk.
#
#   bash benches/load/run.sh            # full run (about 25 minutes)
#   bash benches/load/run.sh --smoke    # CI: a few seconds per system, scenarios a c f g deployed
#   bash benches/load/run.sh --help
#
# Needs wrk, nginx, haproxy and h2load (apt-get install -y wrk nginx
# haproxy nghttp2-client), curl, taskset and cargo. Servers run pinned to core 0, load generators to core 1. Prints
# markdown tables; BENCHMARKS.md explains them and records a full run.
# Stops only the processes it started (their PIDs are recorded).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash benches/load/run.sh [--smoke] [--scenarios "a b c d e f g"] [--out FILE] [--profile]

  --smoke        one short round of scenarios a, c, f, g and deployed; exits
                 non-zero if anything fails to start or a gateway hit reaches the origin
  --scenarios    which scenarios to run (default: a b c d e f g deployed; smoke: a c f g deployed)
                   a  one hot asset, 100% cache hits
                   b  Zipf(s=1.0) over 100,000 containers x 4 assets
                   c  1,000 concurrent requests on one cold container
                   d  scenario a while 100 invalidation webhooks/s arrive
                   e  gateway memory after 100,000 and 1,000,000 containers
                   f  polling with If-None-Match: every answer a 304 (conditional.sh);
                      gateway, nginx and HAProxy (cache + gzip frontend)
                   g  the hot container with Accept-Encoding: gzip, br (conditional.sh);
                      gateway, nginx and HAProxy (cache + gzip frontend)
                   deployed  as deployed, interleaved: gateway with its access log
                      off / on (JSON to a file), JWT callers (ES256, HS256),
                      nginx log off / buffered, HAProxy cache, bare hyper, and
                      h2 (h2load) against the gateway and nginx (benches/load/deployed.sh)
  --out FILE     also write the markdown results to FILE
  --profile      after the scenarios, record the gateway under `perf record` (dwarf call graphs)
                 during a short scenario-a run and print the top hot spots

Environment (defaults in brackets; smoke values after the slash):
  LAYERS_BENCH_PROFILE      release | debug           [release]
  LAYERS_BENCH_DURATION     seconds per wrk run        [10 / 3]
  LAYERS_BENCH_WARMUP       seconds of unmeasured load [3 / 1]
  LAYERS_BENCH_ROUNDS       interleaved rounds         [3 / 1]
  LAYERS_BENCH_CONNECTIONS  wrk connections            [64]
  LAYERS_BENCH_H2_CLIENTS   h2load clients (deployed)  [16]
  LAYERS_BENCH_H2_STREAMS   h2load streams per client  [10]
  LAYERS_BENCH_CONTAINERS   scenario b working set     [100000 / 1000]
  LAYERS_BENCH_BURST        scenario c concurrency     [1000]
  LAYERS_BENCH_MEMORY_MAX   scenario e largest fill    [1000000]
  LAYERS_BENCH_NICE         nice value of servers and load generators [0]; on a
                            shared machine -10 (root) keeps other jobs' compiles
                            from taking the pinned cores away mid-run
  LAYERS_BENCH_GATEWAY_CONFIG  the gateway's config [benches/load/gateway.toml]
  LAYERS_BENCH_KEEP=1       keep the work directory (logs, wrk output)
EOF
}

SMOKE=0
OUT=""
PROFILE_RUN=0
SCENARIOS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --scenarios) SCENARIOS="${2:?--scenarios needs a list}"; shift ;;
    --profile) PROFILE_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done

cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/benches/load

if [ "$SMOKE" = 1 ]; then
  : "${LAYERS_BENCH_DURATION:=3}" "${LAYERS_BENCH_WARMUP:=1}" "${LAYERS_BENCH_ROUNDS:=1}"
  : "${LAYERS_BENCH_CONTAINERS:=1000}"
  : "${SCENARIOS:=a c f g deployed}"
fi
DURATION=${LAYERS_BENCH_DURATION:-10}
WARMUP=${LAYERS_BENCH_WARMUP:-3}
ROUNDS=${LAYERS_BENCH_ROUNDS:-3}
CONNS=${LAYERS_BENCH_CONNECTIONS:-64}
CONTAINERS=${LAYERS_BENCH_CONTAINERS:-100000}
BURST=${LAYERS_BENCH_BURST:-1000}
MEMORY_MAX=${LAYERS_BENCH_MEMORY_MAX:-1000000}
BUILD_PROFILE=${LAYERS_BENCH_PROFILE:-release}
SCENARIOS=${SCENARIOS:-a b c d e f g deployed}
COLD=64

# Loopback ports (benches/load/gateway.toml names the gateway's three).
GW_PORT=18080
ADMIN_PORT=19091
ORIGIN_PORT=18081
STATS_PORT=18082
NGINX_PORT=18083
HYPER_PORT=18084
SINK_PORT=18085 # scenario d's control: a webhook sink on the load generator's core
HYPER_HEAD_PORT=18086 # scenario a's control: bare hyper sending the gateway's header block
HAPROXY_GZIP_PORT=18091 # HAProxy's frontend for scenarios f and g (cache + gzip); deployed.sh has the other
GW=http://127.0.0.1:$GW_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT
STATS=http://127.0.0.1:$STATS_PORT/stats
NGINX=http://127.0.0.1:$NGINX_PORT
HYPER=http://127.0.0.1:$HYPER_PORT
HYPER_HEAD=http://127.0.0.1:$HYPER_HEAD_PORT
HAPROXY_GZIP=http://127.0.0.1:$HAPROXY_GZIP_PORT
GW_CONFIG=${LAYERS_BENCH_GATEWAY_CONFIG:-$HERE/gateway.toml}
# The deployed scenario's systems, ports and functions.
# shellcheck source=benches/load/deployed.sh
source "$HERE/deployed.sh"

# The demo `admin` key (config/demo-keys.toml: published, test-only): org
# org_demo_a, every scope, tier pilot (raised in gateway.toml).
KEY=lp_test_DEM0ADM1N0000A01_demoOnly_orgA_allScopes_notASecret_00000001
# The hot asset: the demo slideshow's first slide (a 452-byte descriptor).
HOT_PATH=/v1/content/cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/assets/slide-1

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
missing=()
for tool in wrk nginx curl taskset cargo awk; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
case " $SCENARIOS " in
  *" deployed "* | *" f "* | *" g "*)
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy) ;;
esac
case " $SCENARIOS " in
  *" deployed "*)
    command -v h2load >/dev/null 2>&1 || missing+=(h2load) ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=()
  for t in "${missing[@]}"; do
    case "$t" in
      wrk|nginx|curl|haproxy) pkgs+=("$t") ;;
      h2load) pkgs+=(nghttp2-client) ;;
      taskset) pkgs+=(util-linux) ;;
      awk) pkgs+=(gawk) ;;
      cargo) echo "run.sh: cargo is missing: install the Rust toolchain (rustup)" >&2 ;;
    esac
  done
  echo "run.sh: missing: ${missing[*]}" >&2
  [ ${#pkgs[@]} -gt 0 ] && echo "run.sh: install them from the system's packages: apt-get install -y ${pkgs[*]}" >&2
  exit 2
fi
NGINX_BIN=$(command -v nginx)

NCPU=$(nproc)
NICE=${LAYERS_BENCH_NICE:-0}
PRIO=()
if [ "$NICE" != 0 ]; then
  if [ "$NICE" -lt 0 ] && [ "$(id -u)" != 0 ]; then
    log "warning: LAYERS_BENCH_NICE=$NICE needs root; running at normal priority"
    NICE=0
  else
    PRIO=(nice -n "$NICE")
  fi
fi
if [ "$NCPU" -ge 2 ]; then
  PIN_SERVER=("${PRIO[@]}" taskset -c 0)
  PIN_CLIENT=("${PRIO[@]}" taskset -c 1)
else
  log "warning: only $NCPU CPU: servers and load generator share it (no pinning)"
  PIN_SERVER=("${PRIO[@]}")
  PIN_CLIENT=("${PRIO[@]}")
fi

for p in $GW_PORT $ADMIN_PORT $ORIGIN_PORT $STATS_PORT $NGINX_PORT $HYPER_PORT $SINK_PORT $HYPER_HEAD_PORT \
  $GW_LOG_PORT $ADMIN_LOG_PORT $NGINX_LOG_PORT $HAPROXY_PORT $NGINX_H2_PORT $HAPROXY_GZIP_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p is already in use on 127.0.0.1 (another benchmark running?)"
  fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------- cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layers-bench.XXXXXX")
chmod 755 "$WORK"
declare -A PIDS=()
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? name
  trap - EXIT INT TERM
  for name in "${!PIDS[@]}"; do
    stop_pid "${PIDS[$name]}"
  done
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK"/*.log "$WORK"/nginx/nginx-error.log; do
      [ -s "$f" ] || continue
      echo "--- last lines of $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [ "${LAYERS_BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "run.sh: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD... : runs CMD pinned to the server core, logs to $WORK/NAME.log
start() {
  local name=$1
  shift
  "${PIN_SERVER[@]}" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
}
stop() {
  local name=$1
  [ -n "${PIDS[$name]:-}" ] || return 0
  stop_pid "${PIDS[$name]}"
  unset "PIDS[$name]"
}
alive() { kill -0 "${PIDS[$1]}" 2>/dev/null || die "$1 exited (see $WORK/$1.log)"; }

# wait_http NAME URL [SECONDS]: until URL answers (any status)
wait_http() {
  local name=$1 url=$2 secs=${3:-60} i
  for i in $(seq 1 $((secs * 10))); do
    alive "$name"
    if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
    sleep 0.1
  done
  die "$name did not answer $url within ${secs}s"
}

origin_total() { curl -s --max-time 5 "$STATS" | awk '/^total_requests /{print $2}'; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# --------------------------------------------------------------- build
if [ "$BUILD_PROFILE" = release ]; then
  log "building (release): cargo build --release --bin layers-gateway --examples"
  cargo build --release --bin layers-gateway --examples
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
else
  log "building (debug): cargo build --bin layers-gateway --examples"
  cargo build --bin layers-gateway --examples
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi
for b in layers-gateway examples/bench_origin examples/bench_baseline examples/bench_fill \
  examples/bench_burst examples/bench_webhooks examples/bench_jwt; do
  [ -x "$BIN/$b" ] || die "not built: $BIN/$b"
done
# JWT keys and tokens, and the derived configs (GW_CONFIG moves to $WORK).
deployed_prepare
"$BIN/layers-gateway" check-config "$GW_CONFIG" --allow-demo-keys >/dev/null || die "$GW_CONFIG is not a valid config"

# ------------------------------------------------------------- servers
log "starting the bench origin ($CONTAINERS containers + $COLD cold)"
start origin "$BIN/examples/bench_origin" --listen "127.0.0.1:$ORIGIN_PORT" --stats "127.0.0.1:$STATS_PORT" \
  --containers "$CONTAINERS" --cold "$COLD" --ids-out "$WORK/ids.txt" --cold-out "$WORK/cold.txt"
wait_http origin "$STATS" 300
JSON_BYTES=$(sed -n 's/.*container JSON \([0-9]*\) bytes.*/\1/p' "$WORK/origin.log")

start_gateway() {
  # The harness authenticates with the published demo admin key.
  start gateway "$BIN/layers-gateway" serve --config "$GW_CONFIG" --allow-demo-keys
  local i
  for i in $(seq 1 300); do
    alive gateway
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$ADMIN/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  die "the gateway was not ready within 30s"
}
log "starting layers-gateway ($GW_CONFIG)"
start_gateway

log "starting nginx ($NGINX_BIN, one worker)"
mkdir -p "$WORK/nginx/cache"
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"
sed -e "s|@TMP@|$WORK/nginx|g" -e "s|@KEY@|$KEY|g" -e "s|@ORIGIN@|127.0.0.1:$ORIGIN_PORT|g" \
  -e "s|@LISTEN@|127.0.0.1:$NGINX_PORT|g" -e "s|@LOG_LISTEN@|127.0.0.1:$NGINX_LOG_PORT|g" \
  -e "s|@H2_LISTEN@|127.0.0.1:$NGINX_H2_PORT|g" "$HERE/nginx.conf.in" >"$WORK/nginx/nginx.conf"
cp "$HERE/nginx-location.conf.in" "$WORK/nginx/layers-location.conf"
[ -n "$NGINX_USER" ] && sed -i "1i $NGINX_USER" "$WORK/nginx/nginx.conf"
"$NGINX_BIN" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/nginx-error.log" \
  || die "nginx rejected $WORK/nginx/nginx.conf"
start nginx "$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/nginx-error.log"
wait_http nginx "$NGINX/" 30

# ------------------------------------------------------ sanity checks
check_status() { # check_status WANT URL [curl args]
  local want=$1 url=$2 got
  shift 2
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url")
  [ "$got" = "$want" ] || die "$url answered $got, expected $want"
}
check_status 401 "$GW$HOT_PATH"
check_status 401 "$NGINX$HOT_PATH"
check_status 401 "$GW$HOT_PATH" -H "X-Api-Key: lp_test_DEM0ADM1N0000A01_wrongSecret_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
check_status 200 "$GW$HOT_PATH" -H "X-Api-Key: $KEY"
curl -s -H "X-Api-Key: $KEY" "$GW$HOT_PATH" -o "$WORK/hot.json"
BODY_BYTES=$(wc -c <"$WORK/hot.json")
curl -s -H "X-Api-Key: $KEY" "$NGINX$HOT_PATH" -o /dev/null
curl -s -H "X-Api-Key: $KEY" "$NGINX$HOT_PATH" -o "$WORK/hot-nginx.json"
cmp -s "$WORK/hot.json" "$WORK/hot-nginx.json" || die "nginx and the gateway answer different bytes for $HOT_PATH"
[ "$(curl -s -D - -o /dev/null -H "X-Api-Key: $KEY" "$NGINX$HOT_PATH" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')" = HIT ] \
  || die "nginx does not answer $HOT_PATH from its cache"
[ "$(curl -s -D - -o /dev/null -H "X-Api-Key: $KEY" "$GW$HOT_PATH" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')" = HIT ] \
  || die "the gateway does not answer $HOT_PATH from its cache"

# start_haproxy: HAProxy (benches/load/haproxy.cfg.in), started once for
# every scenario that has HAProxy rows (deployed, f, g): frontend `layers`
# on $HAPROXY_PORT (deployed) and `layers-gzip` on $HAPROXY_GZIP_PORT (f
# and g: the same cache and key check, plus gzip). Each is checked: 401
# without the key, the gateway's bytes, and a second request answered from
# the cache.
start_haproxy() {
  [ -z "${PIDS[haproxy]:-}" ] || return 0
  log "starting HAProxy ($(command -v haproxy), one thread)"
  sed -e "s|@KEY@|$KEY|g" -e "s|@ORIGIN@|127.0.0.1:$ORIGIN_PORT|g" -e "s|@LISTEN@|127.0.0.1:$HAPROXY_PORT|g" \
    -e "s|@GZIP_LISTEN@|127.0.0.1:$HAPROXY_GZIP_PORT|g" "$HERE/haproxy.cfg.in" >"$WORK/haproxy.cfg"
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"
  start haproxy haproxy -db -f "$WORK/haproxy.cfg"
  local url before after
  for url in "$HAPROXY" "$HAPROXY_GZIP"; do
    wait_http haproxy "$url/" 30
    check_status 401 "$url$HOT_PATH"
    curl -s -H "X-Api-Key: $KEY" "$url$HOT_PATH" -o /dev/null
    before=$(origin_total)
    curl -s -H "X-Api-Key: $KEY" "$url$HOT_PATH" -o "$WORK/hot-check.json"
    after=$(origin_total)
    cmp -s "$WORK/hot.json" "$WORK/hot-check.json" || die "$url answers different bytes for $HOT_PATH"
    [ "$before" = "$after" ] || die "HAProxy ($url) does not answer $HOT_PATH from its cache"
  done
}

start_hyper() { # start_hyper BODY_FILE
  stop hyper
  start hyper "$BIN/examples/bench_baseline" --listen "127.0.0.1:$HYPER_PORT" --body-file "$1"
  wait_http hyper "$HYPER/" 30
}
start_hyper "$WORK/hot.json"
curl -s "$HYPER$HOT_PATH" -o "$WORK/hot-hyper.json"
cmp -s "$WORK/hot.json" "$WORK/hot-hyper.json" || die "the baseline answers different bytes"

# Scenario a's control: the same baseline, also sending the header block the
# gateway sends with the hot asset (fixed values, cloned from one map). The
# gap between the two hyper rows is what writing those headers costs; the
# gap between this row and the gateway is the gateway's own work.
curl -s -D "$WORK/gateway-head.txt" -o /dev/null -H "X-Api-Key: $KEY" "$GW$HOT_PATH"
start hyper-head "$BIN/examples/bench_baseline" --listen "127.0.0.1:$HYPER_HEAD_PORT" --body-file "$WORK/hot.json" \
  --headers-file "$WORK/gateway-head.txt"
wait_http hyper-head "$HYPER_HEAD/" 30
header_names() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | awk -F: 'NR > 1 && NF > 1 {print tolower($1)}' | sort; }
[ "$(header_names "$HYPER_HEAD$HOT_PATH")" = "$(header_names -H "X-Api-Key: $KEY" "$GW$HOT_PATH")" ] \
  || die "the header-block baseline does not send the gateway's header names"

url_of() {
  case "$1" in
    gateway-log) echo "$GW_LOG" ;;
    gateway*) echo "$GW" ;;
    nginx) echo "$NGINX" ;;
    nginx-log) echo "$NGINX_LOG" ;;
    haproxy) echo "$HAPROXY" ;;
    haproxy-gzip) echo "$HAPROXY_GZIP" ;;
    hyper) echo "$HYPER" ;;
    hyper-head) echo "$HYPER_HEAD" ;;
  esac
}
# The credential a system's callers send (JWT rows: a bearer token).
auth_header_of() {
  case "$1" in
    gateway-es256) echo "Authorization: Bearer $ES256_TOKEN" ;;
    gateway-hs256) echo "Authorization: Bearer $HS256_TOKEN" ;;
    *) echo "X-Api-Key: $KEY" ;;
  esac
}
label_of() {
  case "$1" in
    gateway) echo "layers-gateway" ;;
    gateway-log) echo "layers-gateway, access log on (JSON to a file)" ;;
    gateway-es256) echo "layers-gateway, ES256 JWT callers" ;;
    gateway-hs256) echo "layers-gateway, HS256 JWT callers" ;;
    gateway-h2) echo "layers-gateway over h2" ;;
    nginx-h2) echo "nginx http2 listener" ;;
    nginx-log) echo "nginx, access log on (buffer=64k)" ;;
    haproxy) echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR==1{print $3}') cache + key check" ;;
    haproxy-gzip) echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR==1{print $3}') cache + gzip + key check" ;;
    gateway+webhooks) echo "layers-gateway + 100 webhooks/s" ;;
    gateway+sink) echo "layers-gateway, 100 webhooks/s sent to a sink" ;;
    nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*nginx/||') proxy_cache" ;;
    hyper) echo "bare hyper (no auth, no cache)" ;;
    hyper-head) echo "bare hyper + the gateway's response headers (fixed values)" ;;
  esac
}

# ------------------------------------------------------------- wrk runs
RESULTS=$WORK/results.tsv
: >"$RESULTS"
to_ms() { # 1.23ms / 523.00us / 1.01s -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n }'
}

# wrk_run SCENARIO ROUND SYSTEM SECONDS PATH_OR_- [wrk options...] [-- script args...]
# ROUND "warm" is not recorded. Records rps, p50, p99 and the origin
# requests made while it ran; fails on errors, non-2xx answers, and (for
# the gateway) any origin request.
wrk_run() {
  local scen=$1 round=$2 sys=$3 secs=$4 path=$5
  shift 5
  local url out before after rps p50 p99 non2xx sockerr origin spid cpu_before cpu_after requests cpu_us
  local opts=() script_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  script_args=("$@")
  url=$(url_of "$sys")
  [ "$path" = - ] && path=/
  out=$WORK/wrk-$scen-$round-$sys.txt
  spid=$(pid_of "$sys")
  before=$(origin_total)
  cpu_before=$(cpu_ticks "$spid")
  # wrk passes the arguments after the URL to the script's init().
  "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${secs}s" --latency -H "$(auth_header_of "$sys")" "${opts[@]}" "$url$path" \
    "${script_args[@]}" >"$out" 2>&1 || die "wrk failed against $sys (see $out)"
  cpu_after=$(cpu_ticks "$spid")
  after=$(origin_total)
  origin=$((after - before))
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  requests=$(awk '/ requests in /{print $1}' "$out")
  cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$CLK_TCK" -v n="${requests:-0}" \
    'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print 0 }')
  p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")")
  p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
  non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/{print $2}' "$out")
  sockerr=$(awk '/Socket errors/{gsub(/[^0-9 ]/," "); s=0; for(i=1;i<=NF;i++) s+=$i; print s}' "$out")
  [ -n "$rps" ] || die "no wrk result against $sys (see $out)"
  [ "${requests:-0}" -gt 0 ] || die "wrk completed no request against $sys in scenario $scen (see $out)"
  [ "${non2xx:-0}" = 0 ] || die "$sys answered ${non2xx} non-2xx responses in scenario $scen (see $out)"
  [ "${sockerr:-0}" = 0 ] || log "warning: $sys: wrk socket errors ${sockerr} in scenario $scen (see $out)"
  case "$sys" in
    gateway*) [ "$origin" = 0 ] || die "the gateway made $origin origin requests during hit scenario $scen round $round" ;;
  esac
  case "$sys" in hyper*) origin=- ;; esac
  if [ "$round" != warm ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$round" "$sys" "$rps" "$p50" "$p99" "$origin" "$cpu_us" >>"$RESULTS"
    log "$scen round $round $(label_of "$sys"): $rps req/s, p50 ${p50} ms, p99 ${p99} ms, server CPU ${cpu_us} us/request, origin requests $origin"
  fi
}

# The server process of a system (whose CPU time is measured).
pid_of() {
  case "$1" in
    gateway-log) echo "${PIDS[gateway-log]}" ;;
    gateway*) echo "${PIDS[gateway]}" ;;
    nginx*) echo "${PIDS[nginx]}" ;;
    haproxy*) echo "${PIDS[haproxy]}" ;;
    *) echo "${PIDS[$1]}" ;;
  esac
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_ticks PID: user + system clock ticks of PID and its children (nginx's worker).
cpu_ticks() {
  local pid=$1 kids
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
  # shellcheck disable=SC2086
  for p in "$pid" $kids; do cat "/proc/$p/stat" 2>/dev/null || true; done \
    | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}

# summarize SCENARIO REF SYSTEM...: markdown table of medians over rounds;
# the ratio is the median of the per-round ratios to REF's requests/s.
summarize() {
  local scen=$1 ref=$2 sys
  shift 2
  echo "| system | requests/s (median) | p50 ms | p99 ms | ratio to gateway (req/s) | server CPU µs/request | ratio to gateway (req per CPU-s) | origin requests during measured runs |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for sys in "$@"; do
    awk -F'\t' -v scen="$scen" -v sys="$sys" -v ref="$ref" -v label="$(label_of "$sys")" '
      function med(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      $1 == scen && $3 == ref { refrps[$2] = $4; refcpu[$2] = $8 }
      $1 == scen && $3 == sys { n++; rps[n] = $4; p50[n] = $5; p99[n] = $6; rnd[n] = $2; cpu[n] = $8
        if ($7 == "-") org = "-"; else if (org != "-") org += $7 }
      END {
        if (n == 0) exit
        for (i = 1; i <= n; i++) {
          if (refrps[rnd[i]] > 0) { m++; ratio[m] = rps[i] / refrps[rnd[i]] }
          if (cpu[i] > 0 && refcpu[rnd[i]] > 0) { k++; eff[k] = refcpu[rnd[i]] / cpu[i] }
        }
        printf "| %s | %.0f | %.2f | %.2f | %s | %.1f | %s | %s |\n", label, med(rps, n), med(p50, n), med(p99, n),
          (m ? sprintf("%.2fx", med(ratio, m)) : "-"), med(cpu, n), (k ? sprintf("%.2fx", med(eff, k)) : "-"),
          (org == "" ? 0 : org)
      }' "$RESULTS"
  done
}

REPORT=$WORK/report.md
: >"$REPORT"
emit() { printf '%s\n' "$*" | tee -a "$REPORT"; }

machine_info() {
  local cpu mem
  cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
  mem=$(awk '/^MemTotal:/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  emit "Machine: $(nproc) CPUs ($cpu), $mem RAM, $(uname -sr)."
  emit "Tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(rustc --version | awk '{print $1, $2}'), build profile $BUILD_PROFILE."
  emit "Other load at start: load average $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min); benchmark processes at nice $NICE. The machine is not isolated, so compare systems within a round (the ratio column) rather than across runs."
  [ "$BUILD_PROFILE" = release ] || emit "**Debug build: these figures only show that everything runs; use a release build to measure.**"
  emit "Load: \`wrk -t1 -c$CONNS -d${DURATION}s --latency\` pinned to core 1; every server pinned to core 0; $ROUNDS interleaved round(s) after ${WARMUP}s warm-up per system; asset route with a valid \`X-Api-Key\` ($BODY_BYTES-byte body in scenario a)."
  emit ""
}

has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

GW_FAIL=0
machine_info

# ------------------------------------------------ scenario a: hot asset
if has a; then
  log "scenario a: one hot asset, 100% hits"
  for sys in gateway nginx hyper hyper-head; do wrk_run a warm "$sys" "$WARMUP" "$HOT_PATH"; done
  for r in $(seq 1 "$ROUNDS"); do
    for sys in gateway nginx hyper hyper-head; do wrk_run a "$r" "$sys" "$DURATION" "$HOT_PATH"; done
  done
  emit "### (a) One hot asset, every request a cache hit"
  emit ""
  summarize a gateway gateway nginx hyper hyper-head | tee -a "$REPORT"
  emit ""
fi

# ------------------------------------------- scenario deployed
if has deployed; then
  deployed_start
  deployed_run
fi

# ----------------------------------------------------- scenario b: Zipf
if has b; then
  log "scenario b: warming the gateway over $CONTAINERS containers"
  "${PIN_CLIENT[@]}" "$BIN/examples/bench_fill" --url "$GW" --key "$KEY" --ids "$WORK/ids.txt" --route container \
    --concurrency 64 | tee "$WORK/fill-gateway.txt" >&2 || die "gateway warm-up failed"
  log "scenario b: warming nginx over $((CONTAINERS * 4)) asset URLs"
  "${PIN_CLIENT[@]}" "$BIN/examples/bench_fill" --url "$NGINX" --key "$KEY" --ids "$WORK/ids.txt" --route assets \
    --concurrency 64 | tee "$WORK/fill-nginx.txt" >&2 || die "nginx warm-up failed"
  # The baseline answers a generated asset's bytes, as long as those of scenario b.
  FIRST_ID=$(head -n 1 "$WORK/ids.txt")
  curl -s -H "X-Api-Key: $KEY" "$GW/v1/content/$FIRST_ID/assets/slide-1" -o "$WORK/zipf-asset.json"
  start_hyper "$WORK/zipf-asset.json"
  ZIPF=(-s "$HERE/zipf.lua" -- "$WORK/ids.txt" 1.0)
  for sys in gateway nginx hyper; do wrk_run b warm "$sys" "$WARMUP" - "${ZIPF[@]}"; done
  for r in $(seq 1 "$ROUNDS"); do
    for sys in gateway nginx hyper; do wrk_run b "$r" "$sys" "$DURATION" - "${ZIPF[@]}"; done
  done
  start_hyper "$WORK/hot.json"
  emit "### (b) Zipf (s = 1.0) over $CONTAINERS containers x 4 assets, after warm-up"
  emit ""
  summarize b gateway gateway nginx hyper | tee -a "$REPORT"
  emit ""
  emit "Warm-up: gateway $(sed 's/^bench_fill: //' "$WORK/fill-gateway.txt") (one fill per container); nginx $(sed 's/^bench_fill: //' "$WORK/fill-nginx.txt") (one per asset URL)."
  emit ""
fi

# -------------------------------------- scenario d: hits under webhooks
if has d; then
  log "scenario d: scenario a while 100 webhooks/s invalidate other containers"
  WEBHOOKS_LOG=$WORK/webhooks.txt
  : >"$WEBHOOKS_LOG"
  # The control: the same sender, at the same rate, aimed at a sink (a bare
  # hyper server) on the load generator's core. It loads core 1 exactly as
  # the real run does, so the gap between the two rows is what handling the
  # invalidations costs the gateway, apart from what sending them costs wrk.
  "${PIN_CLIENT[@]}" "$BIN/examples/bench_baseline" --listen "127.0.0.1:$SINK_PORT" --body-file "$WORK/hot.json" \
    >"$WORK/sink.log" 2>&1 &
  PIDS[sink]=$!
  wait_http sink "http://127.0.0.1:$SINK_PORT/" 30
  send_webhooks() { # send_webhooks URL: 100/s for one measured run, in the background
    "${PIN_CLIENT[@]}" "$BIN/examples/bench_webhooks" --url "$1" --config "$GW_CONFIG" \
      --ids "$WORK/ids.txt" --rate 100 --duration "$DURATION" >>"$2" 2>&1 &
    PIDS[webhooks]=$!
  }
  wrk_run a warm gateway "$WARMUP" "$HOT_PATH"
  for r in $(seq 1 "$ROUNDS"); do
    wrk_run d "$r" gateway "$DURATION" "$HOT_PATH"
    send_webhooks "http://127.0.0.1:$SINK_PORT/webhooks/layers" "$WORK/sink-webhooks.txt"
    wrk_run d "$r" gateway+sink "$DURATION" "$HOT_PATH"
    wait "${PIDS[webhooks]}" || die "webhooks to the sink failed (see $WORK/sink-webhooks.txt)"
    send_webhooks "$GW/webhooks/layers" "$WEBHOOKS_LOG"
    wrk_run d "$r" gateway+webhooks "$DURATION" "$HOT_PATH"
    wait "${PIDS[webhooks]}" || die "webhooks failed (see $WEBHOOKS_LOG)"
    unset "PIDS[webhooks]"
  done
  stop sink
  emit "### (d) Scenario a while 100 signed invalidation webhooks/s arrive for other containers"
  emit ""
  summarize d gateway gateway gateway+sink gateway+webhooks | tee -a "$REPORT"
  emit ""
  emit "Rows: plain scenario a; scenario a while the load generator's core also sends the webhooks to a sink (the control); scenario a while the gateway receives them. The gateway's own cost of the invalidations is the gap between the last two rows."
  emit ""
  emit "Gateway + webhooks vs the control, median of the per-round ratios: $(awk -F'\t' '
    $1 == "d" && $3 == "gateway+sink" { sink[$2] = $4 }
    $1 == "d" && $3 == "gateway+webhooks" { hook[$2] = $4; if ($2 + 0 > last) last = $2 + 0 }
    END {
      for (r = 1; r <= last; r++) if (sink[r] > 0 && hook[r] > 0) { n++; v[n] = hook[r] / sink[r]; per = per sprintf("%s%.3f", (n > 1 ? ", " : ""), v[n]) }
      for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
      m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "%.3fx (rounds: %s)", m, per
    }' "$RESULTS")."
  emit ""
  emit "Webhooks, per round: $(grep '^webhooks' "$WEBHOOKS_LOG" | sed 's/^webhooks //' | paste -sd ';' - | sed 's/;/; /g')."
  emit ""
fi

# ------------------------------- scenarios f and g: 304s, compression
# shellcheck source=benches/load/conditional.sh
. "$HERE/conditional.sh"
if has f; then scenario_f; fi
if has g; then scenario_g; fi

# ------------------------------------------ scenario c: cold burst
if has c; then
  log "scenario c: $BURST concurrent requests on one cold container"
  BURSTS=$WORK/bursts.tsv
  : >"$BURSTS"
  mapfile -t COLD_IDS <"$WORK/cold.txt"
  k=0
  for r in $(seq 1 "$ROUNDS"); do
    for sys in gateway nginx; do
      id=${COLD_IDS[$k]}
      k=$((k + 1))
      expect=()
      [ "$sys" = gateway ] && expect=(--expect-origin 1)
      line=$("${PIN_CLIENT[@]}" "$BIN/examples/bench_burst" --url "$(url_of "$sys")" --key "$KEY" \
        --path "/v1/content/$id/assets/slide-1" --warm-path "$HOT_PATH" --concurrency "$BURST" \
        --stats "$STATS" "${expect[@]}") || { echo "$line" >&2; die "burst against $sys failed: $line"; }
      log "c round $r $(label_of "$sys"): $line"
      echo "$line" | awk -v sys="$sys" -v r="$r" '{for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sys, r, v["ok"], v["p50_ms"], v["p99_ms"], v["max_ms"], v["wall_ms"], v["origin_requests"]}' >>"$BURSTS"
    done
  done
  emit "### (c) $BURST concurrent requests on one cold container (each on its own open connection)"
  emit ""
  emit "| system | round | answered 200 | p50 ms | p99 ms | max ms | burst wall ms | origin requests |"
  emit "|---|---:|---:|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r sys r ok p50 p99 max wall origin; do
    emit "| $(label_of "$sys") | $r | $ok/$BURST | $p50 | $p99 | $max | $wall | $origin |"
  done <"$BURSTS"
  emit ""
fi

# ----------------------------------------------- scenario e: memory
if has e; then
  log "scenario e: gateway memory (fresh gateway, windows of 100,000 containers)"
  stop gateway
  start_gateway
  GW_PID=${PIDS[gateway]}
  sleep 1
  RSS0=$(rss_kib "$GW_PID")
  WINDOW=100000
  [ "$MEMORY_MAX" -lt "$WINDOW" ] && WINDOW=$MEMORY_MAX
  MEM=$WORK/memory.tsv
  : >"$MEM"
  filled=0
  t0=$(date +%s)
  while [ "$filled" -lt "$MEMORY_MAX" ]; do
    n=$WINDOW
    [ $((filled + n)) -gt "$MEMORY_MAX" ] && n=$((MEMORY_MAX - filled))
    curl -s -f -X POST "http://127.0.0.1:$STATS_PORT/window?first=$((10000000 + filled))&count=$n" -o "$WORK/window.txt" \
      || die "the origin did not build window $filled+$n"
    "${PIN_CLIENT[@]}" "$BIN/examples/bench_fill" --url "$GW" --key "$KEY" --ids "$WORK/window.txt" --route container \
      --concurrency 64 >>"$WORK/fill-memory.txt" || die "memory fill failed at $filled"
    filled=$((filled + n))
    if [ "$filled" = 100000 ] || [ "$filled" = "$MEMORY_MAX" ]; then
      sleep 2
      entries=$(curl -s "$ADMIN/metrics" | awk '$1=="layers_gateway_cache_entries"{print $2}')
      printf '%s\t%s\t%s\n' "$filled" "$(rss_kib "$GW_PID")" "${entries:-?}" >>"$MEM"
      log "e: $filled containers filled, VmRSS $(rss_kib "$GW_PID") KiB, cache_entries ${entries:-?}"
    fi
  done
  t1=$(date +%s)
  emit "### (e) Gateway resident memory per cached container"
  emit ""
  emit "Fresh gateway: VmRSS $((RSS0 / 1024)) MiB before filling. Each generated container is $JSON_BYTES bytes of JSON (4 assets); filled through \`GET /v1/content/:id\` at 64 in flight ($((t1 - t0)) s for $MEMORY_MAX, origin windows included)."
  emit ""
  emit "| containers cached | cache_entries | VmRSS MiB | RSS delta per container | JSON per container | beyond the JSON |"
  emit "|---:|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r n rss entries; do
    emit "$(awk -v n="$n" -v rss="$rss" -v rss0="$RSS0" -v e="$entries" -v j="$JSON_BYTES" 'BEGIN {
      per = (rss - rss0) * 1024 / n
      printf "| %d | %s | %.0f | %.0f B | %d B | %.0f B |", n, e, rss / 1024, per, j, per - j }')"
  done <"$MEM"
  emit ""
fi

# ---------------------------------------------------------- profile
if [ "$PROFILE_RUN" = 1 ]; then
  command -v perf >/dev/null 2>&1 || die "--profile needs perf (apt-get install -y linux-perf)"
  log "profile: perf record --call-graph dwarf on the gateway during a ${DURATION}s scenario-a run"
  [ -n "${PIDS[gateway]:-}" ] || start_gateway
  curl -s -o /dev/null -H "X-Api-Key: $KEY" "$GW$HOT_PATH"
  perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "${PIDS[gateway]}" -o "$WORK/perf.data" -- sleep "$((DURATION + 1))" \
    >"$WORK/perf-record.log" 2>&1 &
  perf_pid=$!
  sleep 0.5
  "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "X-Api-Key: $KEY" "$GW$HOT_PATH" >"$WORK/wrk-profile.txt" 2>&1 \
    || die "wrk failed while profiling"
  wait "$perf_pid" || true
  perf report -i "$WORK/perf.data" --no-children --percent-limit 0.7 --stdio -g none --sort dso,symbol 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -30 >"$WORK/profile-self.txt" || true
  perf report -i "$WORK/perf.data" --children --percent-limit 0.5 --stdio -g none --sort symbol 2>/dev/null \
    | grep -v '^#' | grep -v '(inlined)' | grep -E 'layers_gateway::|Http1Transaction|writev|recvfrom|epoll_wait|moka|sha2' \
    | sed 's/[ -]*$//' | head -30 >"$WORK/profile-children.txt" || true
  emit "### Profile: gateway during scenario a (perf, cpu-clock samples, $(awk '/^Requests\/sec:/{print $2}' "$WORK/wrk-profile.txt") req/s while recording)"
  emit ""
  emit "Self time (symbols over 0.7%):"
  emit ""
  emit '```'
  emit "$(cat "$WORK/profile-self.txt")"
  emit '```'
  emit ""
  emit "Inclusive time (children) of the gateway's own functions, hyper's parse/encode and the syscalls:"
  emit ""
  emit '```'
  emit "$(cat "$WORK/profile-children.txt")"
  emit '```'
  emit ""
fi

emit "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
if [ -n "$OUT" ]; then
  cp "$REPORT" "$OUT"
  log "results written to $OUT"
fi
log "done"
