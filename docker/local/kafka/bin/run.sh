#!/bin/bash
# Entrypoint of the local Kafka image: the apache/kafka image's environment interface, then `exec` the
# broker (PID 1, so SIGTERM from `docker stop` reaches it).
set -euo pipefail
config=/opt/kafka/config/server.properties
: > "$config"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_LOG4J_OPTS|KAFKA_VERSION) continue ;;
    KAFKA_*) key=$(printf '%s' "${name#KAFKA_}" | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g' | tr '[:upper:]' '[:lower:]')
             printf '%s=%s\n' "$key" "$value" >> "$config" ;;
  esac
done < <(env)
log_dirs=$(sed -n 's/^log\.dirs=//p' "$config")
log_dirs=${log_dirs:-/tmp/kraft-combined-logs}
java_opts=(${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -XX:+UseG1GC -Djava.awt.headless=true
           -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties ${KAFKA_OPTS:-})
if [ ! -f "${log_dirs%%,*}/meta.properties" ]; then
  java -Xmx256m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*' \
    kafka.tools.StorageTool format --cluster-id="${CLUSTER_ID:?CLUSTER_ID is required}" --config="$config" --ignore-formatted
fi
exec java "${java_opts[@]}" -cp '/opt/kafka/libs/*' kafka.Kafka "$config"
