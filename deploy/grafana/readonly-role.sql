-- Read-only database role for Grafana. Run as the owner of the cityops tables, in the
-- cityops database, after the migrations (not a migration itself):
--   psql "$CITYOPS_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/grafana/readonly-role.sql
--   psql "$CITYOPS_DATABASE_URL" -c "ALTER ROLE cityops_grafana PASSWORD '...'"
-- Safe to run again. Every session of the role is read-only and has a statement timeout,
-- so a heavy dashboard query cannot hold the database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cityops_grafana') THEN
        CREATE ROLE cityops_grafana LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cityops_grafana', current_database());
END
$$;

ALTER ROLE cityops_grafana SET default_transaction_read_only = on;
ALTER ROLE cityops_grafana SET statement_timeout = '30s';
ALTER ROLE cityops_grafana CONNECTION LIMIT 20;

GRANT USAGE ON SCHEMA public TO cityops_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cityops_grafana;
-- Tables created later by the same owner (new migrations) are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cityops_grafana;
