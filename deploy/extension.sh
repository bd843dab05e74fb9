#!/usr/bin/env bash
# Builds the steep_repl extension and installs it into the PostgreSQL 18 that
# deploy/pg18.sh provides (or the pg_config given as $PG_CONFIG).
#
# Installs what building needs when it is missing: Debian's libclang-dev,
# pkg-config and libssl-dev, and cargo-pgrx 0.18.1. pgrx's own state lives in
# .pgrx/ in this checkout (PGRX_HOME), so nothing outside it is touched.
# Idempotent; a second run only rebuilds what changed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PGRX_VERSION=0.18.1

pg_config=$("$STEEP_ROOT/deploy/pg18.sh")
ensure_apt libclang-dev pkg-config libssl-dev build-essential

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    say "installing cargo-pgrx $PGRX_VERSION (takes a few minutes once)"
    cargo install --quiet --locked cargo-pgrx --version "$PGRX_VERSION" >&2 \
        || die "cargo install cargo-pgrx $PGRX_VERSION failed"
fi

export PGRX_HOME="${PGRX_HOME:-$STEEP_ROOT/.pgrx}"
mkdir -p "$PGRX_HOME"
if ! grep -qs "^pg18 = \"$pg_config\"" "$PGRX_HOME/config.toml"; then
    say "configuring pgrx for $pg_config"
    cargo pgrx init --pg18 "$pg_config" >&2 || die "cargo pgrx init --pg18 $pg_config failed"
fi

say "building and installing steep_repl into $("$pg_config" --sharedir)/extension"
cd "$STEEP_ROOT/ext"
cargo pgrx install --release --pg-config "$pg_config" >&2 \
    || die "cargo pgrx install failed (see the output above)"
say "steep_repl $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1) installed for $("$pg_config" --version)"
