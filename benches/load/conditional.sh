# Scenarios f and g of benches/load/run.sh (sourced by it; uses its
# wrk_run, summarize, emit, die, url_of and variables). Kept in a file of
# their own so the scenario list in run.sh only names them.
#
#   f  polling: the hot asset and a hot container with If-None-Match
#      naming the current tag, so every answer is a 304
#   g  the hot container with Accept-Encoding: gzip, br
#
# nginx answers 304 itself from its cache (its not_modified filter, with the
# ETag the bench origin sends) and compresses with `gzip on` per response
# (gzip_static only serves files from disk; brotli is not in Debian's nginx).
# HAProxy (system haproxy-gzip: the `layers-gzip` frontend of
# haproxy.cfg.in, started by start_haproxy in run.sh) answers 304 itself
# from its cache too (HAProxy 2.6's cache handles If-None-Match when the
# stored answer has an ETag, which the bench origin sends) and gzips with
# `compression algo gzip` (libslz) per response: it cannot store the
# compressed variant, its cache stores the answer before the compression
# filter runs (haproxy.cfg.in says which other orders were tried), and it
# has no brotli. The gateway answers 304 from the tag made at fill time and
# serves the variant made at fill time. The 200-hit runs of the same paths
# are the reference: a 304 should cost at most 0.8x a 200 hit's CPU, the
# compressed container at most 1.05x the identity one's.
#
# Checks (each system alike; a failure stops the run, so the smoke mode
# fails): f, before the runs: an ETag, a 304 to If-None-Match naming it,
# and that 304 made without an origin request; before every measured 304
# run: a 304 again. g: a Content-Encoding (HAProxy's: gzip) whose body
# decodes to the identity bytes, made without an origin request.

# HOT_CONTAINER: the demo slideshow (1,897 bytes of JSON, 3 assets).
HOT_CONTAINER=/v1/content/cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
# The systems of f and g, in the order they run within a round.
COND_SYSTEMS=(gateway nginx haproxy-gzip)

# tag_of SYSTEM PATH [curl args]: the ETag SYSTEM sends for PATH.
tag_of() {
  local sys=$1 path=$2
  shift 2
  curl -s -D - -o /dev/null -H "X-Api-Key: $KEY" "$@" "$(url_of "$sys")$path" | tr -d '\r' \
    | awk -F': ' 'tolower($1)=="etag"{print $2}'
}

# status_of SYSTEM PATH [curl args]
status_of() {
  local sys=$1 path=$2
  shift 2
  curl -s -o /dev/null -w '%{http_code}' -H "X-Api-Key: $KEY" "$@" "$(url_of "$sys")$path"
}

scenario_f() {
  log "scenario f: polling with If-None-Match (every answer a 304)"
  local sys r path tag label before after
  start_haproxy
  for sys in "${COND_SYSTEMS[@]}"; do
    for path in "$HOT_PATH" "$HOT_CONTAINER"; do
      curl -s -o /dev/null -H "X-Api-Key: $KEY" "$(url_of "$sys")$path"
      tag=$(tag_of "$sys" "$path")
      [ -n "$tag" ] || die "$sys sends no ETag for $path"
      before=$(origin_total)
      [ "$(status_of "$sys" "$path" -H "If-None-Match: $tag")" = 304 ] \
        || die "$sys does not answer 304 for $path with If-None-Match: $tag"
      after=$(origin_total)
      [ "$before" = "$after" ] || die "$sys asked the origin for a 304 of $path (not answered from its cache)"
      log "f: $sys answers 304 for $path (If-None-Match: $tag)"
    done
  done
  for path in "$HOT_PATH" "$HOT_CONTAINER"; do
    label=asset
    [ "$path" = "$HOT_CONTAINER" ] && label=container
    for sys in "${COND_SYSTEMS[@]}"; do
      tag=$(tag_of "$sys" "$path")
      wrk_run "f-$label-200" warm "$sys" "$WARMUP" "$path"
      wrk_run "f-$label-304" warm "$sys" "$WARMUP" "$path" -H "If-None-Match: $tag"
    done
    for r in $(seq 1 "$ROUNDS"); do
      for sys in "${COND_SYSTEMS[@]}"; do
        tag=$(tag_of "$sys" "$path")
        wrk_run "f-$label-200" "$r" "$sys" "$DURATION" "$path"
        # wrk counts only 4xx/5xx as errors: check the 304 once more.
        [ "$(status_of "$sys" "$path" -H "If-None-Match: $tag")" = 304 ] \
          || die "$sys no longer answers 304 for $path (round $r)"
        wrk_run "f-$label-304" "$r" "$sys" "$DURATION" "$path" -H "If-None-Match: $tag"
      done
    done
    emit "### (f) Polling the hot $label: 200 hits, then If-None-Match naming the current tag (every answer a 304)"
    emit ""
    emit "200 hits:"
    emit ""
    summarize "f-$label-200" gateway "${COND_SYSTEMS[@]}" | tee -a "$REPORT"
    emit ""
    emit "304s:"
    emit ""
    summarize "f-$label-304" gateway "${COND_SYSTEMS[@]}" | tee -a "$REPORT"
    emit ""
    emit "Gateway CPU per 304 / per 200 hit, median of rounds: $(cpu_ratio "f-$label-304" "f-$label-200" gateway); nginx: $(cpu_ratio "f-$label-304" "f-$label-200" nginx); HAProxy: $(cpu_ratio "f-$label-304" "f-$label-200" haproxy-gzip)."
    emit ""
  done
}

scenario_g() {
  log "scenario g: the hot container with Accept-Encoding: gzip, br"
  local sys r enc before after wire sizes=""
  start_haproxy
  for sys in "${COND_SYSTEMS[@]}"; do
    curl -s -H "X-Api-Key: $KEY" "$(url_of "$sys")$HOT_CONTAINER" -o "$WORK/container-$sys.json"
    curl -s -o /dev/null -H "X-Api-Key: $KEY" -H "Accept-Encoding: gzip, br" "$(url_of "$sys")$HOT_CONTAINER"
    before=$(origin_total)
    enc=$(curl -s -D - -o "$WORK/container-$sys.enc" -H "X-Api-Key: $KEY" -H "Accept-Encoding: gzip, br" \
      "$(url_of "$sys")$HOT_CONTAINER" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
    after=$(origin_total)
    [ -n "$enc" ] || die "$sys does not compress $HOT_CONTAINER"
    case "$sys" in haproxy*) [ "$enc" = gzip ] || die "$sys answers Content-Encoding: $enc, expected gzip" ;; esac
    [ "$before" = "$after" ] || die "$sys asked the origin for the compressed $HOT_CONTAINER (not answered from its cache)"
    # curl decodes what it is told is gzip or br (--compressed).
    curl -s --compressed -H "X-Api-Key: $KEY" -H "Accept-Encoding: gzip, br" "$(url_of "$sys")$HOT_CONTAINER" \
      | cmp -s - "$WORK/container-$sys.json" || die "$sys's $enc answer does not decode to the identity bytes of $HOT_CONTAINER"
    wire=$(wc -c <"$WORK/container-$sys.enc")
    sizes="$sizes${sizes:+, }$(label_of "$sys") $enc $wire B"
    log "g: $sys answers Content-Encoding: $enc ($wire bytes), decodes to the identity bytes"
  done
  for sys in "${COND_SYSTEMS[@]}"; do
    wrk_run g-identity warm "$sys" "$WARMUP" "$HOT_CONTAINER"
    wrk_run g-compressed warm "$sys" "$WARMUP" "$HOT_CONTAINER" -H "Accept-Encoding: gzip, br"
  done
  for r in $(seq 1 "$ROUNDS"); do
    for sys in "${COND_SYSTEMS[@]}"; do
      wrk_run g-identity "$r" "$sys" "$DURATION" "$HOT_CONTAINER"
      wrk_run g-compressed "$r" "$sys" "$DURATION" "$HOT_CONTAINER" -H "Accept-Encoding: gzip, br"
    done
  done
  emit "### (g) The hot container, identity and with Accept-Encoding: gzip, br"
  emit ""
  emit "Identity:"
  emit ""
  summarize g-identity gateway "${COND_SYSTEMS[@]}" | tee -a "$REPORT"
  emit ""
  emit "Accept-Encoding: gzip, br (the gateway sends its brotli variant; nginx and HAProxy gzip each response, HAProxy after its cache):"
  emit ""
  summarize g-compressed gateway "${COND_SYSTEMS[@]}" | tee -a "$REPORT"
  emit ""
  emit "Bodies on the wire: identity $(wc -c <"$WORK/container-gateway.json") B; $sizes."
  emit ""
  emit "Gateway CPU compressed / identity, median of rounds: $(cpu_ratio g-compressed g-identity gateway); nginx: $(cpu_ratio g-compressed g-identity nginx); HAProxy: $(cpu_ratio g-compressed g-identity haproxy-gzip)."
  emit ""
}

# cpu_ratio SCEN REF_SCEN SYSTEM: median over rounds of SYSTEM's CPU per
# request in SCEN divided by that in REF_SCEN.
cpu_ratio() {
  awk -F'\t' -v a="$1" -v b="$2" -v sys="$3" '
    $3 == sys && $1 == a { x[$2] = $8 }
    $3 == sys && $1 == b { y[$2] = $8 }
    END {
      for (r in x) if (y[r] > 0) { n++; v[n] = x[r] / y[r] }
      if (n == 0) { print "-"; exit }
      for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
      printf "%.2fx", n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }' "$RESULTS"
}
