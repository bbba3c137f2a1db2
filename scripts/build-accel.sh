#!/usr/bin/env bash
# Optional acceleration: compile the sans-IO SIP modules (sipim/sip/headers, uri,
# message, parser, digest) with mypyc, in place; see sipim/sip/_accel.py.
# Quick no-op when the build matches the sources.
#
#   SIPIM_ACCEL=0          skip (sipim runs the pure-Python modules)
#   SIPIM_ACCEL=optional   a missing tool chain or a failed build is a warning, not an error
#                          (`make run`); the default is to fail (`make test`, `make accel`)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

VENV_DIR="${VENV_DIR:-.venv}"
PYTHON="$VENV_DIR/bin/python"
MODE="${SIPIM_ACCEL:-required}"

if [ "$MODE" = 0 ]; then
    echo "build-accel: skipped (SIPIM_ACCEL=0): sipim runs the pure-Python SIP modules" >&2
    exit 0
fi

give_up() {
    if [ "$MODE" = optional ]; then
        echo "build-accel: WARNING: $1; sipim runs the pure-Python SIP modules" >&2
        exit 0
    fi
    echo "build-accel: ERROR: $1 (SIPIM_ACCEL=0 skips the build)" >&2
    exit 1
}

# mypyc comes with mypy (the project's accel and test extras install it).
"$PYTHON" -c 'import mypyc.build, setuptools' 2>/dev/null \
    || give_up "mypy (mypyc) or setuptools is not installed in $VENV_DIR (pip install -e '.[accel]')"

# A C compiler and the interpreter's headers: Debian's python3 keeps them in
# python3-dev; an interpreter built from source ships its own.
include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if [ ! -f "$include/Python.h" ] || ! command -v cc >/dev/null 2>&1; then
    if command -v dpkg-query >/dev/null 2>&1; then
        packages=(gcc libc6-dev)
        case "$include" in /usr/include/*) packages+=(python3-dev) ;; esac
        apt_install_missing "${packages[@]}" || true
    fi
    [ -f "$include/Python.h" ] || give_up "no Python.h in $include"
    command -v cc >/dev/null 2>&1 || give_up "no C compiler (cc)"
fi

# The compiler's command lines go to the log; mypyc's and gcc's complaints are
# shown when the build fails.
mkdir -p build/accel
exec 9>build/accel/.lock   # one build at a time (make -j, two shells)
flock 9
log=build/accel/build.log
if ! "$PYTHON" scripts/build_accel.py "$@" >"$log" 2>&1; then
    grep -v -E '^(gcc|cc|x86_64-linux-gnu-gcc|creating|copying|running|building) ' "$log" >&2 || true
    give_up "the mypyc build failed (log: $log)"
fi
grep '^build-accel:' "$log" >&2 || true
