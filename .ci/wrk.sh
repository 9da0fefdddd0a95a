#!/usr/bin/env bash
# bench/serve.py and bench/api.py drive the service with wrk (a C load generator): install it if missing.
set -euo pipefail
command -v wrk >/dev/null && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }
as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
