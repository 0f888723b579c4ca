# Local stand-in for postgres:15-bookworm: Debian bookworm's postgresql-15 with the upstream image's
# interface (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_INITDB_ARGS, UTF8 databases, PGDATA=/var/lib/postgresql/data,
# /docker-entrypoint-initdb.d/*.sql and *.sh run once on an empty data folder, pg_isready on PATH, port 5432).
ARG BASE_IMAGE=k2-local/postgres-base:15-bookworm
FROM ${BASE_IMAGE}
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 700 /var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
