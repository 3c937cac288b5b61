"""Raw Kafka requests to a test server, built and read with pylog's own codec.

For what no client shows: regression tests send one exact request, and the client tests
read the stored batches as they are on the wire (codec, producer id, sequence numbers)."""
from __future__ import annotations

from typing import Any, Dict, List

from pylog.protocol import ApiKey
from pylog.records import RecordBatch, iter_batches
from tests.server.rawclient import RawClient


def call(bootstrap: str, api_key: int, version: int, body: Dict[str, Any]) -> Any:
    """Send one request on a new connection and return the decoded answer."""
    with RawClient(bootstrap, timeout_s=15) as c:
        return c.call(api_key, version, body)


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    resp = call(bootstrap, ApiKey.CREATE_TOPICS, 5, {
        "timeout": 10_000, "validate_only": False,
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}]})
    assert resp.topics[0].error_code == 0, resp


def fetch_once(bootstrap: str, topic: str, partition: int, offset: int, max_bytes: int = 8 << 20) -> Any:
    """One Fetch v4 of one partition (no waiting): the partition's answer."""
    resp = call(bootstrap, ApiKey.FETCH, 4, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 0,
        "topics": [{"topic": topic, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                     "partition_max_bytes": max_bytes}]}]})
    return resp.responses[0].partitions[0]


def stored_batches(bootstrap: str, topic: str, partition: int) -> List[RecordBatch]:
    """Every batch of the partition below its high watermark, as stored."""
    out: List[RecordBatch] = []
    offset = 0
    while True:
        part = fetch_once(bootstrap, topic, partition, offset)
        assert part.error_code == 0, f"Fetch {topic}-{partition}@{offset}: error {part.error_code}"
        if offset >= part.high_watermark:
            return out
        batches = list(iter_batches(bytes(part.records or b"")))
        assert batches, f"Fetch {topic}-{partition}@{offset} returned nothing below the HW {part.high_watermark}"
        out += batches
        offset = batches[-1].next_offset
