#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the tests use, if they are not already answering.
# (On the project's machines both normally run; a fresh or rebooted machine may have them down.)
set -u

pg_up() { python3 - <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 5432)) == 0 else 1)
PY
}
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  echo "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if ! redis_up; then
  echo "starting Redis"
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  fi
fi
for _ in $(seq 1 30); do
  pg_up && redis_up && exit 0
  sleep 1
done
pg_up || echo "PostgreSQL is not answering on 127.0.0.1:5432 (set CLICKPULSE_TEST_DATABASE_URL)" >&2
redis_up || echo "Redis is not answering on 127.0.0.1:6379 (set CLICKPULSE_TEST_REDIS_URL)" >&2
exit 1
