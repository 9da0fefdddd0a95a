#!/usr/bin/env bash
# The dashboard test drives Debian's headless Chromium with Playwright (no browser download): install it with
# apt when it is missing and we may (root or passwordless sudo).
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }
echo "installing chromium with apt (for the dashboard test)" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
