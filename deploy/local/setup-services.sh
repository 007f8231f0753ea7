#!/usr/bin/env bash
# Make sure the local services cityops needs are installed and running (idempotent).
# Installs with apt-get when run as root on Debian/Ubuntu; otherwise says what is missing.
#   PostgreSQL 15 with PostGIS 3 on 127.0.0.1:5432, a `cityops` superuser for development
#   Mosquitto 2 on 127.0.0.1:1883
#   python3 with venv and headers, headless Chromium with chromedriver (browser tests),
#   libfaketime (make test-at runs a throwaway PostgreSQL at another date)
set -euo pipefail

say() { printf '[setup] %s\n' "$*"; }
need_pkgs=()

command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /usr/lib/postgresql/15 ] || need_pkgs+=(postgresql-15)
dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 || need_pkgs+=(postgresql-15-postgis-3)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto mosquitto-clients)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# Headless Chromium and its driver for the public map's browser test.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
# libfaketime, for the suite at another date (make test-at: PostgreSQL's clock is shifted)
dpkg -s libfaketime >/dev/null 2>&1 || need_pkgs+=(faketime)
[ -n "$(python3 -c 'import sysconfig; print(sysconfig.get_config_h_filename())' 2>/dev/null)" ] \
  && [ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
  || need_pkgs+=(python3-dev)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing: ${need_pkgs[*]}; run 'sudo apt-get install ${need_pkgs[*]}' or run make as root"
    exit 1
  fi
  say "installing ${need_pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# PostgreSQL: start the 15/main cluster if it is not running.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && pg_lsclusters 2>/dev/null | grep -q '^15 *main'; then
    say "starting PostgreSQL 15/main"
    pg_ctlcluster --skip-systemctl-redirect 15 main start || pg_ctlcluster 15 main start
  else
    say "PostgreSQL is not running on 127.0.0.1:5432 and no 15/main cluster was found"
    exit 1
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi

# A development superuser `cityops` (password `cityops`, loopback only); needed to create
# databases, PostGIS and, in the tests, throwaway roles. Created through the postgres OS user.
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
  if ! runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'cityops'" 2>/dev/null | grep -q 1; then
    say "creating development role cityops"
    runuser -u postgres -- psql -qc "CREATE ROLE cityops LOGIN SUPERUSER PASSWORD 'cityops'" >/dev/null
  fi
fi

# Mosquitto: start it if nothing listens on 1883. On a Debian install the shipped
# queueing settings go into its conf.d so QoS 1 messages are not dropped.
if [ -d /etc/mosquitto/conf.d ] && [ ! -f /etc/mosquitto/conf.d/cityops-queueing.conf ] && [ -w /etc/mosquitto/conf.d ]; then
  if grep -q '^include_dir /etc/mosquitto/conf.d' /etc/mosquitto/mosquitto.conf 2>/dev/null; then
    say "installing deploy/mosquitto/conf.d/cityops-queueing.conf into /etc/mosquitto/conf.d"
    cp "$(dirname "$0")/../mosquitto/conf.d/cityops-queueing.conf" /etc/mosquitto/conf.d/
  fi
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  say "starting Mosquitto"
  mkdir -p /run/mosquitto && chown mosquitto: /run/mosquitto 2>/dev/null || true
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.2; done
fi
say "PostgreSQL and Mosquitto are up"
