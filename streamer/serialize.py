"""Avro records in the Confluent wire format, with a bounded (LRU) cache of serializers per subject.

Wire format of every Kafka value: byte 0 = magic 0, bytes 1..4 = schema id (big-endian), then the record in
Avro binary encoding: the encoder written for its schema (streamer/avro.py), or fastavro's public
`schemaless_writer` for a schema without one (same bytes). Schema ids come from the Schema Registry client
(`confluent_kafka.schema_registry`); `mock://<name>` gives its in-process registry for tests and local mode.

Subjects follow the TopicNameStrategy: `<topic>-value`. A serializer (schema id + parsed schema) is cached per
subject in an LRU bounded by K2_SERIALIZER_CACHE_MAX_SIZE: the old streamer created one per message and grew
without bound. A miss registers the schema (the registry answers with the existing id when it already knows
it), which is a blocking HTTP call for a real registry, so the app warms the cache at start-up.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_writer

from streamer.avro import body_encoder
from streamer.config import RegistryAuth
from streamer.kinds import RECORDS
from streamer.redact import mask_credentials

MAGIC_BYTE = 0


@cache
def schema_text(record: str) -> str:
    """The Avro schema of a record the streamer writes: a stream kind's name, or "depthSnapshot"."""
    return resources.files("streamer.schemas").joinpath(RECORDS[record].schema_file).read_text()


def load_schema(record: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(record))
    return schema


def topic_for(prefix: str, record: str) -> str:
    return f"{prefix}.{RECORDS[record].topic_suffix}"


def subject_for(topic: str) -> str:
    return f"{topic}-value"


def make_registry_client(url: str, auth: RegistryAuth | None = None) -> Any:
    """A Schema Registry client; `mock://…` returns the library's in-process registry. `auth` adds basic
    auth and a CA (the configuration has taken any credentials out of the URL into `auth`)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = {"url": url}
    if not url.startswith("mock://"):
        conf.update((auth or RegistryAuth()).client_conf())
    return SchemaRegistryClient.new_client(conf)


def registry_failure(exc: Exception, url: str) -> str:
    """What went wrong talking to the registry, in words an operator acts on; never a password."""
    where = mask_credentials(url)
    status = getattr(exc, "http_status_code", None)
    if status in (401, 403):
        return (f"Schema Registry at {where} refused the credentials (HTTP {status}): check "
                "K2_SCHEMA_REGISTRY_BASIC_AUTH or K2_SCHEMA_REGISTRY_BASIC_AUTH_FILE")
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (f"Schema Registry at {where}: its TLS certificate is not trusted ({mask_credentials(str(exc))}); "
                "set K2_SCHEMA_REGISTRY_CA_LOCATION to the CA that signed it")
    return f"Schema Registry at {where}: {mask_credentials(str(exc))}"


def register_schema(client: Any, subject: str, schema: dict[str, Any]) -> int:
    from confluent_kafka.schema_registry import Schema

    return int(client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))


def wire_header(schema_id: int) -> bytes:
    return struct.pack(">bI", MAGIC_BYTE, schema_id)


def split_wire(value: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent-framed value; ValueError if it is not one."""
    if len(value) < 5 or value[0] != MAGIC_BYTE:
        raise ValueError("not in the Confluent wire format (magic byte 0 + 4-byte schema id)")
    return struct.unpack(">I", value[1:5])[0], value[5:]


def without_logical_types(schema: Any) -> Any:
    """The same schema minus logicalType annotations. Logical types do not change the binary encoding (a
    timestamp-millis is a long), but fastavro runs a Python conversion per annotated field when writing: the
    writer uses this copy (about 1.5 µs less per trade); the registry gets the annotated original."""
    if isinstance(schema, list):
        return [without_logical_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "logicalType" in schema and schema.get("type") in ("int", "long", "bytes", "fixed", "string"):
        return schema["type"] if schema["type"] in ("int", "long", "bytes", "string") else {
            k: v for k, v in schema.items() if k != "logicalType"}
    copy = dict(schema)
    if "fields" in copy:
        copy["fields"] = [{**f, "type": without_logical_types(f["type"])} for f in copy["fields"]]
    for key in ("items", "values"):
        if key in copy:
            copy[key] = without_logical_types(copy[key])
    if "type" in copy and isinstance(copy["type"], dict | list):
        copy["type"] = without_logical_types(copy["type"])
    return copy


class AvroSerializer:
    """Encodes records of one subject: header + schemaless Avro body."""

    __slots__ = ("_body", "_header", "_parsed", "schema_id", "subject")

    def __init__(self, subject: str, schema_id: int, schema: dict[str, Any]) -> None:
        self.subject = subject
        self.schema_id = schema_id
        writer_schema = without_logical_types(schema)
        self._parsed = parse_schema(writer_schema)
        # The encoder written for this schema (streamer/avro.py), or None: fastavro's generic writer.
        self._body = body_encoder(writer_schema)
        self._header = wire_header(schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._body is not None:
            return self._body(self._header, record)
        # fastavro's public schemaless_writer with the schema parsed once (it skips parsing a parsed schema).
        out = BytesIO()
        out.write(self._header)
        schemaless_writer(out, self._parsed, record)
        return out.getvalue()


class SerializerCache:
    """LRU of serializers per subject. `on_change(size, evicted)` feeds the metrics."""

    def __init__(
        self,
        registry: Any,
        max_size: int,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.registry = registry
        self.max_size = max_size
        self.evictions = 0
        self._entries: OrderedDict[str, AvroSerializer] = OrderedDict()
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subject: str) -> bool:
        return subject in self._entries

    def get(self, subject: str, schema: dict[str, Any]) -> AvroSerializer:
        serializer = self._entries.get(subject)
        if serializer is not None:
            self._entries.move_to_end(subject)
            return serializer
        serializer = AvroSerializer(subject, register_schema(self.registry, subject, schema), schema)
        self._entries[subject] = serializer
        evicted = 0
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
            evicted += 1
        self.evictions += evicted
        if self._on_change is not None:
            self._on_change(len(self._entries), evicted)
        return serializer


class RecordSerializer:
    """Record name (a stream kind, or "depthSnapshot") → (topic, serializer) for the streamer's fixed set of
    topics, through the LRU cache."""

    def __init__(self, cache: SerializerCache, topic_prefix: str) -> None:
        self.cache = cache
        self.topics = {record: topic_for(topic_prefix, record) for record in RECORDS}
        self._subjects = {record: subject_for(topic) for record, topic in self.topics.items()}
        self._schemas = {record: load_schema(record) for record in RECORDS}

    def serializer(self, stream: str) -> AvroSerializer:
        return self.cache.get(self._subjects[stream], self._schemas[stream])

    def encode(self, stream: str, record: dict[str, Any]) -> bytes:
        return self.cache.get(self._subjects[stream], self._schemas[stream]).encode(record)
