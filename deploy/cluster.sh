#!/usr/bin/env bash
# A local steep-repl cluster on this machine.
#
#   deploy/cluster.sh up [N]   provision PostgreSQL 18 and the extension, start
#                              N nodes (default 3), print the registry schema
#   deploy/cluster.sh status   what is running
#   deploy/cluster.sh down     stop everything `up` started (data is kept)
#
# Each node has its own PostgreSQL 18 server on 127.0.0.1, port 15432 + i,
# with the steep_repl extension installed. State lives in $STEEP_CLUSTER_DIR
# (default .cluster/ in this checkout, git-ignored).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BASE_PORT=${STEEP_CLUSTER_BASE_PORT:-15432}

cluster_dir() {
    if [ -n "${STEEP_CLUSTER_DIR:-}" ]; then
        echo "$STEEP_CLUSTER_DIR"
    elif [ "$(id -u)" -eq 0 ] && ! runuser -u nobody -- test -x "$STEEP_ROOT" 2>/dev/null; then
        # The unprivileged account that runs PostgreSQL cannot reach a
        # checkout under a private home folder.
        echo "/var/tmp/steep-repl-cluster"
    else
        echo "$STEEP_ROOT/.cluster"
    fi
}

DIR=$(cluster_dir)

node_port() { echo $((BASE_PORT + $1)); }
node_data() { echo "$DIR/node$1/pgdata"; }
node_count() { ls -d "$DIR"/node* 2>/dev/null | wc -l; }

pg_bin() { dirname "$("$STEEP_ROOT/deploy/pg18.sh")"; }

pg_running() { as_pg_user "$1/pg_ctl" -D "$2" status >/dev/null 2>&1; }

start_pg() {
    local i=$1 bin=$2 data port
    data=$(node_data "$i")
    port=$(node_port "$i")
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$DIR/node$i"
        [ "$(id -u)" -eq 0 ] && chown "$STEEP_PG_USER:" "$DIR" "$DIR/node$i"
        as_pg_user "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=trust >"$DIR/node$i/initdb.log" 2>&1 \
            || die "initdb for node$i failed: see $DIR/node$i/initdb.log"
    fi
    if ! pg_running "$bin" "$data"; then
        as_pg_user "$bin/pg_ctl" -D "$data" -l "$DIR/node$i/postgres.log" -w -t 60 \
            -o "-p $port -k $DIR/node$i -c listen_addresses=127.0.0.1" start >/dev/null \
            || die "PostgreSQL of node$i did not start: see $DIR/node$i/postgres.log"
    fi
    as_pg_user "$bin/psql" -q -h "$DIR/node$i" -p "$port" -U postgres -d postgres \
        -c "CREATE EXTENSION IF NOT EXISTS steep_repl" >/dev/null \
        || die "CREATE EXTENSION steep_repl failed on node$i"
}

cmd_up() {
    local n=${1:-3} bin i
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "up takes a node count between 1 and 99 (got '$n')"
    ensure_pg_user
    "$STEEP_ROOT/deploy/extension.sh"
    bin=$(pg_bin)
    mkdir -p "$DIR"
    for ((i = 1; i <= n; i++)); do
        start_pg "$i" "$bin"
        say "node$i: PostgreSQL 18 on 127.0.0.1:$(node_port "$i") with steep_repl $(as_pg_user "$bin/psql" -Atq -h "$DIR/node$i" -p "$(node_port "$i")" -U postgres -c 'SELECT steep_repl.version()')"
    done
    echo
    as_pg_user "$bin/psql" -h "$DIR/node1" -p "$(node_port 1)" -U postgres -d postgres \
        -c '\dt steep_repl.*' -c '\df steep_repl.*'
    echo "cluster of $n node(s) is up; state in $DIR; stop it with: deploy/cluster.sh down"
}

cmd_status() {
    local bin i state
    bin=$(pg_bin)
    [ "$(node_count)" -gt 0 ] || { echo "no cluster in $DIR"; return 0; }
    for ((i = 1; i <= $(node_count); i++)); do
        if pg_running "$bin" "$(node_data "$i")"; then state=running; else state=stopped; fi
        printf 'node%-3s postgresql 127.0.0.1:%-6s %s\n' "$i" "$(node_port "$i")" "$state"
    done
}

cmd_down() {
    local bin i
    bin=$(pg_bin)
    for ((i = 1; i <= $(node_count); i++)); do
        if pg_running "$bin" "$(node_data "$i")"; then
            as_pg_user "$bin/pg_ctl" -D "$(node_data "$i")" -m fast -w stop >/dev/null
            say "node$i: stopped"
        fi
    done
    echo "cluster is down (data kept in $DIR)"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) echo "usage: deploy/cluster.sh up [N] | status | down" >&2; exit 2 ;;
esac
