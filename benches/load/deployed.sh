# Sourced by benches/load/run.sh: scenario "deployed", the systems as they
# are run in production, interleaved in the same rounds:
#   gateway            layers-gateway, access log off (scenario a's gateway)
#   gateway-log        a second gateway, access log on: JSON to a file
#   gateway-es256      the log-off gateway, callers with an ES256 JWT
#   gateway-hs256      the log-off gateway, callers with an HS256 JWT
#   nginx              nginx proxy_cache, access_log off
#   nginx-log          nginx, access log buffered (buffer=64k)
#   haproxy            HAProxy's cache with the same key check (no log)
#   hyper              bare hyper (the ceiling)
#   gateway-h2         h2load (h2 prior knowledge) against the log-off gateway
#   nginx-h2           h2load against nginx's http2 listener
# Every row is one hot asset, every request a hit. The h1 rows use wrk
# (`-t1 -c$CONNS`), the h2 rows `h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS`.
# Functions here use run.sh's helpers (start, wrk_run, summarize, emit...).

GW_LOG_PORT=18087
ADMIN_LOG_PORT=19092
NGINX_LOG_PORT=18088
HAPROXY_PORT=18089
NGINX_H2_PORT=18090
GW_LOG=http://127.0.0.1:$GW_LOG_PORT
NGINX_LOG=http://127.0.0.1:$NGINX_LOG_PORT
HAPROXY=http://127.0.0.1:$HAPROXY_PORT
NGINX_H2=http://127.0.0.1:$NGINX_H2_PORT
H2_CLIENTS=${LAYERS_BENCH_H2_CLIENTS:-16}
H2_STREAMS=${LAYERS_BENCH_H2_STREAMS:-10}
DEPLOYED_H1=(gateway gateway-log gateway-es256 gateway-hs256 nginx nginx-log haproxy hyper)
DEPLOYED_H2=(gateway-h2 nginx-h2)
# Bench-only HS256 secret (at least 32 bytes), handed to the gateways.
export LAYERS_BENCH_JWT_SECRET=bench-only-hs256-secret-0123456789abcdef

# deployed_config SRC OUT: the bench config with the keys file by absolute
# path and the two JWT issuers of examples/bench_jwt.rs (keys in $WORK).
deployed_config() {
  local src=$1 out=$2
  # The default bench config names the keys file relative to itself.
  sed -e "s|^keys_file = \"../../config/keys.toml\"|keys_file = \"$ROOT/config/keys.toml\"|" "$src" >"$out"
  cat >>"$out" <<CONF

# Added by benches/load/deployed.sh: JWT callers (examples/bench_jwt.rs).
[[auth.jwt.issuers]]
issuer = "https://idp.bench.invalid"
audience = "layers-gateway"
algorithms = ["ES256"]
jwks_file = "bench-jwks.json"

[[auth.jwt.issuers]]
issuer = "bench-batch"
audience = "layers-gateway"
shared_secret_env = "LAYERS_BENCH_JWT_SECRET"
CONF
}

# deployed_prepare: the JWT keys and tokens, and both gateway configs.
# Runs before any server starts; sets GW_CONFIG to the derived config.
deployed_prepare() {
  local tokens
  tokens=$("$BIN/examples/bench_jwt" --jwks-out "$WORK/bench-jwks.json" --secret "$LAYERS_BENCH_JWT_SECRET") \
    || die "bench_jwt failed"
  ES256_TOKEN=$(awk '$1=="es256"{print $2}' <<<"$tokens")
  HS256_TOKEN=$(awk '$1=="hs256"{print $2}' <<<"$tokens")
  [ -n "$ES256_TOKEN" ] && [ -n "$HS256_TOKEN" ] || die "bench_jwt printed no tokens"
  local src=$GW_CONFIG
  deployed_config "$src" "$WORK/gateway.toml"
  GW_CONFIG=$WORK/gateway.toml
  # The log-on gateway: its own ports, INFO level, JSON, access log to a file.
  deployed_config "$src" "$WORK/gateway-log.toml"
  sed -i -e "s|^listen = \"127.0.0.1:$GW_PORT\"|listen = \"127.0.0.1:$GW_LOG_PORT\"|" \
    -e "s|^listen = \"127.0.0.1:$ADMIN_PORT\"|listen = \"127.0.0.1:$ADMIN_LOG_PORT\"|" \
    -e 's|^level = "warn"|level = "info"|' -e 's|^format = "text"|format = "json"|' "$WORK/gateway-log.toml"
  cat >>"$WORK/gateway-log.toml" <<CONF

[access_log]
path = "$WORK/gateway-access.log"
format = "json"
CONF
  for f in "$WORK/gateway.toml" "$WORK/gateway-log.toml"; do
    "$BIN/layers-gateway" check-config "$f" --allow-demo-keys >/dev/null || die "$f is not a valid config"
  done
  grep -q "127.0.0.1:$GW_LOG_PORT" "$WORK/gateway-log.toml" && grep -q '^level = "info"' "$WORK/gateway-log.toml" \
    || die "gateway-log.toml: ports or level not rewritten"
}

# deployed_start: the log-on gateway and HAProxy (start_haproxy in run.sh,
# shared with scenarios f and g; nginx's extra listeners start with nginx),
# warmed and checked.
deployed_start() {
  local i
  start gateway-log "$BIN/layers-gateway" serve --config "$WORK/gateway-log.toml" --allow-demo-keys
  for i in $(seq 1 300); do
    alive gateway-log
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$ADMIN_LOG_PORT/readyz")" = 200 ] && break
    [ "$i" = 300 ] && die "the log-on gateway was not ready within 30s"
    sleep 0.1
  done
  start_haproxy
  check_status 401 "$GW_LOG$HOT_PATH"
  check_status 401 "$NGINX_LOG$HOT_PATH"
  check_status 401 "$GW$HOT_PATH" -H "Authorization: Bearer ${ES256_TOKEN%?}x"
  for url in "$GW_LOG" "$NGINX_LOG"; do
    curl -s -H "X-Api-Key: $KEY" "$url$HOT_PATH" -o /dev/null
    curl -s -H "X-Api-Key: $KEY" "$url$HOT_PATH" -o "$WORK/hot-check.json"
    cmp -s "$WORK/hot.json" "$WORK/hot-check.json" || die "$url answers different bytes for $HOT_PATH"
  done
  for t in "$ES256_TOKEN" "$HS256_TOKEN"; do
    curl -s -H "Authorization: Bearer $t" "$GW$HOT_PATH" -o "$WORK/hot-check.json"
    cmp -s "$WORK/hot.json" "$WORK/hot-check.json" || die "a JWT caller gets different bytes for $HOT_PATH"
  done
  [ -s "$WORK/gateway-access.log" ] || sleep 1.5
  [ -s "$WORK/gateway-access.log" ] || die "the log-on gateway wrote no access line"
  command -v h2load >/dev/null 2>&1 || die "h2load is missing (apt-get install -y nghttp2-client)"
  h2load -n 1 -c 1 -H "x-api-key: $KEY" "$NGINX_H2$HOT_PATH" 2>&1 | grep -q '1 succeeded' \
    || die "nginx's h2 listener does not answer over h2 (see h2load -n1 $NGINX_H2$HOT_PATH)"
  h2load -n 1 -c 1 -H "x-api-key: $KEY" "$GW$HOT_PATH" 2>&1 | grep -q '1 succeeded' \
    || die "the gateway does not answer over h2 prior knowledge"
}

# h2_run ROUND SYSTEM SECONDS: one h2load run on the hot asset; records
# the same row as wrk_run (p50/p99 from h2load's per-request log).
h2_run() {
  local round=$1 sys=$2 secs=$3
  local url out reqlog spid before after cpu_before cpu_after rps p50 p99 done_n ok cpu_us origin
  case "$sys" in gateway-h2) url=$GW ;; nginx-h2) url=$NGINX_H2 ;; esac
  out=$WORK/h2load-$round-$sys.txt
  reqlog=$WORK/h2load-$round-$sys.log
  spid=$(pid_of "$sys")
  before=$(origin_total)
  cpu_before=$(cpu_ticks "$spid")
  "${PIN_CLIENT[@]}" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$secs" --log-file="$reqlog" \
    -H "x-api-key: $KEY" "$url$HOT_PATH" >"$out" 2>&1 || die "h2load failed against $sys (see $out)"
  cpu_after=$(cpu_ticks "$spid")
  after=$(origin_total)
  origin=$((after - before))
  rps=$(awk '/^finished in/{gsub(/,/, ""); print $4}' "$out")
  done_n=$(awk '/^requests:/{print $6}' "$out")
  # "requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout"
  # "status codes: A 2xx, B 3xx, C 4xx, D 5xx" (a timed run may count a
  # response or two in the status codes that it does not count as done).
  bad=$(awk '/^requests:/{b += $10 + $12 + $14} /^status codes:/{b += $5 + $7 + $9} END {print b + 0}' "$out")
  [ -n "$rps" ] && [ "${done_n:-0}" -gt 0 ] || die "no h2load result against $sys (see $out)"
  [ "$bad" = 0 ] || die "$sys: $bad failed, errored, timed-out or non-2xx requests over h2 (see $out)"
  read -r p50 p99 < <(awk -F'\t' '{print $3}' "$reqlog" | sort -n | awk '{v[NR] = $1}
    END { i = int(NR * 0.5); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1
          printf "%.3f %.3f\n", v[i] / 1000, v[j] / 1000 }')
  cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$CLK_TCK" -v n="$done_n" \
    'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print 0 }')
  case "$sys" in gateway*) [ "$origin" = 0 ] || die "the gateway made $origin origin requests over h2" ;; esac
  rm -f "$reqlog"
  if [ "$round" != warm ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' deployed "$round" "$sys" "$rps" "$p50" "$p99" "$origin" "$cpu_us" >>"$RESULTS"
    log "deployed round $round $(label_of "$sys"): $rps req/s, p50 ${p50} ms, p99 ${p99} ms, server CPU ${cpu_us} us/request"
  fi
}

deployed_row() { # deployed_row ROUND SYSTEM SECONDS
  case "$2" in
    *-h2) h2_run "$1" "$2" "$3" ;;
    *) wrk_run deployed "$1" "$2" "$3" "$HOT_PATH" ;;
  esac
}

# in-round ratio A/B of column COL (4 req/s, 8 CPU µs), median over rounds
deployed_ratio() {
  awk -F'\t' -v a="$1" -v b="$2" -v col="$3" '
    $1 == "deployed" && $3 == a { x[$2] = $col; if ($2 + 0 > last) last = $2 + 0 }
    $1 == "deployed" && $3 == b { y[$2] = $col }
    END {
      for (r = 1; r <= last; r++) if (x[r] > 0 && y[r] > 0) { n++; v[n] = x[r] / y[r] }
      if (n == 0) { print "-"; exit }
      for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
      printf "%.2fx", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }' "$RESULTS"
}

# The faster of HAProxy and nginx-log, per round, as a pseudo-system
# "peer" (req/s and CPU of that round's faster one).
deployed_peer_rows() {
  awk -F'\t' -v OFS='\t' '
    $1 == "deployed" && ($3 == "haproxy" || $3 == "nginx-log") && $2 != "warm" {
      if (!($2 in best) || $4 > best[$2]) { best[$2] = $4; row[$2] = $0 } }
    END { for (r in row) { split(row[r], f, "\t"); f[3] = "peer"; print f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8] } }' \
    "$RESULTS" >>"$RESULTS"
}

deployed_run() {
  local r sys
  log "scenario deployed: access log, JWT callers, HAProxy, h2"
  for sys in "${DEPLOYED_H1[@]}" "${DEPLOYED_H2[@]}"; do deployed_row warm "$sys" "$WARMUP"; done
  for r in $(seq 1 "$ROUNDS"); do
    for sys in "${DEPLOYED_H1[@]}" "${DEPLOYED_H2[@]}"; do deployed_row "$r" "$sys" "$DURATION"; done
  done
  deployed_peer_rows
  emit "### (deployed) As deployed: access log on, JWT callers, HAProxy, HTTP/2 (one hot asset, every request a hit)"
  emit ""
  emit "HTTP/1.1 rows: \`wrk -t1 -c$CONNS\`; ratios to the gateway with its access log on (JSON to a file), per round."
  emit ""
  summarize deployed gateway-log "${DEPLOYED_H1[@]}" | tee -a "$REPORT"
  emit ""
  emit "HTTP/2 rows (prior knowledge): \`h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS\`; ratios to the gateway over h2."
  emit ""
  summarize deployed gateway-h2 "${DEPLOYED_H2[@]}" | tee -a "$REPORT"
  emit ""
  emit "Targets, medians of the in-round ratios:"
  emit ""
  emit "- access log on / off, requests/s: $(deployed_ratio gateway-log gateway 4) (target at least 0.95x)"
  emit "- gateway (log on) / faster of HAProxy and nginx (log on), requests/s: $(deployed_ratio gateway-log peer 4) (target at least 1.2x); CPU per request: $(deployed_ratio gateway-log peer 8) (target at most 0.85x)"
  emit "- gateway / nginx over h2, requests/s: $(deployed_ratio gateway-h2 nginx-h2 4) (target at least 1.2x)"
  emit "- ES256 JWT hit / API-key hit, CPU per request: $(deployed_ratio gateway-es256 gateway 8) (target at most 1.15x); HS256: $(deployed_ratio gateway-hs256 gateway 8)"
  emit "- gateway (log off) / bare hyper, requests/s: $(deployed_ratio gateway hyper 4) (target at least 0.85x)"
  emit ""
}
