#!/usr/bin/env bash
# A local steep-repl cluster on this machine: the README's main job.
#
#   deploy/cluster.sh up [N] [--witness]
#                              N data nodes (default 3): PostgreSQL 18 +
#                              steep_repl, a cluster CA and node certificates,
#                              one daemon each (with --witness, one more node:
#                              a witness, a daemon without PostgreSQL that
#                              votes); forms the Raft cluster and waits until
#                              every node names the same coordinator and epoch.
#                              Run again after a node died: it is restarted
#                              and rejoins.
#   deploy/cluster.sh status   what is running, and the cluster as a node sees it
#   deploy/cluster.sh down     stop everything `up` started (data is kept)
#
# Node i: PostgreSQL on 127.0.0.1:$((15432+i)), gRPC on 15500+i, HTTP probes
# on 18080+i, IPC socket and logs in $STEEP_CLUSTER_DIR/node<i>/ (default
# .cluster/ in this checkout, git-ignored). Idempotent: `up` again starts
# only what is not running.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PG_BASE=${STEEP_CLUSTER_BASE_PORT:-15432}
GRPC_BASE=${STEEP_CLUSTER_GRPC_BASE:-15500}
HTTP_BASE=${STEEP_CLUSTER_HTTP_BASE:-18080}
# release for a real cluster; CI passes debug to reuse the test build.
PROFILE=${STEEP_CLUSTER_PROFILE:-release}

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
BIN="$STEEP_ROOT/target/$PROFILE/steep-repl"

node_dir() { echo "$DIR/node$1"; }
pg_port() { echo $((PG_BASE + $1)); }
node_count() { ls -d "$DIR"/node[0-9]* 2>/dev/null | wc -l; }
is_witness() { [ -f "$(node_dir "$1")/witness" ]; }
pg_bin() { dirname "$("$STEEP_ROOT/deploy/pg18.sh")"; }
pg_running() { as_pg_user "$1/pg_ctl" -D "$2" status >/dev/null 2>&1; }
daemon_pid() { cat "$(node_dir "$1")/daemon.pid" 2>/dev/null || true; }
daemon_running() {
    local pid state
    pid=$(daemon_pid "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A killed daemon whose parent is gone may linger as a zombie where
    # PID 1 does not reap: it is not running.
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo "?")
    [ "$state" != Z ]
}
psql_node() {
    local i=$1
    shift
    as_pg_user "$(pg_bin)/psql" -X -q -h "$(node_dir "$i")" -p "$(pg_port "$i")" -U postgres -d postgres "$@"
}

start_pg() {
    local i=$1 bin=$2 data
    data="$(node_dir "$i")/pgdata"
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$(node_dir "$i")"
        [ "$(id -u)" -eq 0 ] && chown "$STEEP_PG_USER:" "$DIR" "$(node_dir "$i")"
        as_pg_user "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=trust >"$(node_dir "$i")/initdb.log" 2>&1 \
            || die "initdb for node$i failed: see $(node_dir "$i")/initdb.log"
    fi
    if ! pg_running "$bin" "$data"; then
        as_pg_user "$bin/pg_ctl" -D "$data" -l "$(node_dir "$i")/postgres.log" -w -t 60 \
            -o "-p $(pg_port "$i") -k $(node_dir "$i") -c listen_addresses=127.0.0.1" start >/dev/null \
            || die "PostgreSQL of node$i did not start: see $(node_dir "$i")/postgres.log"
    fi
    psql_node "$i" -c "CREATE EXTENSION IF NOT EXISTS steep_repl" >/dev/null \
        || die "CREATE EXTENSION steep_repl failed on node$i"
    # The daemon connects as steep_daemon, a member of the extension's
    # steep_repl_daemon role (docs/operations.md, Privileges), not as a superuser.
    psql_node "$i" -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'steep_daemon') THEN
                CREATE ROLE steep_daemon LOGIN IN ROLE steep_repl_daemon;
            END IF; END \$\$" >/dev/null \
        || die "creating the daemon's role steep_daemon failed on node$i"
}

write_config() {
    local i=$1 n=$2 peers="" j postgresql
    for ((j = 1; j <= n; j++)); do
        [ "$j" -eq "$i" ] && continue
        peers="$peers${peers:+, }\"127.0.0.1:$((GRPC_BASE + j))\""
    done
    if is_witness "$i"; then
        postgresql="    enabled: false"
    else
        postgresql="    host: 127.0.0.1
    port: $(pg_port "$i")
    user: steep_daemon
    database: postgres"
    fi
    cat >"$(node_dir "$i")/config.yaml" <<YAML
# node$i of the local cluster (written by deploy/cluster.sh)
repl:
  node_id: node$i
  priority: $((40 + 10 * i))
  advertise_host: 127.0.0.1
  postgresql:
$postgresql
  grpc:
    bind: 127.0.0.1
    port: $((GRPC_BASE + i))
    peers: [$peers]
    tls:
      ca_file: $DIR/tls/ca.crt
      cert_file: $DIR/tls/node$i.crt
      key_file: $DIR/tls/node$i.key
  http:
    bind: 127.0.0.1
    port: $((HTTP_BASE + i))
  ipc:
    path: $(node_dir "$i")/steep-repl.sock
  audit:
    spool_path: $(node_dir "$i")/audit.spool
  raft:
    dir: $(node_dir "$i")/raft
  log:
    target: terminal
YAML
    chmod 600 "$(node_dir "$i")/config.yaml"
}

start_daemon() {
    local i=$1
    daemon_running "$i" && return 0
    nohup "$BIN" run --config "$(node_dir "$i")/config.yaml" \
        >>"$(node_dir "$i")/daemon.log" 2>&1 </dev/null &
    echo $! >"$(node_dir "$i")/daemon.pid"
}

# A field of `steep-repl cluster status --json` on node $1 (empty when the
# daemon does not answer yet).
cluster_field() {
    "$BIN" cluster status --json --config "$(node_dir "$1")/config.yaml" 2>/dev/null \
        | python3 -c 'import json,sys
try: v=json.load(sys.stdin)
except Exception: sys.exit(0)
for k in sys.argv[1].split("."): v=v.get(k) if isinstance(v,dict) else None
print("" if v is None else v)' "$2"
}

# The voters node $1 sees, comma-separated and sorted.
cluster_voters() {
    "$BIN" cluster status --json --config "$(node_dir "$1")/config.yaml" 2>/dev/null \
        | python3 -c 'import json,sys
try: v=json.load(sys.stdin)
except Exception: sys.exit(0)
print(",".join(sorted(m["node_id"] for m in v.get("members",[]) if m.get("voter"))))'
}

# The Raft cluster: `cluster init` on node1 when its store is empty, then
# `cluster add` (from node1) of every node that is not a member yet. A node
# that died keeps its store and rejoins by itself when it is started again.
form_cluster() {
    local n=$1 i deadline members
    deadline=$((SECONDS + 30))
    until [ -n "$(cluster_field 1 state)" ]; do
        [ $SECONDS -ge $deadline ] && die "node1's daemon does not answer on its socket (see $(node_dir 1)/daemon.log)"
        sleep 0.2
    done
    if [ -z "$(cluster_field 1 cluster_id)" ]; then
        say "creating the cluster on node1"
        "$BIN" cluster init --config "$(node_dir 1)/config.yaml" >/dev/null || die "cluster init on node1 failed"
    fi
    for ((i = 2; i <= n; i++)); do
        members=$(cluster_voters 1)
        case ",$members," in *",node$i,"*) continue ;; esac
        local role=() what=""
        if is_witness "$i"; then role=(--witness); what=" as a witness"; fi
        say "adding node$i to the cluster$what"
        deadline=$((SECONDS + 60))
        until "$BIN" cluster add "node$i" --grpc "127.0.0.1:$((GRPC_BASE + i))" --priority $((40 + 10 * i)) \
            "${role[@]}" --config "$(node_dir 1)/config.yaml" >/dev/null; do
            [ $SECONDS -ge $deadline ] && die "cluster add node$i failed for 60 s (see $DIR/node*/daemon.log)"
            sleep 1
        done
    done
}

# Every node a voter of the same cluster, with the same leader.
raft_agreed() {
    local n=$1 i first="" view all="" j
    for ((j = 1; j <= n; j++)); do all="$all${all:+,}node$j"; done
    all=$(echo "$all" | tr ',' '\n' | sort | paste -sd, -)
    for ((i = 1; i <= n; i++)); do
        view="$(cluster_field "$i" cluster_id)/$(cluster_field "$i" leader)"
        case "$view" in /* | */) return 1 ;; esac
        [ "$(cluster_voters "$i")" = "$all" ] || return 1
        [ -z "$first" ] && first=$view
        [ "$view" = "$first" ] || return 1
    done
    echo "${first#*/}"
}

# One coordinator under one epoch, as every node names it now (the live
# answer, not the SQL projection), every node healthy everywhere.
agreed() {
    local n=$1 i first="" view healthy
    for ((i = 1; i <= n; i++)); do
        view="$(cluster_field "$i" coordinator) (epoch $(cluster_field "$i" epoch))"
        case "$view" in " "* | *"epoch )") return 1 ;; esac
        if ! is_witness "$i"; then
            healthy=$(psql_node "$i" -Atc "SELECT count(*) FROM steep_repl.nodes WHERE status = 'healthy'" 2>/dev/null) || return 1
            [ "$healthy" = "$n" ] || return 1
        fi
        [ -z "$first" ] && first=$view
        [ "$view" = "$first" ] || return 1
    done
    echo "$first"
}

cmd_up() {
    local n=3 witness="" bin i coordinator="" leader="" deadline
    for arg in "$@"; do
        case "$arg" in
            --witness) witness=1 ;;
            [1-9] | [1-9][0-9]) n=$arg ;;
            *) die "usage: deploy/cluster.sh up [N] [--witness] (N data nodes between 1 and 99; got '$arg')" ;;
        esac
    done
    local data=$n
    [ -n "$witness" ] && n=$((n + 1))
    if [ "$(node_count)" -gt 0 ] && [ "$(node_count)" -ne "$n" ]; then
        die "$DIR holds $(node_count) nodes; run 'deploy/cluster.sh down' and remove $DIR to start a cluster of another size"
    fi
    if [ "$(node_count)" -gt 0 ]; then
        local had=""
        is_witness "$n" && had=1
        [ "$had" = "$witness" ] || die "$DIR holds a cluster $( [ -n "$had" ] && echo with || echo without) a witness; run 'deploy/cluster.sh down' and remove $DIR to change that"
    fi
    ensure_pg_user
    # STEEP_EXTENSION_INSTALLED=1: deploy/test.sh has installed it already
    # (a test that runs this script beside others must not rewrite the
    # extension's files under their servers).
    [ -n "${STEEP_EXTENSION_INSTALLED:-}" ] || "$STEEP_ROOT/deploy/extension.sh"
    say "building steep-repl ($PROFILE)"
    if [ "$PROFILE" = release ]; then
        (cd "$STEEP_ROOT" && cargo build --quiet --release -p steep-repl) || die "cargo build failed"
    else
        # The same build as deploy/test.sh's, so the tests' binary is reused:
        # `-p steep-repl` alone unifies features differently and rebuilds it.
        (cd "$STEEP_ROOT" && cargo build --quiet --workspace) || die "cargo build failed"
    fi
    bin=$(pg_bin)
    mkdir -p "$DIR/tls"
    [ -f "$DIR/tls/ca.crt" ] || "$BIN" tls init --dir "$DIR/tls" --cluster-name "steep-repl local cluster" >/dev/null
    for ((i = 1; i <= n; i++)); do
        [ -f "$DIR/tls/node$i.crt" ] || "$BIN" tls issue "node$i" --host 127.0.0.1 --host localhost --dir "$DIR/tls" >/dev/null
        mkdir -p "$(node_dir "$i")"
        if [ "$i" -gt "$data" ]; then
            touch "$(node_dir "$i")/witness"
            write_config "$i" "$n"
            start_daemon "$i"
            say "node$i: witness (no PostgreSQL), gRPC :$((GRPC_BASE + i)), HTTP :$((HTTP_BASE + i)), pid $(daemon_pid "$i")"
            continue
        fi
        start_pg "$i" "$bin"
        write_config "$i" "$n"
        start_daemon "$i"
        say "node$i: PostgreSQL 127.0.0.1:$(pg_port "$i"), gRPC :$((GRPC_BASE + i)), HTTP :$((HTTP_BASE + i)), pid $(daemon_pid "$i")"
    done
    form_cluster "$n"
    say "waiting for every node to be a voter with the same leader"
    deadline=$((SECONDS + 60))
    until leader=$(raft_agreed "$n"); do
        if [ $SECONDS -ge $deadline ]; then
            for ((i = 1; i <= n; i++)); do say "--- node$i log (last lines)"; tail -n 5 "$(node_dir "$i")/daemon.log" >&2 || true; done
            die "the nodes did not agree on the Raft membership and leader within 60 s (logs in $DIR/node*/daemon.log)"
        fi
        sleep 0.2
    done
    say "waiting for the nodes to agree on a coordinator"
    deadline=$((SECONDS + 60))
    until coordinator=$(agreed "$n"); do
        if [ $SECONDS -ge $deadline ]; then
            for ((i = 1; i <= n; i++)); do say "--- node$i log (last lines)"; tail -n 5 "$(node_dir "$i")/daemon.log" >&2 || true; done
            die "the nodes did not agree on a coordinator within 60 s (logs in $DIR/node*/daemon.log)"
        fi
        sleep 0.2
    done
    echo
    "$BIN" nodes --config "$(node_dir 1)/config.yaml" 2>/dev/null \
        || psql_node 1 -c "SELECT node_id, status, priority, is_coordinator, grpc_port FROM steep_repl.nodes ORDER BY node_id"
    echo
    "$BIN" cluster status --config "$(node_dir 1)/config.yaml" 2>/dev/null || true
    echo
    echo "cluster of $n node(s)$( [ -n "$witness" ] && echo " (node$n a witness)") is up; Raft leader: $leader; coordinator: $coordinator; state and logs in $DIR"
    echo "try: $BIN status --config $(node_dir 1)/config.yaml; curl -s 127.0.0.1:$((HTTP_BASE + 1))/health"
    echo "     $BIN state set app.mode active --config $(node_dir 2)/config.yaml; $BIN state list --config $(node_dir 3)/config.yaml"
    echo "stop it with: deploy/cluster.sh down"
}

cmd_status() {
    local bin i pg daemon
    [ "$(node_count)" -gt 0 ] || { echo "no cluster in $DIR"; return 0; }
    bin=$(pg_bin)
    for ((i = 1; i <= $(node_count); i++)); do
        if daemon_running "$i"; then daemon="running (pid $(daemon_pid "$i"))"; else daemon=stopped; fi
        if is_witness "$i"; then
            printf 'node%-3s witness (no PostgreSQL)                daemon %s\n' "$i" "$daemon"
            continue
        fi
        if pg_running "$bin" "$(node_dir "$i")/pgdata"; then pg=running; else pg=stopped; fi
        printf 'node%-3s postgresql 127.0.0.1:%-6s %-8s daemon %s\n' "$i" "$(pg_port "$i")" "$pg" "$daemon"
    done
    for ((i = 1; i <= $(node_count); i++)); do
        if daemon_running "$i"; then
            echo
            "$BIN" cluster status --config "$(node_dir "$i")/config.yaml" || true
            break
        fi
    done
}

cmd_down() {
    local bin i pid
    bin=$(pg_bin)
    for ((i = 1; i <= $(node_count); i++)); do
        if daemon_running "$i"; then
            pid=$(daemon_pid "$i")
            kill -TERM "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && { say "node$i: daemon did not stop in 10 s; killing it"; kill -KILL "$pid"; }
            say "node$i: daemon stopped"
        fi
        rm -f "$(node_dir "$i")/daemon.pid"
        if ! is_witness "$i" && pg_running "$bin" "$(node_dir "$i")/pgdata"; then
            as_pg_user "$bin/pg_ctl" -D "$(node_dir "$i")/pgdata" -m fast -w stop >/dev/null
            say "node$i: PostgreSQL stopped"
        fi
    done
    echo "cluster is down (data kept in $DIR)"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) echo "usage: deploy/cluster.sh up [N] [--witness] | status | down" >&2; exit 2 ;;
esac
