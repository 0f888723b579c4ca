"""Apache Kafka (KRaft) run from the jars `make setup` caches: one node (default, fast) or a cluster of N
combined broker + controller nodes (a quorum of N) on loopback, optionally secured.

Security (`KafkaSecurity`):
- PLAINTEXT: no TLS, no authentication (the default local stack);
- SASL_SSL: clients and brokers authenticate with SCRAM-SHA-512 over TLS; the SCRAM users (the brokers'
  `admin` and the clients' user) are created at format time (`kafka-storage format --add-scram`), the
  certificates come from a per-run test CA (trustme, like the simulator's);
- MTLS: TLS with client certificates required (`ssl.client.auth=required`); brokers use their own.
The KRaft controller listener stays PLAINTEXT on 127.0.0.1 (quorum traffic only).

Invariants: every node of a cluster is formatted with the same cluster id; `stop()` then `start()` keeps
data and ports; secrets are written to files readable by the owner only and never logged; `client_env()`
names files (K2_KAFKA_SASL_PASSWORD_FILE), never the password itself.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from k2_ops.paths import KAFKA_VERSION, kafka_libs_dir
from k2_ops.stack.ports import allocate_port, port_in_use, start_on_fresh_ports
from k2_ops.stack.process import (
    ManagedProcess,
    ServiceError,
    SupervisedService,
    port_is_open,
    wait_until,
)

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

SCRAM_MECHANISM = "SCRAM-SHA-512"
# How long a node may still take to shut down once the controller quorum is gone (see KafkaService.stop).
QUORUM_LOST_GRACE_S = 5.0
BROKER_USER = "admin"
CLIENT_USER = "k2-streamer"


class KafkaSecurity(StrEnum):
    PLAINTEXT = "plaintext"
    SASL_SSL = "sasl_ssl"
    MTLS = "mtls"

    @property
    def protocol(self) -> str:
        """The security protocol of the client listener (librdkafka's security.protocol)."""
        return {"plaintext": "PLAINTEXT", "sasl_ssl": "SASL_SSL", "mtls": "SSL"}[self.value]


@dataclass(frozen=True)
class ClusterTimings:
    """Failure-detection times (seconds) of the brokers; scaled down for tests, Kafka's defaults otherwise."""

    broker_session_timeout_s: float = 9.0
    broker_heartbeat_interval_s: float = 2.0
    replica_lag_time_max_s: float = 30.0


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    broker_keystore: Path  # PKCS#12: private key + certificate chain
    client_cert: Path
    client_key: Path


@dataclass
class KafkaNode:
    home: Path
    name: str
    node_id: int
    port: int
    controller_port: int
    process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _node_properties(
    node: KafkaNode, data_dir: Path, nodes: list[KafkaNode], security: KafkaSecurity, tls: TlsFiles | None,
    timings: ClusterTimings, broker_password: str | None = None,
) -> str:
    replicas = len(nodes)
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
    lines = [
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=BROKER://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=BROKER://127.0.0.1:{node.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=BROKER",
        f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,BROKER:{security.protocol}",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        f"broker.session.timeout.ms={int(timings.broker_session_timeout_s * 1000)}",
        f"broker.heartbeat.interval.ms={int(timings.broker_heartbeat_interval_s * 1000)}",
        f"replica.lag.time.max.ms={int(timings.replica_lag_time_max_s * 1000)}",
    ]
    if tls is not None:
        lines += [
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={tls.broker_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls.ca}",
        ]
    if security is KafkaSecurity.SASL_SSL:
        assert broker_password is not None
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{BROKER_USER}" '
                f'password="{broker_password}";')
        lines += [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.broker.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}",
        ]
    if security is KafkaSecurity.MTLS:
        lines.append("ssl.client.auth=required")
    return "\n".join(lines) + "\n"


def node_process_name(service_name: str, node_id: int, brokers: int) -> str:
    """The process (log, PID file) name of a node: `<service>` alone, `<service>-<node id>` in a cluster."""
    return service_name if brokers == 1 else f"{service_name}-{node_id}"


def is_node_process(process_name: str, service_name: str = "kafka") -> bool:
    """Whether `process_name` is a node of KafkaService(name=service_name) (see node_process_name)."""
    return re.fullmatch(rf"{re.escape(service_name)}(-\d+)?", process_name) is not None


def stop_nodes(processes: list[ManagedProcess], grace_s: float = 15.0) -> None:
    """Stop the nodes of one cluster: SIGTERM to all at once, all within one `grace_s`.

    A broker's controlled shutdown waits for the controller quorum to approve it (Kafka waits up to 5
    minutes). Nodes stopped one after the other leave the last without a quorum; even at once, a node slower
    than the others can find the quorum gone when it asks. Once fewer than a majority of the nodes run, the
    rest can no longer be approved: they get QUORUM_LOST_GRACE_S to finish a shutdown already under way, then
    SIGKILL. Their data is in the page cache, and the next start recovers the log.
    """
    for process in processes:
        process.request_stop()
    majority = len(processes) // 2 + 1
    deadline = time.monotonic() + grace_s
    quorum_lost_at: float | None = None
    while running := [process for process in processes if process.is_running()]:
        now = time.monotonic()
        if len(running) < majority and quorum_lost_at is None:
            quorum_lost_at = now
        quorum_gone = quorum_lost_at is not None and now - quorum_lost_at >= QUORUM_LOST_GRACE_S
        if now >= deadline or quorum_gone:
            reason = ("no controller quorum is left to approve its shutdown" if quorum_gone
                      else f"still running {grace_s:.0f} s after SIGTERM")
            for process in running:
                log.warning("%s: %s; sending SIGKILL", process.name, reason)
                process.kill()
            break
        time.sleep(0.05)
    for process in processes:
        process.stop()  # reaps our child and removes the PID file


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints).
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(text)


@dataclass
class KafkaService(SupervisedService):
    """Kafka on free loopback ports: `brokers` nodes (1 or 3 ...), `security` as above.

    `stop()` then `start()` keeps data and ports (restart tests); single nodes can be stopped, killed,
    paused (SIGSTOP) and resumed for failure tests.
    """

    run_dir: Path
    port: int = 0
    controller_port: int = 0
    heap_mb: int = 512
    ready_timeout_s: float = 90.0
    name: str = "kafka"
    brokers: int = 1
    security: KafkaSecurity = KafkaSecurity.PLAINTEXT
    timings: ClusterTimings = field(default_factory=ClusterTimings)
    start_seconds: float | None = field(default=None, init=False)
    nodes: list[KafkaNode] = field(default_factory=list, init=False, repr=False)
    _given_ports: tuple[int, int] = field(default=(0, 0), init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.brokers <= 9:
            raise ValueError(f"brokers: {self.brokers}; allowed: 1 .. 9")
        self.security = KafkaSecurity(self.security)
        # Ports the caller gave (the first node's) are kept; the rest come from the ledger and may be chosen
        # again when one is taken before its broker binds it.
        self._given_ports = (self.port, self.controller_port)
        for index in range(self.brokers):
            # The single node keeps the historic layout: <run>/<name>, process <name>.
            home = self.home if self.brokers == 1 else self.home / f"node-{index + 1}"
            self.nodes.append(KafkaNode(home, node_process_name(self.name, index + 1, self.brokers), index + 1, 0, 0))
        self._choose_ports()

    def _choose_ports(self) -> bool:
        """Ports from the ledger for every node port the caller did not give; False when all were given."""
        given_port, given_controller = self._given_ports
        for index, node in enumerate(self.nodes):
            node.port = given_port if index == 0 and given_port else allocate_port()
            node.controller_port = given_controller if index == 0 and given_controller else allocate_port()
        self.port, self.controller_port = self.nodes[0].port, self.nodes[0].controller_port
        return not (given_port and given_controller and self.brokers == 1)

    # ---- addresses and client settings -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    @property
    def health_url(self) -> str:
        return f"tcp://{self.nodes[0].address}"

    @property
    def home(self) -> Path:
        return self.run_dir / self.name

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def tls(self) -> TlsFiles | None:
        if self.security is KafkaSecurity.PLAINTEXT:
            return None
        folder = self.home / "tls"
        return TlsFiles(folder / "ca.pem", folder / "broker.p12", folder / "client.pem", folder / "client.key")

    @property
    def client_password_file(self) -> Path:
        return self.secrets_dir / "client-password"

    def client_env(self) -> dict[str, str]:
        """K2_KAFKA_* settings a streamer (or any client of the project) needs for this cluster; files only."""
        env = {"K2_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
               "K2_KAFKA_SECURITY_PROTOCOL": self.security.protocol}
        tls = self.tls
        if tls is not None:
            env["K2_KAFKA_SSL_CA_LOCATION"] = str(tls.ca)
        if self.security is KafkaSecurity.SASL_SSL:
            env.update({"K2_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM, "K2_KAFKA_SASL_USERNAME": CLIENT_USER,
                        "K2_KAFKA_SASL_PASSWORD_FILE": str(self.client_password_file)})
        if self.security is KafkaSecurity.MTLS and tls is not None:
            env.update({"K2_KAFKA_SSL_CERTIFICATE_LOCATION": str(tls.client_cert),
                        "K2_KAFKA_SSL_KEY_LOCATION": str(tls.client_key)})
        if self.brokers >= 3:
            env.update({"K2_KAFKA_REPLICATION_FACTOR": "3", "K2_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "2"})
        return env

    def client_conf(self) -> dict[str, str]:
        """librdkafka settings for a test's own consumer or admin client (bootstrap servers included)."""
        from streamer.config import load_kafka_client_config

        env = self.client_env()
        return {**load_kafka_client_config(env).librdkafka(), "bootstrap.servers": env["K2_KAFKA_BOOTSTRAP_SERVERS"]}

    # ---- processes ---------------------------------------------------------------------------------------
    def _java_command(self, node: KafkaNode, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found: Kafka needs a Java 17 runtime (run `make setup`)")
        libs = kafka_libs_dir()
        if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            raise ServiceError(f"Kafka {KAFKA_VERSION} jars missing in {libs} (run `k2 setup`)")
        heap = self.heap_mb if self.brokers == 1 else min(self.heap_mb, 384)
        return [
            java,
            f"-Xmx{heap}m",
            f"-Xms{min(heap, 256)}m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",  # the C1 compiler only: faster start, enough speed for a test cluster
            "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main_class,
            *args,
        ]

    def _secrets(self) -> tuple[str | None, str | None]:
        """(broker password, client password), made once per run folder and kept in files."""
        if self.security is not KafkaSecurity.SASL_SSL:
            return None, None
        values = []
        for path in (self.secrets_dir / "broker-password", self.client_password_file):
            if not path.exists():
                _write_secret(path, secrets.token_urlsafe(18) + "\n")
            values.append(path.read_text().strip())
        return values[0], values[1]

    def _key_password(self) -> str:
        path = self.secrets_dir / "broker-key-password"
        if not path.exists():
            _write_secret(path, secrets.token_urlsafe(18) + "\n")
        return path.read_text().strip()

    def _make_tls(self) -> None:
        tls = self.tls
        if tls is None or tls.ca.exists():
            return
        import trustme

        tls.ca.parent.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="K2 Kafka test CA")
        broker = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert(CLIENT_USER)
        ca.cert_pem.write_to_path(str(tls.ca))
        # A PKCS#12 keystore: Java 17 cannot read an encrypted PKCS#8 PEM key (PBES2), and Kafka loads a PEM
        # keystore file only with an encrypted key.
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12

        key = serialization.load_pem_private_key(broker.private_key_pem.bytes(), password=None)
        chain = [x509.load_pem_x509_certificate(pem.bytes()) for pem in broker.cert_chain_pems]
        keystore = pkcs12.serialize_key_and_certificates(
            b"broker", key, chain[0], chain[1:] or None,  # type: ignore[arg-type]
            serialization.BestAvailableEncryption(self._key_password().encode()))
        tls.broker_keystore.touch(mode=0o600, exist_ok=True)
        tls.broker_keystore.write_bytes(keystore)
        client.cert_chain_pems[0].write_to_path(str(tls.client_cert))
        _write_secret(tls.client_key, client.private_key_pem.bytes().decode())

    def _prepare(self) -> list[Path]:
        """Write each node's config for this object's ports and format the storage once (same cluster id
        everywhere); a restart keeps the data."""
        self._make_tls()
        broker_password, client_password = self._secrets()
        cluster_id_file = self.home / "cluster-id"
        self.home.mkdir(parents=True, exist_ok=True)
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        configs = []
        for node in self.nodes:
            data_dir = node.home / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            config = node.home / "server.properties"
            # The broker's SCRAM password sits in its config (Kafka reads it there); owner-only like a secret.
            properties = _node_properties(node, data_dir, self.nodes, self.security, self.tls, self.timings,
                                          broker_password)
            if self.tls is not None:
                password = self._key_password()
                properties += f"ssl.keystore.password={password}\nssl.key.password={password}\n"
            _write_secret(config, properties)
            (node.home / "log4j2.properties").write_text(LOG4J2_CONFIG.format(log_file=node.home / "server.log"))
            configs.append(config)
            if (data_dir / "meta.properties").exists():
                continue
            scram: list[str] = []
            if broker_password is not None and client_password is not None:
                # --add-scram in a file argument would be nicer; StorageTool takes it on the command line,
                # which only our own process table sees (loopback test cluster).
                scram = [f"--add-scram={SCRAM_MECHANISM}=[name={BROKER_USER},password={broker_password}]",
                         f"--add-scram={SCRAM_MECHANISM}=[name={CLIENT_USER},password={client_password}]"]
            # `--cluster-id=` form: a random id may start with "-", which argparse would take for an option.
            command = self._java_command(node, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                                         f"--config={config}")
            formatter = ManagedProcess(f"{node.name}-format", command + scram, self.run_dir,
                                       shown_command=command + [f"--add-scram=<{len(scram)} users>"] * bool(scram))
            formatter.start()
            if formatter.wait(timeout_s=60) != 0:
                raise ServiceError(f"Kafka storage format failed for {node.name}:\n{formatter.log_tail()}")
            formatter.pid_path.unlink(missing_ok=True)
        return configs

    def start(self) -> float:
        """Start every node and wait until all brokers are listed; returns the start time in seconds. When a
        broker finds one of its ports taken, the cluster starts again on fresh ports (the ledger's)."""
        began = time.monotonic()
        fresh = not any((node.home / "data" / "meta.properties").exists() for node in self.nodes)

        def choose_again() -> bool:
            if fresh:  # formatted by this start for the old addresses: formatted again for the new ones
                for node in self.nodes:
                    shutil.rmtree(node.home / "data", ignore_errors=True)
            return self._choose_ports()

        start_on_fresh_ports(self.name, self._start_nodes, choose_again)
        self.start_seconds = time.monotonic() - began
        log.info("Kafka ready on %s (%d node(s), %s) in %.1f s", self.bootstrap_servers, self.brokers,
                 self.security.value, self.start_seconds)
        return self.start_seconds

    def _start_nodes(self) -> None:
        configs = self._prepare()
        logs = [node.home / "server.log" for node in self.nodes]
        offsets = [path.stat().st_size if path.exists() else 0 for path in logs]
        for node, config in zip(self.nodes, configs, strict=True):
            node.process = ManagedProcess(node.name, self._java_command(node, "kafka.Kafka", str(config)),
                                          self.run_dir)
            node.process.start()
        self._process = self.nodes[0].process

        def exited() -> str | None:
            reasons = [f"{n.name} {r}" for n in self.nodes if n.process and (r := n.process.exit_reason())]
            return "; ".join(reasons) or None

        try:
            wait_until(self.is_ready, self.ready_timeout_s, f"{self.name} on {self.bootstrap_servers}",
                       interval_s=0.2, abort=exited)
        except ServiceError as exc:
            self.stop()
            # Brokers log to server.log (log4j), not to the process log: a bind failure is found there.
            for node, path, offset in zip(self.nodes, logs, offsets, strict=True):
                with contextlib.suppress(OSError), path.open("rb") as server_log:
                    server_log.seek(offset)
                    text = server_log.read().decode(errors="replace")
                    if port_in_use(text):
                        raise ServiceError(f"{exc}; {node.name} could not listen: address already in use") from exc
            raise

    def stop(self, grace_s: float = 15.0) -> None:
        """Every node at once, within one `grace_s` (`stop_nodes`)."""
        stop_nodes([self._node_process(node) for node in self.nodes], grace_s)
        for node in self.nodes:
            node.process = None

    def is_running(self) -> bool:
        return any(self._node_process(node).is_running() for node in self.nodes)

    def is_ready(self) -> bool:
        if not all(port_is_open("127.0.0.1", node.port) for node in self.nodes):
            return False
        return self.broker_count() >= self.brokers

    def broker_count(self, timeout_s: float = 2.0) -> int:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**self.client_conf(), "socket.timeout.ms": int(timeout_s * 1000), "log_level": 0})
        return len(admin.list_topics(timeout=timeout_s).brokers)

    # ---- single nodes, for failure tests ----------------------------------------------------------------
    def _node_process(self, node: KafkaNode) -> ManagedProcess:
        return node.process or ManagedProcess(node.name, [], self.run_dir)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def node_pid(self, node_id: int) -> int:
        pid = self._node_process(self.node(node_id)).recorded_pid()
        if pid is None:
            raise ServiceError(f"{self.node(node_id).name} is not running")
        return pid

    def kill_node(self, node_id: int) -> None:
        """SIGKILL (kill -9) one node: no shutdown, no flush."""
        node = self.node(node_id)
        self.node_pid(node_id)  # raises when it is not running
        process = self._node_process(node)
        process.kill()
        process.pid_path.unlink(missing_ok=True)
        node.process = None

    def stop_node(self, node_id: int) -> None:
        """SIGTERM one node and wait for its controlled shutdown."""
        node = self.node(node_id)
        self._node_process(node).stop()
        node.process = None

    def start_node(self, node_id: int) -> None:
        """Start one node again (same data and ports) and wait until the cluster lists it."""
        node = self.node(node_id)
        config = node.home / "server.properties"
        node.process = ManagedProcess(node.name, self._java_command(node, "kafka.Kafka", str(config)), self.run_dir)
        node.process.start()
        wait_until(lambda: port_is_open("127.0.0.1", node.port), self.ready_timeout_s, f"{node.name} listening",
                   abort=node.process.exit_reason)

    def pause_node(self, node_id: int) -> None:
        """SIGSTOP one node: it keeps its sockets but answers nothing (a network partition of that broker)."""
        os.kill(self.node_pid(node_id), signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        os.kill(self.node_pid(node_id), signal.SIGCONT)

    def status(self) -> dict[str, object]:
        row = super().status()
        row["running"] = self.is_running()
        return row
