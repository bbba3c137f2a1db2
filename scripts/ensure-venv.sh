#!/usr/bin/env bash
# Create the project virtualenv (.venv) when it is missing.
# Debian ships `python3 -m venv` without ensurepip unless python3-venv is installed,
# so a failed first attempt installs that package and tries again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

VENV_DIR="${VENV_DIR:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV_DIR/bin/python" ] && [ -x "$VENV_DIR/bin/pip" ] && exit 0

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    apt_install_missing python3
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: sipim needs Python >= 3.11, $PYTHON is $("$PYTHON" -V 2>&1)" >&2
    exit 1
fi

echo ">> creating $VENV_DIR" >&2
if ! "$PYTHON" -m venv "$VENV_DIR" 2>/dev/null; then
    rm -rf "$VENV_DIR"   # a failed attempt leaves a venv without pip
    apt_install_missing python3-venv
    "$PYTHON" -m venv "$VENV_DIR"
fi
"$VENV_DIR/bin/python" -m pip install -q --upgrade pip
