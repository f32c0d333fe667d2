#!/usr/bin/env bash
# Verifies deploy/layers-gateway.service with `systemd-analyze verify`.
# Skips, with one line saying so, where systemd-analyze is not installed.
#
# verify also checks that ExecStart's binary exists, so a copy of the unit
# is verified with the binary path replaced by one that exists here (the
# built binary when there is one).
set -euo pipefail
cd "$(dirname "$0")/.."

unit=deploy/layers-gateway.service
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-systemd: SKIPPED: systemd-analyze not installed ($unit not verified)"
  exit 0
fi

bin=${CARGO_TARGET_DIR:-target}/debug/layers-gateway
[ -x "$bin" ] || bin=/bin/true
bin=$(realpath "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/layers-gateway#$bin#g" "$unit" > "$tmp/layers-gateway.service"

# --man=no: the unit names no man pages to look up.
# Any output (an unknown directive is only a warning, exit 0) is a failure.
out=$(systemd-analyze verify --man=no "$tmp/layers-gateway.service" 2>&1) || true
if [ -n "$out" ]; then
  echo "$out" | sed "s#$tmp/#deploy/#g"
  echo "check-systemd: $unit: systemd-analyze verify reported the lines above"
  exit 1
fi

# The hardening, scored by systemd itself (0 = fully locked down, 10 = none);
# --offline needs systemd 250 or later, older ones skip this part.
max_exposure=2.0
if score=$(systemd-analyze security --offline=yes "$tmp/layers-gateway.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'); [ -n "$score" ]; then
  if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
    echo "check-systemd: $unit: exposure $score is above $max_exposure (systemd-analyze security)"
    exit 1
  fi
  echo "check-systemd: $unit ok (exposure $score, at most $max_exposure)"
else
  echo "check-systemd: $unit ok (exposure not scored: systemd-analyze security --offline unsupported)"
fi
