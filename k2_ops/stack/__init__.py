"""The local stack: real Kafka, Prometheus and Alertmanager as supervised processes on loopback."""

from k2_ops.stack.kafka import KafkaService
from k2_ops.stack.local import LocalStack, StackAlreadyRunning
from k2_ops.stack.ports import allocate_port
from k2_ops.stack.process import ManagedProcess, ServiceError, wait_until
from k2_ops.stack.prometheus import AlertmanagerService, PrometheusService

__all__ = [
    "AlertmanagerService",
    "KafkaService",
    "LocalStack",
    "ManagedProcess",
    "PrometheusService",
    "ServiceError",
    "StackAlreadyRunning",
    "allocate_port",
    "wait_until",
]
