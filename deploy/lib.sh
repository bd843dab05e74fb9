# Shared helpers for the deploy/ scripts. Source it; do not run it.
# Messages go to stderr so that scripts can print results on stdout.

STEEP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export STEEP_ROOT

# The unprivileged account that runs PostgreSQL servers when we are root
# (initdb refuses to run as root).
STEEP_PG_USER=${STEEP_PG_USER:-steep}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_apt PKG...: installs the Debian packages that are missing, with one
# apt-get update at most per run.
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    if [ -z "${STEEP_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq >&2 || die "apt-get update failed"
        export STEEP_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# ensure_pg_user: creates the unprivileged PostgreSQL account when running as root.
ensure_pg_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    id -u "$STEEP_PG_USER" >/dev/null 2>&1 && return 0
    say "creating system user $STEEP_PG_USER to run PostgreSQL servers"
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin "$STEEP_PG_USER" \
        || die "useradd $STEEP_PG_USER failed"
}

# as_pg_user CMD...: runs CMD as the unprivileged account when root, else as us.
as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$STEEP_PG_USER" -- "$@"
    else
        "$@"
    fi
}

# pg_major PG_CONFIG: prints the major version of that installation (e.g. 18).
pg_major() {
    "$1" --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p'
}
