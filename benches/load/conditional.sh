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
# The gateway answers 304 from the tag made at fill time and serves the
# variant made at fill time. The 200-hit runs of the same paths are the
# reference: a 304 should cost at most 0.8x a 200 hit's CPU, the compressed
# container at most 1.05x the identity one's.

# HOT_CONTAINER: the demo slideshow (1,897 bytes of JSON, 3 assets).
HOT_CONTAINER=/v1/content/cnt_5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d

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
  local sys r path tag label
  for sys in gateway nginx; do
    for path in "$HOT_PATH" "$HOT_CONTAINER"; do
      curl -s -o /dev/null -H "X-Api-Key: $KEY" "$(url_of "$sys")$path"
      tag=$(tag_of "$sys" "$path")
      [ -n "$tag" ] || die "$sys sends no ETag for $path"
      [ "$(status_of "$sys" "$path" -H "If-None-Match: $tag")" = 304 ] \
        || die "$sys does not answer 304 for $path with If-None-Match: $tag"
    done
  done
  for path in "$HOT_PATH" "$HOT_CONTAINER"; do
    label=asset
    [ "$path" = "$HOT_CONTAINER" ] && label=container
    for sys in gateway nginx; do
      tag=$(tag_of "$sys" "$path")
      wrk_run "f-$label-200" warm "$sys" "$WARMUP" "$path"
      wrk_run "f-$label-304" warm "$sys" "$WARMUP" "$path" -H "If-None-Match: $tag"
    done
    for r in $(seq 1 "$ROUNDS"); do
      for sys in gateway nginx; do
        tag=$(tag_of "$sys" "$path")
        wrk_run "f-$label-200" "$r" "$sys" "$DURATION" "$path"
        wrk_run "f-$label-304" "$r" "$sys" "$DURATION" "$path" -H "If-None-Match: $tag"
      done
    done
    emit "### (f) Polling the hot $label: 200 hits, then If-None-Match naming the current tag (every answer a 304)"
    emit ""
    emit "200 hits:"
    emit ""
    summarize "f-$label-200" gateway gateway nginx | tee -a "$REPORT"
    emit ""
    emit "304s:"
    emit ""
    summarize "f-$label-304" gateway gateway nginx | tee -a "$REPORT"
    emit ""
    emit "Gateway CPU per 304 / per 200 hit, median of rounds: $(cpu_ratio "f-$label-304" "f-$label-200" gateway); nginx: $(cpu_ratio "f-$label-304" "f-$label-200" nginx)."
    emit ""
  done
}

scenario_g() {
  log "scenario g: the hot container with Accept-Encoding: gzip, br"
  local sys r enc
  for sys in gateway nginx; do
    enc=$(curl -s -D - -o /dev/null -H "X-Api-Key: $KEY" -H "Accept-Encoding: gzip, br" \
      "$(url_of "$sys")$HOT_CONTAINER" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
    [ -n "$enc" ] || die "$sys does not compress $HOT_CONTAINER"
    log "g: $sys answers Content-Encoding: $enc"
  done
  for sys in gateway nginx; do
    wrk_run g-identity warm "$sys" "$WARMUP" "$HOT_CONTAINER"
    wrk_run g-compressed warm "$sys" "$WARMUP" "$HOT_CONTAINER" -H "Accept-Encoding: gzip, br"
  done
  for r in $(seq 1 "$ROUNDS"); do
    for sys in gateway nginx; do
      wrk_run g-identity "$r" "$sys" "$DURATION" "$HOT_CONTAINER"
      wrk_run g-compressed "$r" "$sys" "$DURATION" "$HOT_CONTAINER" -H "Accept-Encoding: gzip, br"
    done
  done
  emit "### (g) The hot container, identity and with Accept-Encoding: gzip, br"
  emit ""
  emit "Identity:"
  emit ""
  summarize g-identity gateway gateway nginx | tee -a "$REPORT"
  emit ""
  emit "Accept-Encoding: gzip, br (the gateway sends its brotli variant, nginx gzips each response):"
  emit ""
  summarize g-compressed gateway gateway nginx | tee -a "$REPORT"
  emit ""
  emit "Gateway CPU compressed / identity, median of rounds: $(cpu_ratio g-compressed g-identity gateway); nginx: $(cpu_ratio g-compressed g-identity nginx)."
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
