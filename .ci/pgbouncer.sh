#!/usr/bin/env bash
# Starts Debian's PgBouncer in transaction mode on 127.0.0.1:${PGBOUNCER_PORT:-6432} in front of the Postgres on
# 127.0.0.1:5432 (any database, trust, as CI's Postgres is), so the test suite can run through it the way a
# production deployment behind a pooler does. Idempotent; prints the URL to use. The settings a deployment
# needs are in docs/scaling.md.
set -euo pipefail
port=${PGBOUNCER_PORT:-6432}
dir=${PGBOUNCER_DIR:-/tmp/smart-auth-pgbouncer}
if pg_isready -h 127.0.0.1 -p "$port" -q 2>/dev/null; then
  echo "postgres://postgres@127.0.0.1:$port/postgres"
  exit 0
fi
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  apt-get install -y --no-install-recommends pgbouncer >/dev/null || { apt-get update >/dev/null && apt-get install -y --no-install-recommends pgbouncer >/dev/null; }
fi
mkdir -p "$dir"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
; the test suite opens a database per test file and up to 10 connections per app
max_client_conn = 2000
default_pool_size = 20
max_db_connections = 0
server_reset_query =
; connections to a dropped database must not linger
server_idle_timeout = 10
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
echo '"postgres" ""' >"$dir/userlist.txt"
chmod 755 "$dir"
chmod 644 "$dir"/*
if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; /usr/sbin/pgbouncer -d -u postgres "$dir/pgbouncer.ini"; else /usr/sbin/pgbouncer -d "$dir/pgbouncer.ini"; fi
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p "$port" -q && break; sleep 0.2; done
pg_isready -h 127.0.0.1 -p "$port" -q
echo "postgres://postgres@127.0.0.1:$port/postgres"
