#!/usr/bin/env bash
# Provides a project-local Python virtualenv (.venv-test/, git-ignored) with
# what the interoperability tests need (grpcio, grpcio-tools from PyPI) and
# prints its python path. Idempotent: a second run only checks.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

GRPC_VERSION=1.85.1
venv="${STEEP_PYTHON_VENV:-$STEEP_ROOT/.venv-test}"
python="$venv/bin/python"

if [ -x "$python" ] && "$python" -c "import grpc, grpc_tools; assert grpc.__version__ == '$GRPC_VERSION'" 2>/dev/null; then
    echo "$python"
    exit 0
fi
command -v python3 >/dev/null || die "python3 is needed for the gRPC interoperability test"
say "creating $venv with grpcio $GRPC_VERSION"
python3 -m venv "$venv" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
"$python" -m pip install --quiet --disable-pip-version-check \
    "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION" >&2 \
    || die "pip could not install grpcio/grpcio-tools $GRPC_VERSION"
echo "$python"
