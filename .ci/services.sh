#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback: start them where installed but stopped, install them with
# apt where missing (as root), and give the local postgres user trust auth on 127.0.0.1 when we installed it.
set -euo pipefail

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { [ "$(printf 'PING\r\n' | timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379; cat >&3; head -c5 <&3' 2>/dev/null)" = "+PONG" ]; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

wait_for() {  # name, check
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "$1 did not come up on 127.0.0.1" >&2; return 1
}

if ! pg_up; then
  installed_now=0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "PostgreSQL is not installed; installing it with apt" >&2
    as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    installed_now=1
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  if [ "$installed_now" = 1 ]; then
    as_root sed -ri 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  echo "starting PostgreSQL $version" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  wait_for PostgreSQL pg_up
fi

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    echo "Redis is not installed; installing it with apt" >&2
    as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
  fi
  echo "starting Redis" >&2
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis_up
fi
echo "PostgreSQL and Redis answer on 127.0.0.1" >&2
