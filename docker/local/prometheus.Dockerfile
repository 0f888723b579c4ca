# Local stand-in for prom/prometheus:v2.42.0: Debian bookworm's prometheus package (2.42), laid out as the
# upstream image (ENTRYPOINT /bin/prometheus (bookworm's merged /usr), config /etc/prometheus/prometheus.yml, data /prometheus owned
# by nobody, port 9090, wget for the healthcheck).
ARG BASE_IMAGE=k2-local/prometheus-base:2.42-bookworm
FROM ${BASE_IMAGE}
RUN mkdir -p /prometheus /etc/prometheus && chown -R nobody:nogroup /prometheus /etc/prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
