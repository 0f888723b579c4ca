# Local stand-in for apicurio/apicurio-registry-mem:2.6.13.Final on a Debian JRE 17 base: the Quarkus
# distribution `make setup` fetched from Maven Central, run as upstream runs it (port 8080, REGISTRY_* and
# QUARKUS_* environment variables, /health/ready, curl for the healthcheck).
ARG BASE_IMAGE=k2-local/jre:17-bookworm
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 1001 apicurio && useradd --system --uid 1001 --gid 1001 --home-dir /deployments apicurio \
    && mkdir -p /var/lib/apicurio && chown apicurio:apicurio /var/lib/apicurio
COPY apicurio /deployments
USER 1001
WORKDIR /deployments
EXPOSE 8080
STOPSIGNAL SIGTERM
ENV JAVA_OPTS="-Xmx512m -XX:+UseG1GC -Djava.awt.headless=true -Dquarkus.http.host=0.0.0.0"
ENTRYPOINT ["/bin/sh", "-c", "exec java $JAVA_OPTS -jar /deployments/apicurio-registry-app-2.6.13.Final-runner.jar"]
