"""Server bugs that real clients showed, each reproduced with one raw request.

Every test names the client that found the bug; the request is built with pylog's own
codec (kio's schemas), sent over a plain socket to a real `pylog serve`, and the answer
decoded the same way, so the test needs no Kafka client."""
from __future__ import annotations

import socket
import struct
from typing import Any, Dict

from pylog.protocol import ApiKey, build_request, decode_response, encode_request
from pylog.records import build_batch, iter_batches


def _read_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"server closed the connection after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def call(bootstrap: str, api_key: int, version: int, body: Dict[str, Any], correlation_id: int = 1) -> Any:
    """Send one request on a new connection and return the decoded answer."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(encode_request(api_key, version, correlation_id, "regressions",
                                 build_request(api_key, version, body)))
        size = struct.unpack(">i", _read_exactly(s, 4))[0]
        cid, resp = decode_response(api_key, version, _read_exactly(s, size))
        assert cid == correlation_id
        return resp


def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    resp = call(bootstrap, ApiKey.CREATE_TOPICS, 5, {
        "timeout": 10_000, "validate_only": False,
        "topics": [{"name": topic, "num_partitions": partitions, "replication_factor": 1,
                    "assignments": [], "configs": []}]})
    assert resp.topics[0].error_code == 0, resp


def _produce(bootstrap: str, topic: str, batch: bytes, acks: int = -1) -> Any:
    return call(bootstrap, ApiKey.PRODUCE, 9, {
        "transactional_id": None, "acks": acks, "timeout": 10_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]})


def test_produce_request_larger_than_the_read_buffer_parses(server):
    """confluent-kafka (a ~1 MiB record): frames bigger than half the connection's
    256 KiB read buffer are received into a bytearray of their own, which kio's reader
    refused ("Received writable byte buffer where read-only was expected"): the server
    closed the connection and the producer retried until its message timed out."""
    value = bytes(range(256)) * 1024  # 256 KiB: takes the large-frame path
    _create_topic(server.bootstrap, "big-frame")
    resp = _produce(server.bootstrap, "big-frame", build_batch([value], keys=[b"k"]))
    (row,) = resp.responses[0].partition_responses
    assert row.error_code == 0 and row.base_offset == 0
    fetched = call(server.bootstrap, ApiKey.FETCH, 4, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": 4 << 20, "isolation_level": 0,
        "topics": [{"topic": "big-frame", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                           "partition_max_bytes": 4 << 20}]}]})
    records = fetched.responses[0].partitions[0].records
    (batch,) = list(iter_batches(records))
    (rec,) = list(batch.records())
    assert rec.key == b"k" and rec.value == value
