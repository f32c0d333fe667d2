#!/usr/bin/env bash
# Checks that the minimum Rust version we state is the one the lock file needs.
#
# Reads every registry crate of Cargo.lock, takes its `rust-version` from
# the crate's own Cargo.toml (in cargo's registry cache), and compares the
# highest with `rust-version` in our Cargo.toml and with the version the
# README states ("Rust 1.NN or newer"). Fails when they differ: a lock
# update that raises the requirement must raise the stated one too.
#
# `cargo fetch` brings every locked crate into the cache first, those of
# other platforms (windows-*, wasm-*) too, so all of them are judged. Our
# own code's use of newer std APIs is caught by clippy's `incompatible_msrv`
# lint, which reads the same `rust-version`.
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
# Quiet and cheap when everything is cached; needs the network otherwise.
cargo fetch --locked -q

# name-version of every registry package in the lock file.
mapfile -t pkgs < <(awk '
  /^\[\[package\]\]/ { n = ""; v = "" }
  /^name = /         { n = $3; gsub(/"/, "", n) }
  /^version = /      { v = $3; gsub(/"/, "", v) }
  /^source = "registry/ { print n "-" v }
' Cargo.lock)

# rust-version of one crate ("" when it sets none); reports the file it read.
crate_msrv() {
  local manifest
  manifest=$(ls "$registry"/*/"$1"/Cargo.toml 2>/dev/null | head -n 1) || true
  [ -n "$manifest" ] || return 1
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$manifest" | head -n 1
}

# Versions compare as major.minor (a crate's "1.71.0" is "1.71").
minor() { echo "$1" | cut -d. -f1,2; }

need=0.0 needed_by="" missing=0
for p in "${pkgs[@]}"; do
  if ! v=$(crate_msrv "$p"); then
    missing=$((missing + 1))
    continue
  fi
  [ -n "$v" ] || continue
  v=$(minor "$v")
  if [ "$(printf '%s\n%s\n' "$need" "$v" | sort -V | tail -n 1)" != "$need" ]; then
    need=$v needed_by=$p
  elif [ "$v" = "$need" ]; then
    needed_by="$needed_by $p"
  fi
done

stated=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
readme=$(grep -o 'Rust [0-9][0-9.]* or newer' README.md | head -n 1 | awk '{print $2}' || true)

echo "check-msrv: the lock file needs Rust $need (${needed_by# }); ${#pkgs[@]} crates, $missing not in the registry cache (not judged)"
status=0
if [ "$(minor "${stated:-none}")" != "$need" ]; then
  echo "check-msrv: FAIL: Cargo.toml says rust-version = \"$stated\", the lock file needs $need"
  status=1
fi
if [ "$(minor "${readme:-none}")" != "$need" ]; then
  echo "check-msrv: FAIL: README.md says \"Rust ${readme:-?} or newer\", the lock file needs $need"
  status=1
fi
[ $status -ne 0 ] || echo "check-msrv: ok: Cargo.toml and README.md say $need"
exit $status
