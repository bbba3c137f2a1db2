#!/usr/bin/env bash
# Build the browser client (web/: JsSIP + the client, bundled by esbuild) into
# sipim/web/static/, which sipim serves at https://HOST:PORT/ on its wss port.
# Installs Node.js and npm from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install_missing nodejs npm
fi
cd web
# The exact versions of package-lock.json; no audit or funding chatter.
npm ci --no-audit --no-fund --loglevel=error
node build.mjs
