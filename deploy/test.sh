#!/usr/bin/env bash
# Runs every test of steep-repl: formatting, lints, the extension on real
# PostgreSQL 18 (and its version gate on Debian's PostgreSQL 15), and the
# integration tests. Installs what the tests need when it is missing.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$STEEP_ROOT"

step() { say ""; say "==> $*"; }

# Containers and networks of container tests that were killed before they
# could clean up (the label is tests/src/containers.rs's TEST_LABEL). Only
# those older than an hour: a test running beside this one is left alone.
remove_stale_test_containers() {
    local cutoff id created
    cutoff=$(($(date +%s) - 3600))
    for id in $(docker ps -aq --filter label=io.steep-repl.test); do
        created=$(date -d "$(docker inspect -f '{{.Created}}' "$id")" +%s 2>/dev/null || echo "$cutoff")
        [ "$created" -lt "$cutoff" ] && docker rm -f -v "$id" >/dev/null 2>&1 || true
    done
    for id in $(docker network ls -q --filter label=io.steep-repl.test); do
        # Networks say "2026-11-27 02:02:53.5 +0000 UTC"; date wants no "UTC".
        created=$(docker network inspect -f '{{.Created}}' "$id")
        created=$(date -d "${created% UTC}" +%s 2>/dev/null || echo "$cutoff")
        [ "$created" -lt "$cutoff" ] && docker network rm "$id" >/dev/null 2>&1 || true
    done
}

step "test prerequisites"
# postgresql-15: the version gate test; runuser (util-linux) runs servers
# as the unprivileged account; haproxy: the load balancer test of the HTTP
# probes (tests/tests/http.rs); systemd (systemd-analyze, systemctl) and
# libplist-utils (plistutil): the service definitions (tests/tests/service.rs);
# busybox-static, tini and debootstrap: the container images (deploy/image.sh);
# lintian: the check of the Debian packages (tests/tests/packages.rs);
# prometheus (prometheus, promtool): the alerting rules and a real Prometheus
# scraping a cluster (tests/tests/monitoring.rs; its system service is not used).
ensure_apt postgresql-15 util-linux haproxy systemd libplist-utils busybox-static tini debootstrap lintian prometheus
ensure_pg_user

step "PostgreSQL 18 and the steep_repl extension"
STEEP_PG_CONFIG=$("$STEEP_ROOT/deploy/pg18.sh")
export STEEP_PG_CONFIG STEEP_PG_USER
"$STEEP_ROOT/deploy/extension.sh"

step "container images for the cluster tests in containers (tests/tests/containers.rs)"
case "${STEEP_SKIP_CONTAINER_TESTS:-}" in "" | 0 | false | no) skip_containers="" ;; *) skip_containers=1 ;; esac
if [ -n "$skip_containers" ]; then
    say "SKIPPED: STEEP_SKIP_CONTAINER_TESTS=$STEEP_SKIP_CONTAINER_TESTS: no images built; each container test reports itself skipped"
else
    remove_stale_test_containers
    # The extension was installed just above.
    t0=$SECONDS
    hint="the container tests need these images; STEEP_SKIP_CONTAINER_TESTS=1 runs the other tests without them"
    STEEP_TEST_IMAGE=$(STEEP_EXTENSION_INSTALLED=1 "$STEEP_ROOT/deploy/image.sh" node) || die "$hint"
    t1=$SECONDS
    STEEP_TEST_SYSTEMD_IMAGE=$(STEEP_EXTENSION_INSTALLED=1 "$STEEP_ROOT/deploy/image.sh" systemd) || die "$hint"
    say "images: $STEEP_TEST_IMAGE ($((t1 - t0)) s), $STEEP_TEST_SYSTEMD_IMAGE ($((SECONDS - t1)) s)"
    export STEEP_TEST_IMAGE STEEP_TEST_SYSTEMD_IMAGE

    # The Debian packages (tests/tests/packages.rs): this build and a newer
    # build of it (revision 2, the upgrade), for Debian's PostgreSQL 18
    # directories, and the Debian image with PostgreSQL 18 laid out so.
    t0=$SECONDS
    STEEP_TEST_PACKAGES="$STEEP_ROOT/target/debian"
    rm -rf "$STEEP_TEST_PACKAGES"
    "$STEEP_ROOT/deploy/package.sh" --debian-layout --out "$STEEP_TEST_PACKAGES" >/dev/null
    "$STEEP_ROOT/deploy/package.sh" --debian-layout --revision 2 --out "$STEEP_TEST_PACKAGES" >/dev/null
    STEEP_TEST_PACKAGES_IMAGE=$(STEEP_EXTENSION_INSTALLED=1 "$STEEP_ROOT/deploy/image.sh" packages) || die "$hint"
    say "packages and $STEEP_TEST_PACKAGES_IMAGE: $((SECONDS - t0)) s"
    export STEEP_TEST_PACKAGES STEEP_TEST_PACKAGES_IMAGE
fi

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

step "the bounded Jepsen-style runs in containers (tests/tests/jepsen.rs), alone on the machine"
# Reports in target/jepsen/<run>-<seed>/ (report.md, timeline.svg, the history).
t0=$SECONDS
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p steep-repl-tests --test jepsen --run-ignored only --no-fail-fast
else
    cargo test -p steep-repl-tests --test jepsen -- --ignored
fi
say "the Jepsen-style runs took $((SECONDS - t0)) s; reports in $STEEP_ROOT/target/jepsen/"
# down must leave nothing running and no socket, lock or pid file behind.
check_down() {
    local dir=$1
    if pgrep -f "steep-repl run --config $dir" >/dev/null; then
        die "deploy/cluster.sh down left daemons running"
    fi
    if find "$dir" \( -name '*.sock' -o -name '*.lock' -o -name 'postmaster.pid' \) | grep -q .; then
        die "deploy/cluster.sh down left sockets, locks or PostgreSQL pid files behind"
    fi
}

step "the main job: deploy/cluster.sh up, status, a killed daemon brought back by up, down"
cluster_dir=$(mktemp -d /tmp/steep-cluster-ci.XXXXXX)
chmod 755 "$cluster_dir"
export STEEP_CLUSTER_DIR="$cluster_dir" STEEP_CLUSTER_PROFILE=debug
"$STEEP_ROOT/deploy/cluster.sh" up 3
"$STEEP_ROOT/deploy/cluster.sh" status
kill -KILL "$(cat "$cluster_dir/node2/daemon.pid")"
say "killed node2's daemon; up again restarts it and waits until it has rejoined"
"$STEEP_ROOT/deploy/cluster.sh" up 3
# Captured first: with pipefail, grep -q closing the pipe early would fail
# the status command (SIGPIPE) even when the line is there.
status=$("$STEEP_ROOT/deploy/cluster.sh" status)
grep -q "^node2 .*daemon running" <<<"$status" || die "up did not bring node2's daemon back"
"$STEEP_ROOT/deploy/cluster.sh" down
check_down "$cluster_dir"
rm -rf "$cluster_dir"

step "the main job with a witness: deploy/cluster.sh up 2 --witness, status, down"
cluster_dir=$(mktemp -d /tmp/steep-cluster-ci.XXXXXX)
chmod 755 "$cluster_dir"
export STEEP_CLUSTER_DIR="$cluster_dir"
"$STEEP_ROOT/deploy/cluster.sh" up 2 --witness
status=$("$STEEP_ROOT/deploy/cluster.sh" status)
grep -q "^node3 .*witness" <<<"$status" || die "status does not show node3 as a witness"
"$STEEP_ROOT/deploy/cluster.sh" down
check_down "$cluster_dir"
rm -rf "$cluster_dir"
unset STEEP_CLUSTER_DIR STEEP_CLUSTER_PROFILE

say ""
say "all tests passed"
