#!/bin/bash
# The upstream image's script of the same name (compose.yaml's healthcheck runs it).
exec java -Xmx64m -XX:TieredStopAtLevel=1 -Xshare:auto -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp '/opt/kafka/libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
