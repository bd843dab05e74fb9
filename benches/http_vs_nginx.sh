#!/usr/bin/env bash
# /health of a real steep-repl daemon against nginx serving a static file
# with the same bytes and against a bare actix-web handler serving them
# (benches/src/bin/http_reference.rs), measured with wrk in the same run, on
# loopback.
#
#   benches/http_vs_nginx.sh [SECONDS]      (default 10 s per measurement)
#   BENCH_ROUNDS=3 BENCH_CONNECTIONS=64 BENCH_THREADS=2 BENCH_RT=0 (defaults)
#   STEEP_DAEMON_BIN=PATH: that daemon binary instead of building one
#
# Installs what it needs (Debian's wrk and nginx-light; PostgreSQL 18 and
# the extension through deploy/), builds the daemon in release mode, starts
# one PostgreSQL 18 server, the daemon, nginx and the reference on free
# ports, and prints:
#   - throughput with 64 connections (wrk -t2 -c64), every server, and the
#     ratios daemon/nginx (goal: >= 1.5), reference/nginx and
#     daemon/reference (what the probe's own path costs);
#   - p50/p99 latency with one connection (wrk -t1 -c1 --latency)
#     (goal: daemon p99 < 200 us).
# Each figure is the median of BENCH_ROUNDS alternating rounds (nginx, the
# daemon, the reference), so that other load on the machine falls on all alike.
# Everything it started is stopped on exit. Results go in docs/BENCHMARKS.md.
set -euo pipefail
. "$(dirname "$0")/../deploy/lib.sh"
cd "$STEEP_ROOT"

SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
# BENCH_RT=1 runs both servers and wrk under SCHED_FIFO (chrt -f 20): on a
# machine shared with other work, this keeps other processes' time slices
# out of the latency figures. Every server gets the same treatment.
RT=()
[ "${BENCH_RT:-0}" = 1 ] && RT=(chrt -f 20)

ensure_apt wrk nginx-light curl
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
ensure_pg_user
pg_config=$("$STEEP_ROOT/deploy/pg18.sh")
"$STEEP_ROOT/deploy/extension.sh"
if [ -n "${STEEP_DAEMON_BIN:-}" ]; then
    daemon_bin=$STEEP_DAEMON_BIN
else
    say "building steep-repl (release)"
    cargo build --release --quiet -p steep-repl
    daemon_bin="${CARGO_TARGET_DIR:-$STEEP_ROOT/target}/release/steep-repl"
fi
say "building the bare actix-web reference (release)"
cargo build --release --quiet -p steep-repl-benches --bin http_reference
reference_bin="${CARGO_TARGET_DIR:-$STEEP_ROOT/target}/release/http_reference"
pg_bin=$("$pg_config" --bindir)

# as_pg_user as a command prefix, usable after chrt.
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u "$STEEP_PG_USER" --)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d /tmp/steep-bench-http.XXXXXX)
chmod 755 "$work"
pg_port=$(free_port)
http_port=$(free_port)
nginx_port=$(free_port)
reference_port=$(free_port)
daemon_pid="" nginx_pid="" reference_pid=""

cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [ -n "$reference_pid" ] && kill "$reference_pid" 2>/dev/null && wait "$reference_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    as_pg_user "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

say "starting PostgreSQL 18 on port $pg_port"
mkdir -p "$work/pg"
if [ "$(id -u)" -eq 0 ]; then chown "$STEEP_PG_USER:" "$work/pg"; fi
as_pg_user "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
# Under BENCH_RT PostgreSQL gets the same policy: starved of CPU, its pings
# would time out and /health would rightly turn 503 mid-run.
"${RT[@]}" "${AS_PG[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
as_pg_user "$pg_bin/psql" -h "$work/pg" -p "$pg_port" -U postgres -qc "CREATE EXTENSION steep_repl" postgres
# The daemon's own role, as in production (docs/security.md), not a superuser.
as_pg_user "$pg_bin/psql" -h "$work/pg" -p "$pg_port" -U postgres \
    -qc "CREATE ROLE steep_daemon LOGIN IN ROLE steep_repl_daemon" postgres

say "starting steep-repl with HTTP on 127.0.0.1:$http_port"
cat >"$work/config.yaml" <<EOF
repl:
  node_id: bench
  advertise_host: 127.0.0.1
  postgresql:
    host: 127.0.0.1
    port: $pg_port
    user: steep_daemon
  grpc:
    enabled: false
  http:
    enabled: true
    bind: 127.0.0.1
    port: $http_port
  ipc:
    path: $work/ipc.sock
  audit:
    spool_path: $work/audit.spool
  log:
    level: warn
    target: terminal
EOF
"${RT[@]}" "$daemon_bin" run --config "$work/config.yaml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/health")" = 200 ] && break
    sleep 0.05
done
curl -sf -o "$work/health.json" "http://127.0.0.1:$http_port/health" \
    || die "the daemon's /health did not answer 200; log: $(cat "$work/daemon.log")"

say "starting nginx on 127.0.0.1:$nginx_port serving the same $(wc -c <"$work/health.json") bytes"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$nginx_port;
        location = /health { default_type application/json; alias $work/health.json; }
    }
}
EOF
# same_bytes NAME PORT: waits for the server's /health, then dies unless it
# serves the daemon's body byte for byte.
same_bytes() {
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$2/health" && break
        sleep 0.05
    done
    cmp -s "$work/health.json" <(curl -s "http://127.0.0.1:$2/health") \
        || die "$1 does not serve the same bytes"
}

"${RT[@]}" nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
same_bytes nginx "$nginx_port"

say "starting the bare actix-web reference on 127.0.0.1:$reference_port serving the same bytes"
"${RT[@]}" "$reference_bin" "127.0.0.1:$reference_port" "$work/health.json" &
reference_pid=$!
same_bytes "the actix-web reference" "$reference_port"

# rps FILE: Requests/sec of a wrk report. p LABEL FILE: a latency percentile in us.
rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct() {
    awk -v want="$1" '$1 == want {
        v = $2; unit = v; gsub(/[0-9.]/, "", unit); gsub(/[a-z]/, "", v);
        if (unit == "ms") v *= 1000; else if (unit == "s") v *= 1000000;
        printf "%.0f", v }' "$2"
}

run() { # NAME URL ROUND
    say "round $3: wrk $1, $THREADS threads, $CONNECTIONS connections, then 1 connection, ${SECONDS_PER_RUN}s each"
    "${RT[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$2" >"$work/$1.tput.$3"
    "${RT[@]}" wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency "$2" >"$work/$1.lat.$3"
}
# median of the numbers on stdin
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# stat NAME KIND: the median over the rounds (KIND: tput, c1, p50, p99)
stat() {
    local r
    for r in $(seq 1 "$ROUNDS"); do
        case $2 in
            tput) rps "$work/$1.tput.$r" ;;
            c1) rps "$work/$1.lat.$r" ;;
            p50) pct 50% "$work/$1.lat.$r"; echo ;;
            p99) pct 99% "$work/$1.lat.$r"; echo ;;
        esac
    done | median
}

nginx_url="http://127.0.0.1:$nginx_port/health"
daemon_url="http://127.0.0.1:$http_port/health"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$nginx_url" >/dev/null # warm-up
reference_url="http://127.0.0.1:$reference_port/health"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$daemon_url" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$reference_url" >/dev/null
# Alternating rounds, so that load from elsewhere on the machine falls on all.
for r in $(seq 1 "$ROUNDS"); do
    run nginx "$nginx_url" "$r"
    run daemon "$daemon_url" "$r"
    run reference "$reference_url" "$r"
done

d_rps=$(stat daemon tput) n_rps=$(stat nginx tput) r_rps=$(stat reference tput)
printf '\n/health, %s bytes, %s cores (%s), load average before: %s%s\n' \
    "$(wc -c <"$work/health.json")" "$(nproc)" "$(uname -m)" "$load_before" \
    "$([ ${#RT[@]} -gt 0 ] && echo ', servers and wrk under chrt -f 20')"
printf 'medians of %s alternating rounds; throughput: wrk -t%s -c%s -d%ss; latency: wrk -t1 -c1 -d%ss --latency\n' \
    "$ROUNDS" "$THREADS" "$CONNECTIONS" "$SECONDS_PER_RUN" "$SECONDS_PER_RUN"
printf '%-22s %14s %12s %12s %12s\n' server "req/s (c$CONNECTIONS)" "req/s (c1)" "p50 c1 (us)" "p99 c1 (us)"
for s in daemon nginx reference; do
    name="steep-repl"
    [ "$s" = nginx ] && name="nginx $(nginx -v 2>&1 | sed 's|.*/||')"
    [ "$s" = reference ] && name="bare actix-web"
    printf '%-22s %14.0f %12.0f %12s %12s\n' "$name" "$(stat $s tput)" "$(stat $s c1)" "$(stat $s p50)" "$(stat $s p99)"
done
awk -v d="$d_rps" -v n="$n_rps" -v r="$r_rps" -v c="$CONNECTIONS" 'BEGIN {
    printf "ratio steep-repl / nginx (c%s): %.2f\n", c, d / n
    printf "ratio bare actix-web / nginx (c%s): %.2f\n", c, r / n
    printf "ratio steep-repl / bare actix-web (c%s): %.2f\n", c, d / r }'
grep -i -E "socket errors|Non-2xx" "$work"/*.tput.* "$work"/*.lat.* | sed "s|$work/||" >&2 || true
