#!/usr/bin/env bash
# Builds the Debian packages of steep-repl from this checkout and prints
# their paths on stdout:
#
#   steep-repl_<version>-<revision>_<arch>.deb
#       the daemon in /usr/bin, its systemd unit (what `steep-repl install
#       --print` shows), a default /etc/steep/config.yaml (a conffile), a man
#       page per command, bash/zsh/fish completions; the maintainer scripts
#       (deploy/debian/steep-repl/) create the service account and start the
#       service once the configuration loads
#   postgresql-18-steep-repl_<extension version>-<revision>_<arch>.deb
#       the extension, laid out where the PostgreSQL 18 of --pg-config says
#       (--pkglibdir, --sharedir/extension), with the upgrade script from
#       every released version, as Debian's PostgreSQL packagers do
#
# Usage: deploy/package.sh [--pg-config PATH] [--debian-layout] [--revision N] [--out DIR]
#   --pg-config  the PostgreSQL 18 to build the extension for (default: the
#                one deploy/pg18.sh provides; a Debian/PGDG
#                /usr/lib/postgresql/18/bin/pg_config makes a package for
#                Debian's postgresql-18, which it then depends on)
#   --debian-layout
#                put the extension in Debian's PostgreSQL 18 directories
#                (/usr/lib/postgresql/18/lib, /usr/share/postgresql/18/extension)
#                whatever --pg-config says: a build on a machine with another
#                PostgreSQL 18 for Debian's (CI's test does this)
#   --revision   the Debian revision (default 1); a higher one is a newer
#                build of the same version
#   --out        where the .deb files go (default target/debian)
#
# dpkg-deb, not cargo-deb: one tool for both packages (cargo-deb knows
# nothing of pgrx's layout), nothing to compile, and the maintainer scripts
# are plain files we can read and test.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$STEEP_ROOT"

pg_config=""
debian_layout=""
revision=1
out="$STEEP_ROOT/target/debian"
while [ $# -gt 0 ]; do
    case "$1" in
        --pg-config) pg_config=${2:?--pg-config needs a path}; shift 2 ;;
        --debian-layout) debian_layout=1; shift ;;
        --revision) revision=${2:?--revision needs a number}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see deploy/package.sh --help)" ;;
    esac
done
case "$revision" in '' | *[!0-9]*) die "--revision must be a number, not $revision" ;; esac
[ -n "$pg_config" ] || pg_config=$("$STEEP_ROOT/deploy/pg18.sh")
[ "$(pg_major "$pg_config")" = 18 ] || die "$pg_config is not PostgreSQL 18"

# dpkg-dev: dpkg-shlibdeps (the library dependencies), dpkg-architecture.
ensure_apt dpkg-dev binutils

ARCH=$(dpkg --print-architecture)
MAINTAINER="steep-repl developers <steep-repl@users.noreply.github.com>"
DATE=$(git -C "$STEEP_ROOT" log -1 --format=%cD 2>/dev/null || date -R)
# Reproducible file times: the last commit's. Not exported: ring's build
# script watches SOURCE_DATE_EPOCH, and cargo would rebuild it and everything
# above it (3 minutes) instead of reusing the release build.
SOURCE_DATE_EPOCH=$(git -C "$STEEP_ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
cargo_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$1" | head -n 1; }

mkdir -p "$out"
work="$STEEP_ROOT/target/debian-stage"
rm -rf "$work"
mkdir -p "$work"

# doc_files STAGE PACKAGE VERSION: copyright and changelog.Debian.gz, as
# Debian policy asks of every package.
doc_files() {
    local stage=$1 package=$2 version=$3 doc="$1/usr/share/doc/$2"
    install -d "$doc"
    install -m 644 "$STEEP_ROOT/deploy/debian/copyright" "$doc/copyright"
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
        "$package" "$version" "$(git -C "$STEEP_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$MAINTAINER" "$DATE" | gzip -9n >"$doc/changelog.Debian.gz"
    chmod 644 "$doc/changelog.Debian.gz"
}

# shlibs_depends STAGE FILE...: the Depends of the shared libraries FILEs
# link to, as dpkg-shlibdeps works them out (it wants a debian/control).
shlibs_depends() {
    local stage=$1
    shift
    local dir
    dir=$(mktemp -d)
    mkdir -p "$dir/debian"
    printf 'Source: steep-repl\n\nPackage: steep-repl\nArchitecture: any\n' >"$dir/debian/control"
    (cd "$dir" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
    rm -rf "$dir"
}

# finish STAGE: md5sums, modes, then dpkg-deb into $out; prints the path.
finish() {
    local stage=$1 package version deb
    package=$(sed -n 's/^Package: //p' "$stage/DEBIAN/control")
    version=$(sed -n 's/^Version: //p' "$stage/DEBIAN/control")
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
        | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
    chmod 644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"
    find "$stage" -type d -exec chmod 755 {} +
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    deb="$out/${package}_${version}_${ARCH}.deb"
    SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null \
        || die "dpkg-deb --build $package failed"
    echo "$deb"
}

# --- steep-repl ---------------------------------------------------------------
build_daemon() {
    local stage="$work/steep-repl" version bin
    version="$(cargo_version "$STEEP_ROOT/Cargo.toml")-$revision"
    say "building steep-repl $version (release)"
    cargo build --quiet --release -p steep-repl || die "cargo build --release -p steep-repl failed"
    bin="${CARGO_TARGET_DIR:-$STEEP_ROOT/target}/release/steep-repl"

    install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/steep" \
        "$stage/usr/share/man/man1" "$stage/usr/share/bash-completion/completions" \
        "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
    install -m 755 "$bin" "$stage/usr/bin/steep-repl"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/steep-repl"
    # The unit `steep-repl install --print` shows on a node with the default
    # configuration: the same text, generated by the same code.
    "$bin" install --print --platform systemd --binary /usr/bin/steep-repl \
        >"$stage/lib/systemd/system/steep-repl.service"
    chmod 644 "$stage/lib/systemd/system/steep-repl.service"
    install -m 644 "$STEEP_ROOT/deploy/debian/config.yaml" "$stage/etc/steep/config.yaml"
    "$bin" man-pages "$stage/usr/share/man/man1" 2>/dev/null || die "steep-repl man-pages failed"
    gzip -9n "$stage"/usr/share/man/man1/*.1
    chmod 644 "$stage"/usr/share/man/man1/*.gz
    "$bin" completions bash >"$stage/usr/share/bash-completion/completions/steep-repl"
    "$bin" completions zsh >"$stage/usr/share/zsh/vendor-completions/_steep-repl"
    "$bin" completions fish >"$stage/usr/share/fish/vendor_completions.d/steep-repl.fish"
    chmod 644 "$stage"/usr/share/*/*/steep-repl* "$stage/usr/share/zsh/vendor-completions/_steep-repl"
    doc_files "$stage" steep-repl "$version"
    install -D -m 644 "$STEEP_ROOT/deploy/debian/steep-repl/lintian-overrides" \
        "$stage/usr/share/lintian/overrides/steep-repl"
    install -m 755 "$STEEP_ROOT"/deploy/debian/steep-repl/{postinst,prerm,postrm} "$stage/DEBIAN/"
    echo /etc/steep/config.yaml >"$stage/DEBIAN/conffiles"
    chmod 644 "$stage/DEBIAN/conffiles"

    local depends
    depends=$(shlibs_depends "$stage" "$stage/usr/bin/steep-repl")
    [ -n "$depends" ] || die "dpkg-shlibdeps found no library dependencies of steep-repl"
    cat >"$stage/DEBIAN/control" <<CONTROL
Package: steep-repl
Version: $version
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $depends, passwd, init-system-helpers (>= 1.52)
Suggests: postgresql-18-steep-repl
Section: database
Priority: optional
Homepage: https://github.com/steep-repl/steep-repl
Description: node daemon of the steep-repl PostgreSQL 18 replication cluster
 steep-repl runs on every node of a cluster of PostgreSQL 18 servers. Its
 nodes form a Raft group (explicit membership, a replicated key/value state
 and the coordinator as a lease with an epoch), talk to each other over gRPC
 with mutual TLS, to local tools over a Unix socket, and to load balancers
 and monitors over HTTP (/health, /ready, /live, /metrics).
 .
 This package holds the daemon and its command line, a systemd unit that
 runs it as the steep-repl account, man pages and shell completions. The
 local PostgreSQL needs the steep_repl extension
 (postgresql-18-steep-repl).
CONTROL
    finish "$stage"
}

# --- postgresql-18-steep-repl ---------------------------------------------------
build_extension() {
    local stage="$work/extension" version pkglibdir sharedir packaged depends to_lib to_share
    version="$(cargo_version "$STEEP_ROOT/ext/Cargo.toml")-$revision"
    # Where pgrx puts the files (this pg_config's directories), and where
    # the package installs them.
    pkglibdir=$("$pg_config" --pkglibdir)
    sharedir=$("$pg_config" --sharedir)
    to_lib=$pkglibdir
    to_share=$sharedir
    if [ -n "$debian_layout" ]; then
        to_lib=/usr/lib/postgresql/18/lib
        to_share=/usr/share/postgresql/18
    fi
    say "building postgresql-18-steep-repl $version for $pg_config"
    export PGRX_HOME="${PGRX_HOME:-$STEEP_ROOT/.pgrx}"
    [ -f "$PGRX_HOME/config.toml" ] || "$STEEP_ROOT/deploy/extension.sh" >/dev/null
    packaged="$work/pgrx"
    (cd "$STEEP_ROOT/ext" && cargo pgrx package --pg-config "$pg_config" --out-dir "$packaged" >&2) \
        || die "cargo pgrx package failed (see above)"
    install -d "$stage/DEBIAN" "$stage$to_lib" "$stage$to_share/extension"
    install -m 644 "$packaged$pkglibdir/steep_repl.so" "$stage$to_lib/"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage$to_lib/steep_repl.so"
    install -m 644 "$packaged$sharedir/extension/steep_repl.control" \
        "$packaged$sharedir"/extension/steep_repl--*.sql "$stage$to_share/extension/"
    # The upgrade path from every released version (ALTER EXTENSION
    # steep_repl UPDATE), whether or not pgrx copied them.
    install -m 644 "$STEEP_ROOT"/ext/sql/steep_repl--*--*.sql "$stage$to_share/extension/"
    doc_files "$stage" postgresql-18-steep-repl "$version"

    depends=$(shlibs_depends "$stage" "$stage$pkglibdir/steep_repl.so")
    # Against Debian's (PGDG's) PostgreSQL 18 the package depends on it; a
    # relocatable build elsewhere (CI's) has no package to name.
    case "$pg_config" in
        /usr/lib/postgresql/18/bin/pg_config) depends="${depends:+$depends, }postgresql-18" ;;
    esac
    cat >"$stage/DEBIAN/control" <<CONTROL
Package: postgresql-18-steep-repl
Version: $version
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
${depends:+Depends: $depends
}Section: database
Priority: optional
Homepage: https://github.com/steep-repl/steep-repl
Description: steep_repl extension for PostgreSQL 18
 The steep_repl extension holds what a steep-repl node keeps in its
 PostgreSQL 18: the node registry, the projection of the cluster's
 replicated key/value state, and an append-only audit log of every change,
 with the roles steep_repl_reader, steep_repl_daemon and steep_repl_admin.
 .
 After installing: CREATE EXTENSION steep_repl; after an upgrade:
 ALTER EXTENSION steep_repl UPDATE (from any released version).
CONTROL
    finish "$stage"
}

build_daemon
build_extension
rm -rf "$work"
