# Local stand-in for apache/kafka:4.1.1, built on a Debian JRE 17 base (k2 images build --local-bases).
# Same interface as the upstream image where compose.yaml uses it: KAFKA_* environment variables become
# server.properties entries (KAFKA_FOO_BAR -> foo.bar; ___ -> '-', __ -> '_'), CLUSTER_ID formats the KRaft
# storage on first start, KAFKA_HEAP_OPTS sets the heap, data under KAFKA_LOG_DIRS, and the healthcheck's
# /opt/kafka/bin/kafka-broker-api-versions.sh exists. Jars: the Kafka 4.1.1 runtime `make setup` fetched from
# Maven Central, plus kafka-tools for the healthcheck command.
ARG BASE_IMAGE=k2-local/jre:17-bookworm
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 1000 appuser && useradd --system --uid 1000 --gid 1000 --home-dir /opt/kafka appuser \
    && mkdir -p /opt/kafka/bin /opt/kafka/config /var/lib/kafka/data \
    && chown -R appuser:appuser /var/lib/kafka /opt/kafka/config
COPY libs /opt/kafka/libs
COPY bin /opt/kafka/bin
COPY log4j2.properties /opt/kafka/config/log4j2.properties
USER appuser
WORKDIR /opt/kafka
EXPOSE 9092
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/kafka/bin/run.sh"]
