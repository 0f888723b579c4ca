"""The streamer on a three-broker SASL_SSL cluster (KRaft quorum of three, replication 3, min.insync.replicas 2)
through broker failures, each judged against the simulator's ground truth: 0 lost, 0 duplicated.

The produce pause of a row is measured by the brokers themselves: the trades topic is created with
LogAppendTime, and the pause is the longest gap between consecutive append times (all partitions) from 2 s
before the fault to the end. At 100 trades/s the gap without a fault is tens of milliseconds.

Time is a parameter: the brokers' failure detection is scaled down (session timeout 3 s, replica lag 5 s) and
the "two of three down for 30 s" row runs TWO_DOWN_SECONDS (same behaviour: buffer, back-pressure, recovery).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from k2_ops.polling import poll_until
from k2_ops.stack.kafka import CLIENT_USER, ClusterTimings, KafkaSecurity, KafkaService
from streamer.config import load_kafka_client_config
from streamer.sink import ensure_topics, topic_config
from tests.conftest import files_containing_secrets, remember_secret
from tests.streamer.conftest import StreamerProcess, wait_for
from tests.streamer.test_rotation_and_faults import SYMBOLS, settle_and_compare

pytestmark = pytest.mark.slow

TIMINGS = ClusterTimings(broker_session_timeout_s=3.0, broker_heartbeat_interval_s=0.5, replica_lag_time_max_s=5.0)
TWO_DOWN_SECONDS = 10.0  # the 30 s, scaled: the buffer fills in ~3 s at 100 trades/s either way
PAUSE_SECONDS = 2 * TIMINGS.broker_session_timeout_s  # SIGSTOP longer than the session timeout


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    """One cluster for the module (a start and a stop cost ~15 s each): every test uses its own topics, and
    `cluster` makes it whole again after each test."""
    service = KafkaService(tmp_path_factory.mktemp("cluster"), name="kafka-cluster", brokers=3,
                           security=KafkaSecurity.SASL_SSL, timings=TIMINGS)
    try:  # a start that fails its readiness wait leaves the nodes running: stopped here too
        service.start()
        for secret in service.secrets_dir.iterdir():
            remember_secret(secret.read_text().strip())
        yield service
    finally:
        service.stop()


@pytest.fixture
def cluster(shared_cluster: KafkaService) -> Iterator[KafkaService]:
    """The module's cluster; after the test every node runs again (a killed or stopped one restarted, a paused
    one resumed) and all three brokers are listed, so the next test starts from a whole cluster."""
    yield shared_cluster
    for node in shared_cluster.nodes:
        if not shared_cluster._node_process(node).is_running():
            shared_cluster.start_node(node.node_id)
        else:
            shared_cluster.resume_node(node.node_id)  # SIGCONT: a no-op unless a test left it stopped
    poll_until(lambda: shared_cluster.broker_count() == 3, 90, "all three brokers listed again", interval_s=0.5,
               error=AssertionError)


def _admin(cluster: KafkaService) -> AdminClient:
    return AdminClient({**cluster.client_conf(), "log_level": 0})


def _start(make_simulator: Any, make_streamer: Any, cluster: KafkaService, **env: Any) -> tuple[Any, StreamerProcess]:
    """Simulator + streamer on the cluster; the trades topic made first with LogAppendTime (pause measure)."""
    prefix = f"test.{uuid.uuid4().hex[:10]}"
    client = load_kafka_client_config(cluster.client_env())
    replicas = min(3, cluster.brokers)
    ensure_topics(cluster.bootstrap_servers, [f"{prefix}.trades"], 3, replicas, client=client,
                  config={**topic_config(min(2, replicas)), "message.timestamp.type": "LogAppendTime"})
    sim = make_simulator()
    settings = {**cluster.client_env(), "K2_KAFKA_TOPIC_PREFIX": prefix, **env}
    return sim, make_streamer(sim, cluster.bootstrap_servers, **settings)


def _topic(streamer: StreamerProcess) -> str:
    return streamer.env["K2_KAFKA_TOPIC_PREFIX"] + ".trades"


def _busiest_partition_leader(cluster: KafkaService, topic: str) -> tuple[int, int]:
    """(partition, leader node id) of the partition holding the most messages."""
    consumer = Consumer({**cluster.client_conf(), "group.id": f"probe-{uuid.uuid4().hex}", "log_level": 0})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        sizes = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        busiest = max(sizes, key=lambda p: sizes[p])
        return busiest, partitions[busiest].leader
    finally:
        consumer.close()


def _all_in_sync(cluster: KafkaService, topic: str) -> bool:
    info = _admin(cluster).list_topics(topic, timeout=5).topics[topic]
    return all(len(p.isrs) == 3 for p in info.partitions.values())


def _produce_pause_ms(cluster: KafkaService, topic: str, since_s: float) -> float:
    """Longest gap between consecutive broker append times (ms) from `since_s` (epoch seconds) on."""
    consumer = Consumer({**cluster.client_conf(), "group.id": f"pause-{uuid.uuid4().hex}", "log_level": 0,
                         "enable.auto.commit": False})
    times: list[int] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
        remaining = {p: end for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            times.append(msg.timestamp()[1])
            if msg.offset() + 1 >= remaining.get(msg.partition(), 0):
                remaining.pop(msg.partition(), None)
        assert not remaining, f"could not read {topic} to its end: {remaining}"
    finally:
        consumer.close()
    window = sorted(t for t in times if t >= (since_s - 2) * 1000)
    return float(max(b - a for a, b in itertools.pairwise(window)))


def _settle(streamer: StreamerProcess, sim: Any, cluster: KafkaService) -> dict[str, Any]:
    result = settle_and_compare(streamer, sim, cluster.bootstrap_servers, client=cluster.client_conf())
    assert result["metrics"].value("kafka_produce_errors_total") == 0
    return result


def _row(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"lost": result["missing_total"], "duplicated": result["duplicates_total"],
            "delivered": sum(result[s]["delivered"] for s in SYMBOLS), **extra}


def test_kill_9_of_the_busiest_partitions_leader(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, fault_report: dict[str, Any]
) -> None:
    sim, streamer = _start(make_simulator, make_streamer, cluster)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 300, 30, "deliveries before the kill")
    partition, leader = _busiest_partition_leader(cluster, _topic(streamer))
    fault_at = time.time()
    cluster.kill_node(leader)
    produced = streamer.metric("kafka_messages_produced_total")
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= produced + 300, 60, "deliveries after")
    result = _settle(streamer, sim, cluster)
    pause_ms = _produce_pause_ms(cluster, _topic(streamer), fault_at)
    fault_report["cluster_kill_9_leader"] = _row(result, produce_pause_ms=pause_ms, partition=partition,
                                                 killed_node=leader)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_rolling_restart_of_all_three_brokers_under_load(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, fault_report: dict[str, Any]
) -> None:
    """Each broker in turn: a controlled stop, 100 deliveries without it, its restart, and every replica back
    in sync before the next (~25 s for three)."""
    sim, streamer = _start(make_simulator, make_streamer, cluster)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 200, 30, "deliveries before the restarts")
    began = time.time()
    for node_id in (1, 2, 3):
        cluster.stop_node(node_id)
        produced = streamer.metric("kafka_messages_produced_total")
        wait_for(lambda before=produced: streamer.metric("kafka_messages_produced_total") >= before + 100, 60,
                 f"deliveries with node {node_id} down")
        cluster.start_node(node_id)
        # The next broker goes only once every replica is back in sync (min.insync.replicas 2 holds).
        poll_until(lambda: _all_in_sync(cluster, _topic(streamer)), 60, f"node {node_id} back in sync",
                   interval_s=0.2, error=AssertionError)
    result = _settle(streamer, sim, cluster)
    pause_ms = _produce_pause_ms(cluster, _topic(streamer), began)
    fault_report["cluster_rolling_restart"] = _row(result, produce_pause_ms=pause_ms)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_two_of_three_down_buffers_then_back_pressures_then_delivers_everything(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, fault_report: dict[str, Any]
) -> None:
    sim, streamer = _start(make_simulator, make_streamer, cluster, K2_MAX_BUFFERED_MESSAGES=300)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 200, 30, "deliveries before the outage")
    fault_at = time.time()
    cluster.kill_node(2)
    cluster.kill_node(3)
    down_at = time.monotonic()
    # acks=all cannot be met with one in-sync replica of three (min.insync.replicas 2): messages wait.
    wait_for(lambda: streamer.metric("streamer_backpressure_active") == 1, 30, "back-pressure on")
    status, body = streamer.get("/readyz")
    assert status == 503 and body["checks"]["kafka_accepting"]["ok"] is False
    assert "Kafka is not acknowledging writes" in body["checks"]["kafka_accepting"]["reason"]
    buffered = streamer.metric("kafka_producer_queue_messages")
    assert 300 <= buffered <= 310
    time.sleep(max(0.0, TWO_DOWN_SECONDS - (time.monotonic() - down_at)))  # the outage itself lasts this long
    assert streamer.metric("streamer_backpressure_active") == 1
    cluster.start_node(2)
    cluster.start_node(3)
    wait_for(lambda: streamer.metric("streamer_backpressure_active") == 0, 90, "back-pressure off")
    streamer.wait_ready(timeout_s=60)
    result = _settle(streamer, sim, cluster)
    pause_ms = _produce_pause_ms(cluster, _topic(streamer), fault_at)
    fault_report["cluster_two_of_three_down"] = _row(result, produce_pause_ms=pause_ms, down_seconds=TWO_DOWN_SECONDS,
                                                     buffered_at_peak=buffered)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_sigstop_of_a_leader_longer_than_the_session_timeout(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, fault_report: dict[str, Any]
) -> None:
    sim, streamer = _start(make_simulator, make_streamer, cluster)
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 300, 30, "deliveries before the stop")
    _, leader = _busiest_partition_leader(cluster, _topic(streamer))
    fault_at = time.time()
    cluster.pause_node(leader)
    try:
        # The controller fences the silent broker after the session timeout and moves its leaderships.
        poll_until(lambda: _busiest_partition_leader(cluster, _topic(streamer))[1] not in (leader, -1),
                   30, "leadership moved off the stopped broker", interval_s=0.2, error=AssertionError)
        time.sleep(max(0.0, PAUSE_SECONDS - (time.time() - fault_at)))
    finally:
        cluster.resume_node(leader)
    produced = streamer.metric("kafka_messages_produced_total")
    wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= produced + 300, 60, "deliveries after")
    result = _settle(streamer, sim, cluster)
    pause_ms = _produce_pause_ms(cluster, _topic(streamer), fault_at)
    fault_report["cluster_sigstop_leader"] = _row(result, produce_pause_ms=pause_ms, stopped_seconds=PAUSE_SECONDS,
                                                  stopped_node=leader)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_wrong_password_is_reported_retried_and_nothing_is_lost_after_the_fix(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, tmp_path: Path, fault_report: dict[str, Any]
) -> None:
    """Two failed topic checks (2 s each), the fix on the cluster, then librdkafka's reconnect and a settle
    against the ground truth (~25 s); the user's own password is restored for the module's next test."""
    wrong = f"wrong-{uuid.uuid4().hex[:12]}"
    remember_secret(wrong)
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text(wrong + "\n")
    # A short topic-check timeout: each failed attempt takes that long, and the test waits for two.
    sim, streamer = _start(make_simulator, make_streamer, cluster, K2_KAFKA_SASL_PASSWORD_FILE=str(wrong_file),
                           K2_KAFKA_ADMIN_TIMEOUT_SECONDS=2)

    def reported() -> dict[str, Any] | None:
        status, body = streamer.get("/readyz")
        reason = body["checks"]["kafka_reachable"]["reason"]
        return body if status == 503 and "authentication failed" in reason.lower() else None

    body = wait_for(reported, 30, "/readyz names the authentication failure")
    assert "SASL authentication error" in body["checks"]["kafka_reachable"]["reason"]
    wait_for(lambda: streamer.log_text().count("creating Kafka topics on") >= 2, 30, "topic creation retried")
    assert "Kafka authentication failed" in streamer.log_text()
    # The fix, on the cluster: the user's password becomes the one the streamer was deployed with.
    admin = _admin(cluster)
    upsert = UserScramCredentialUpsertion(CLIENT_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          wrong.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
    conf = {**cluster.client_conf(), "sasl.password": wrong}
    try:
        streamer.wait_ready(timeout_s=90)
        wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 200, 30, "deliveries after the fix")
        result = settle_and_compare(streamer, sim, cluster.bootstrap_servers, client=conf)
    finally:  # the module's cluster gets the user's own password back for the next test
        original = UserScramCredentialUpsertion(
            CLIENT_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
            cluster.client_password_file.read_text().strip().encode())
        admin = AdminClient({**conf, "log_level": 0})  # kept referenced until its futures are done
        for future in admin.alter_user_scram_credentials([original]).values():
            future.result(timeout=30)
    fault_report["cluster_wrong_password_then_fixed"] = _row(result)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0
    # Neither the wrong nor the right password in the streamer's log or the cluster's logs.
    assert not files_containing_secrets([streamer.log_path.parent, cluster.run_dir])


def test_untrusted_broker_certificate_is_reported_and_retried(
    make_simulator: Any, make_streamer: Any, cluster: KafkaService, tmp_path: Path
) -> None:
    stranger = tmp_path / "other-ca.pem"
    trustme.CA(organization_name="not the cluster's CA").cert_pem.write_to_path(str(stranger))
    sim, streamer = _start(make_simulator, make_streamer, cluster, K2_KAFKA_SSL_CA_LOCATION=str(stranger),
                           K2_KAFKA_ADMIN_TIMEOUT_SECONDS=2)

    def reported() -> str | None:
        status, body = streamer.get("/readyz")
        reason = body["checks"]["kafka_reachable"]["reason"]
        return reason if status == 503 and "TLS handshake failed" in reason else None

    reason = wait_for(reported, 30, "/readyz names the TLS failure")
    assert "certificate verify failed" in reason
    wait_for(lambda: streamer.log_text().count("creating Kafka topics on") >= 2, 30, "topic creation retried")
    assert streamer.metric("kafka_messages_produced_total") == 0
    # The fix is the right CA: the same cluster, a streamer trusting it, streams (rows above, and here).
    assert streamer.terminate() == 0
    fixed = make_streamer(sim, cluster.bootstrap_servers, **cluster.client_env(),
                          K2_KAFKA_TOPIC_PREFIX=streamer.env["K2_KAFKA_TOPIC_PREFIX"])
    fixed.wait_ready()
    wait_for(lambda: fixed.metric("kafka_messages_produced_total") >= 100, 30, "deliveries with the right CA")
    result = _settle(fixed, sim, cluster)
    assert result["missing_total"] == 0 and result["duplicates_total"] == 0


def test_streamer_streams_over_mutual_tls(
    make_simulator: Any, make_streamer: Any, tmp_path: Path, fault_report: dict[str, Any]
) -> None:
    """mTLS (client certificate required): the same client settings path as SASL_SSL minus SASL; one node
    is enough to prove the certificate reaches every client of the streamer (admin, producer)."""
    cluster = KafkaService(tmp_path / "mtls", name="kafka-mtls", brokers=1, security=KafkaSecurity.MTLS)
    try:
        cluster.start()
        sim, streamer = _start(make_simulator, make_streamer, cluster)
        streamer.wait_ready()
        wait_for(lambda: streamer.metric("kafka_messages_produced_total") >= 200, 30, "deliveries over mTLS")
        assert "SSL, CA " in streamer.log_text() and "client certificate" in streamer.log_text()
        result = _settle(streamer, sim, cluster)
        fault_report["mtls_streaming"] = _row(result)
        assert result["missing_total"] == 0 and result["duplicates_total"] == 0
    finally:
        cluster.stop()
