"""The Schema Registry (Apicurio, Confluent API) against confluent-kafka's real client and Avro serde."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from k2_ops.stack.process import ServiceError, pid_alive
from k2_ops.stack.registry import SchemaRegistryService

# The local-stack budget for one service.
MAX_RSS_BYTES = 1024**3

TRADE_V1 = {
    "type": "record",
    "name": "Trade",
    "namespace": "k2.test",
    "fields": [{"name": "trade_id", "type": "long"}, {"name": "price", "type": "string"}],
}
# Adds a field with a default: readers of v2 can read v1 data (BACKWARD compatible).
QUANTITY = {"name": "quantity", "type": "string", "default": "0"}
TRADE_V2 = {**TRADE_V1, "fields": [*TRADE_V1["fields"], QUANTITY]}
# Drops a field that has no default: new readers read old data (BACKWARD), old ones fail (not FORWARD).
TRADE_WITHOUT_PRICE = {**TRADE_V1, "fields": [TRADE_V1["fields"][0]]}
# Changes a field's type: v1 data can no longer be read (incompatible).
TRADE_BROKEN = {**TRADE_V1, "fields": [{"name": "trade_id", "type": "string"}]}


def avro(schema: dict[str, object]) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistryService]:
    service = SchemaRegistryService(tmp_path_factory.mktemp("registry"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def client(registry: SchemaRegistryService) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def test_status_reports_the_ccompat_url_and_readiness(registry: SchemaRegistryService) -> None:
    status = registry.status()
    assert status == {"name": "schema-registry", "url": registry.url, "running": True, "ready": True}
    assert registry.url.startswith("http://127.0.0.1:")
    assert registry.url.endswith("/apis/ccompat/v7")


def test_register_returns_an_id_and_fetch_by_id_returns_the_schema(
    registry: SchemaRegistryService, client: SchemaRegistryClient
) -> None:
    schema_id = client.register_schema("register-trades-value", avro(TRADE_V1))
    assert isinstance(schema_id, int)
    assert schema_id > 0
    # Registering the same schema again is idempotent: same id, no new version.
    assert client.register_schema("register-trades-value", avro(TRADE_V1)) == schema_id

    # A fresh client has nothing cached, so this really asks the registry.
    fetched = SchemaRegistryClient({"url": registry.url}).get_schema(schema_id)
    assert fetched.schema_type == "AVRO"
    assert json.loads(fetched.schema_str) == TRADE_V1

    latest = client.get_latest_version("register-trades-value")
    assert (latest.subject, latest.version, latest.schema_id) == ("register-trades-value", 1, schema_id)


def test_unknown_schema_id_is_a_confluent_not_found_error(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaRegistryError) as error:
        client.get_schema(987_654)
    assert error.value.http_status_code == 404
    assert error.value.error_code == 40403  # Confluent's "schema not found"


def test_global_compatibility_starts_at_backward_like_confluent(client: SchemaRegistryClient) -> None:
    assert client.get_compatibility() == "BACKWARD"


def test_compatibility_accepts_evolution_and_rejects_breaking_changes(client: SchemaRegistryClient) -> None:
    subject = "compat-trades-value"
    v1_id = client.register_schema(subject, avro(TRADE_V1))

    assert client.test_compatibility(subject, avro(TRADE_V2)) is True
    assert client.test_compatibility(subject, avro(TRADE_BROKEN)) is False
    with pytest.raises(SchemaRegistryError) as error:
        client.register_schema(subject, avro(TRADE_BROKEN))
    assert error.value.http_status_code == 409

    v2_id = client.register_schema(subject, avro(TRADE_V2))
    assert v2_id != v1_id
    assert client.get_versions(subject) == [1, 2]

    # A subject-level level overrides the global BACKWARD one. (Apicurio treats a subject-level NONE as
    # "no subject rule", so the global level applies then, unlike Confluent: not relied on here.)
    assert client.test_compatibility(subject, avro(TRADE_WITHOUT_PRICE)) is True
    client.set_compatibility(subject, "FORWARD")
    assert client.get_compatibility(subject) == "FORWARD"
    assert client.test_compatibility(subject, avro(TRADE_WITHOUT_PRICE)) is False


def test_avro_serializer_round_trip_through_the_registry(
    registry: SchemaRegistryService, client: SchemaRegistryClient
) -> None:
    topic = "serde-trades"
    context = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, json.dumps(TRADE_V1))
    payload = serializer({"trade_id": 42, "price": "65000.10"}, context)

    schema_id = client.get_latest_version(f"{topic}-value").schema_id
    # Confluent wire format: magic byte 0, then the 4-byte big-endian schema id, then the Avro body.
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == schema_id
    # A fresh client knows nothing cached: the deserializer must fetch the writer schema by id.
    reader = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    assert reader(payload, context) == {"trade_id": 42, "price": "65000.10"}


def test_registry_stays_within_the_memory_budget(registry: SchemaRegistryService) -> None:
    pid = registry.pid()
    assert pid is not None
    assert psutil.Process(pid).memory_info().rss < MAX_RSS_BYTES


def test_stop_leaves_no_process_and_start_again_works(tmp_path: Path) -> None:
    service = SchemaRegistryService(tmp_path)
    service.start()
    pid = service.pid()
    assert pid is not None
    service.stop()
    assert not pid_alive(pid)
    assert service.status()["running"] is False
    assert not (tmp_path / "schema-registry.pid").exists()

    # Same port after a restart; storage is in memory, so the registry starts empty.
    service.start()
    try:
        assert SchemaRegistryClient({"url": service.url}).get_subjects() == []
    finally:
        service.stop()


def test_missing_distribution_says_to_run_k2_setup(tmp_path: Path) -> None:
    service = SchemaRegistryService(tmp_path, home=tmp_path / "not-fetched")
    with pytest.raises(ServiceError, match="run `k2 setup`"):
        service.start()
    assert not service.is_running()


def test_bad_settings_are_rejected_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default_compatibility"):
        SchemaRegistryService(tmp_path, default_compatibility="SIDEWAYS")
    with pytest.raises(ValueError, match="heap_mb"):
        SchemaRegistryService(tmp_path, heap_mb=16)
