#!/usr/bin/env bash
# Install the Debian packages the test suite drives (interop tests and the Kamailio
# side-by-side set-up). Quick no-op when everything is present: dpkg is asked first and
# apt-get only runs for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_install_missing \
    sip-tester sipsak baresip socat linphone-cli \
    kamailio kamailio-sqlite-modules kamailio-tls-modules \
    kamailio-websocket-modules kamailio-postgres-modules \
    chromium

# Node.js builds the browser client; a Node.js from elsewhere (nodesource) has npm inside.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install_missing nodejs npm
fi
