# Local stand-in for prom/alertmanager:v0.25.0: Debian bookworm's prometheus-alertmanager package (0.25),
# laid out as the upstream image (ENTRYPOINT /bin/alertmanager, /etc/alertmanager, data /alertmanager,
# port 9093, wget for the healthcheck).
ARG BASE_IMAGE=k2-local/prometheus-base:2.42-bookworm
FROM ${BASE_IMAGE}
RUN ln -s /usr/bin/prometheus-alertmanager /usr/bin/alertmanager \
    && mkdir -p /alertmanager /etc/alertmanager && chown -R nobody:nogroup /alertmanager /etc/alertmanager
USER nobody
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
