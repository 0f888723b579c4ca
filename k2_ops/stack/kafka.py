"""A single-node Apache Kafka (KRaft, combined broker + controller) run from the jars `make setup` caches."""

from __future__ import annotations

import base64
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from k2_ops.paths import KAFKA_VERSION, kafka_libs_dir
from k2_ops.stack.process import ManagedProcess, ServiceError, SupervisedService, free_port, port_is_open

log = logging.getLogger(__name__)

LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """Broker + controller on loopback; replication factors of 1 because there is one node."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=24",
            "",
        ]
    )


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints).
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaService(SupervisedService):
    """Kafka on a free loopback port. `stop()` then `start()` keeps the data and the port (restart tests)."""

    run_dir: Path
    port: int = 0
    controller_port: int = 0
    heap_mb: int = 512
    ready_timeout_s: float = 90.0
    name: str = "kafka"
    start_seconds: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    @property
    def health_url(self) -> str:
        return f"tcp://{self.bootstrap_servers}"

    @property
    def home(self) -> Path:
        return self.run_dir / self.name

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found: Kafka needs a Java 17 runtime (run `make setup`)")
        libs = kafka_libs_dir()
        if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            raise ServiceError(f"Kafka {KAFKA_VERSION} jars missing in {libs} (run `make setup`)")
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",  # the C1 compiler only: faster start, enough speed for one node
            "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def _prepare(self) -> Path:
        """Write the config for this object's ports (a reused run folder may have had others) and format
        the storage once; a restart keeps the data."""
        config = self.home / "server.properties"
        data_dir = self.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(server_properties(data_dir, self.port, self.controller_port))
        (self.home / "log4j2.properties").write_text(LOG4J2_CONFIG.format(log_file=self.home / "server.log"))
        if (data_dir / "meta.properties").exists():
            return config
        formatter = ManagedProcess(
            f"{self.name}-format",
            # `--cluster-id=` form: a random id may start with "-", which argparse would take for an option.
            self._java_command(
                "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", f"--config={config}"
            ),
            self.run_dir,
        )
        formatter.start()
        if formatter.wait(timeout_s=60) != 0:
            raise ServiceError(f"Kafka storage format failed:\n{formatter.log_tail()}")
        formatter.pid_path.unlink(missing_ok=True)
        return config

    def start(self) -> float:
        """Start and wait until an AdminClient lists the cluster; returns the start time in seconds."""
        began = time.monotonic()
        config = self._prepare()
        self._launch(self._java_command("kafka.Kafka", str(config)))
        self.start_seconds = time.monotonic() - began
        log.info("Kafka ready on %s in %.1f s", self.bootstrap_servers, self.start_seconds)
        return self.start_seconds

    def is_ready(self) -> bool:
        if not port_is_open("127.0.0.1", self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 2000})
        metadata = admin.list_topics(timeout=2)
        return len(metadata.brokers) >= 1
