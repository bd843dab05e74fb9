#!/usr/bin/env bash
# Runs every test of steep-repl: formatting, lints, the extension on real
# PostgreSQL 18 (and its version gate on Debian's PostgreSQL 15), and the
# integration tests. Installs what the tests need when it is missing.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$STEEP_ROOT"

step() { say ""; say "==> $*"; }

step "test prerequisites"
# postgresql-15: the version gate test; runuser (util-linux) runs servers
# as the unprivileged account; haproxy: the load balancer test of the HTTP
# probes (tests/tests/http.rs).
ensure_apt postgresql-15 util-linux haproxy
ensure_pg_user

step "PostgreSQL 18 and the steep_repl extension"
STEEP_PG_CONFIG=$("$STEEP_ROOT/deploy/pg18.sh")
export STEEP_PG_CONFIG STEEP_PG_USER
"$STEEP_ROOT/deploy/extension.sh"

step "Python gRPC client for the interoperability test"
STEEP_TEST_PYTHON=$("$STEEP_ROOT/deploy/python-env.sh")
export STEEP_TEST_PYTHON

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
(cd ext && PGRX_HOME="${PGRX_HOME:-$STEEP_ROOT/.pgrx}" cargo clippy --quiet --all-targets -- -D warnings)

step "tests"
cargo build --workspace --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
say ""
say "all tests passed"
