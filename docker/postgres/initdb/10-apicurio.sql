-- Runs once, when the postgres-data volume is first initialised (docker-entrypoint-initdb.d).
-- POSTGRES_DB creates the `dagster` database; the schema registry (Apicurio, SQL storage) gets its own.
CREATE DATABASE apicurio;
