#!/usr/bin/env bash
# Run a command (the test suite) as if the machine's clock read another date and time.
#
#   tests/support/run-at.sh WHEN -- COMMAND [ARGS...]
#
# WHEN is an offset (+45d, -3h, +400d, +90m; d, h, m or s) or an ISO 8601 time with its UTC
# offset (2027-03-28T02:30:00+01:00, Europe/Berlin's spring-forward night). The clock starts
# there and keeps running. Shifted are:
#   - every Python process of the run: pytest and what the tests start (the `cityops` CLI,
#     simulators, the API), through tests/support/timeshift/sitecustomize.py (time-machine);
#   - a throwaway PostgreSQL 15 cluster started here on a free loopback port, under
#     libfaketime, so that SQL now() agrees with Python's clock.
# Monotonic clocks stay real, and so does every timeout. Not shifted: Mosquitto (it reads
# no timestamps of ours), Chromium and the SUMO binaries (simulated time only).
#
# Environment:
#   CITYOPS_TEST_DB_MODE=timescale  preload TimescaleDB in the throwaway cluster (it must be
#                                   installed for PostgreSQL 15; otherwise the suite skips
#                                   its database tests with a message)
#   RUN_AT_KEEP=1                   keep the cluster's directory (its log) after the run
#
# Needs Debian's faketime package (libfaketime) and the PostgreSQL 15 server binaries:
# `make test-at AT=...` installs what is missing (deploy/local/setup-services.sh).
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
when=$1
shift 2

say() { printf '[run-at] %s\n' "$*" >&2; }

lib=""
for cand in /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 \
  /usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1 \
  /usr/lib/faketime/libfaketimeMT.so.1; do
  [ -f "$cand" ] && lib=$cand && break
done
[ -n "$lib" ] || { say "libfaketime not found: apt-get install faketime"; exit 1; }
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/pg_ctl" ] || { say "PostgreSQL 15 server binaries not found in $pgbin"; exit 1; }

# The shift in whole seconds: from an offset, or from now to an absolute time.
shift_s=$(python3 - "$when" <<'PY'
import re
import sys
from datetime import datetime, timezone

when = sys.argv[1]
m = re.fullmatch(r"([+-]\d+)([dhms]?)", when)
if m:
    print(int(m[1]) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[m[2]])
else:
    try:
        target = datetime.fromisoformat(when)
    except ValueError:
        sys.exit(f"not an offset (+45d) nor an ISO 8601 time: {when!r}")
    if target.tzinfo is None:
        sys.exit("give the time with its UTC offset, e.g. 2027-03-28T02:30:00+01:00")
    print(int((target - datetime.now(timezone.utc)).total_seconds()))
PY
) || exit 2
here=$(cd "$(dirname "$0")" && pwd)
faketime_spec=$(printf '%+d' "$shift_s")
say "clock shifted by ${shift_s} s: now $(date -u -d "@$(( $(date +%s) + shift_s ))" '+%Y-%m-%d %H:%M:%S UTC') ($(TZ=Europe/Berlin date -d "@$(( $(date +%s) + shift_s ))" '+%a %H:%M %Z') in Berlin)"

# A throwaway cluster under the same shift.
dir=$(mktemp -d /tmp/cityops-run-at.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi
opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
if [ "${CITYOPS_TEST_DB_MODE:-}" = "timescale" ]; then
  if [ -f /usr/lib/postgresql/15/lib/timescaledb.so ]; then
    opts="$opts -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
  else
    say "TimescaleDB is not installed for PostgreSQL 15: the cluster runs without it"
  fi
fi
stop() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  if [ "${RUN_AT_KEEP:-0}" = 1 ]; then say "kept $dir"; else rm -rf "$dir"; fi
}
trap stop EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" env LD_PRELOAD="$lib" FAKETIME="$faketime_spec" FAKETIME_DONT_FAKE_MONOTONIC=1 \
  "$pgbin/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/postgres.log" -w start >/dev/null \
  || { cat "$dir/postgres.log" >&2; exit 1; }
psql -qX -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "CREATE ROLE cityops LOGIN SUPERUSER PASSWORD 'cityops'" >/dev/null
say "PostgreSQL under the shifted clock on 127.0.0.1:$port ($(psql -qXtA -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "SELECT now() AT TIME ZONE 'UTC'") UTC)"

export CITYOPS_TEST_PG="postgresql://cityops:cityops@127.0.0.1:$port/postgres"
export CITYOPS_DATABASE_URL="postgresql://cityops:cityops@127.0.0.1:$port/cityops"
export CITYOPS_TEST_TIME_SHIFT_S=$shift_s
export PYTHONPATH="$here/timeshift${PYTHONPATH:+:$PYTHONPATH}"
# time-machine is already travelling when pytest starts: its pytest plugin stays out, and
# pytest may not rewrite its (already imported) module.
export PYTEST_ADDOPTS="-p no:time_machine -W ignore::pytest.PytestAssertRewriteWarning${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
set +e
"$@"
rc=$?
set -e
exit $rc
