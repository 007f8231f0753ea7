#!/bin/bash
# First start of the database container only (an empty data directory): create the
# cityops database, its owner role and Grafana's read-only role, with the passwords from
# the environment, and the extensions that need a superuser. Runs as the postgres
# superuser through the image's /docker-entrypoint-initdb.d hook; `cityops db migrate`
# then creates the tables as the owner `cityops` (no superuser needed afterwards).
set -euo pipefail

: "${DB_OWNER_PASSWORD:?set DB_PASSWORD in deploy/compose/.env}"
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD in deploy/compose/.env}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
     -v owner_pw="$DB_OWNER_PASSWORD" -v grafana_pw="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE cityops LOGIN PASSWORD :'owner_pw';
-- `cityops db migrate` reads shared_preload_libraries to choose the storage mode; without
-- this a non-superuser's first migration stops ("must be superuser or have privileges of
-- pg_read_all_settings").
GRANT pg_read_all_settings TO cityops;
CREATE ROLE cityops_grafana LOGIN PASSWORD :'grafana_pw'
    NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 20;
ALTER ROLE cityops_grafana SET default_transaction_read_only = on;
ALTER ROLE cityops_grafana SET statement_timeout = '30s';
CREATE DATABASE cityops OWNER cityops;
SQL

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname cityops <<'SQL'
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS timescaledb;
GRANT CONNECT ON DATABASE cityops TO cityops_grafana;
GRANT USAGE ON SCHEMA public TO cityops_grafana;
-- Tables the migrations create later (as cityops) are readable by Grafana.
ALTER DEFAULT PRIVILEGES FOR ROLE cityops IN SCHEMA public
    GRANT SELECT ON TABLES TO cityops_grafana;
SQL
