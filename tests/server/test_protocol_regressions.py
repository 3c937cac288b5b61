"""Server bugs that real clients showed, each reproduced with one raw request.

Every test names the client that found the bug; the request is built with pylog's own
codec (kio's schemas), sent over a plain socket to a real `pylog serve`, and the answer
decoded the same way (tests/server/wire.py), so the test needs no Kafka client."""
from __future__ import annotations

from typing import Any

from pylog.protocol import ApiKey
from pylog.records import build_batch, iter_batches
from tests.server.wire import call, create_topic, fetch_once


def _produce(bootstrap: str, topic: str, batch: bytes, acks: int = -1) -> Any:
    return call(bootstrap, ApiKey.PRODUCE, 9, {
        "transactional_id": None, "acks": acks, "timeout": 10_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}]})


def test_produce_request_larger_than_the_read_buffer_parses(module_server):
    """confluent-kafka (a ~1 MiB record): frames bigger than half the connection's
    256 KiB read buffer are received into a bytearray of their own, which kio's reader
    refused ("Received writable byte buffer where read-only was expected"): the server
    closed the connection and the producer retried until its message timed out."""
    value = bytes(range(256)) * 1024  # 256 KiB: takes the large-frame path
    create_topic(module_server.bootstrap, "big-frame")
    resp = _produce(module_server.bootstrap, "big-frame", build_batch([value], keys=[b"k"]))
    (row,) = resp.responses[0].partition_responses
    assert row.error_code == 0 and row.base_offset == 0
    (batch,) = list(iter_batches(fetch_once(module_server.bootstrap, "big-frame", 0, 0).records))
    (rec,) = list(batch.records())
    assert rec.key == b"k" and rec.value == value


def test_list_offsets_answers_a_duplicated_partition_invalid_request(module_server):
    """confluent-kafka (offsets_for_times with one partition twice): each entry was
    answered on its own, and librdkafka, which matches answers by partition, reported
    the wrong offset.  Kafka answers every entry of a duplicated partition
    INVALID_REQUEST, and the other partitions normally."""
    bs = module_server.bootstrap
    create_topic(bs, "dup-list-offsets", 2)
    _produce(bs, "dup-list-offsets", build_batch([b"a", b"b"]))
    resp = call(bs, ApiKey.LIST_OFFSETS, 6, {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": "dup-list-offsets", "partitions": [
            {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -2},
            {"partition_index": 1, "current_leader_epoch": -1, "timestamp": -1},
            {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    rows = [(r.partition_index, r.error_code, r.offset) for r in resp.topics[0].partitions]
    assert rows == [(0, 42, -1), (1, 0, 0), (0, 42, -1)]


def test_join_group_errors_are_answered_before_v7(module_server):
    """confluent-kafka and kcat (librdkafka speaks JoinGroup v5; a consumer with
    group.instance.id): every JoinGroup error of v0-v6 failed to encode (protocol_name
    None, which those versions cannot carry), so the request was never answered and
    the connection hung.  Kafka answers protocol_name "" there."""
    for version in (0, 5, 6, 7):
        resp = call(module_server.bootstrap, ApiKey.JOIN_GROUP, version, {
            "group_id": f"join-error-v{version}", "session_timeout": 10, "rebalance_timeout": 1000,
            "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b""}]})
        assert resp.error_code == 26, (version, resp)  # INVALID_SESSION_TIMEOUT
        assert resp.protocol_name == ("" if version < 7 else None)
    resp = call(module_server.bootstrap, ApiKey.JOIN_GROUP, 5, {
        "group_id": "join-error-unknown", "session_timeout": 10_000, "rebalance_timeout": 1000,
        "member_id": "nobody", "group_instance_id": None, "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b""}]})
    assert resp.error_code == 25  # UNKNOWN_MEMBER_ID
