"""Server bugs that real clients showed, each reproduced with one raw request.

Every test names the client that found the bug; the request is built with pylog's own
codec (kio's schemas), sent over a plain socket to a real `pylog serve`, and the answer
decoded the same way (tests/server/wire.py), so the test needs no Kafka client."""
from __future__ import annotations

import asyncio
from typing import Any

from pylog.protocol import ApiKey, build_request, encode_request
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


def test_an_answer_that_cannot_be_made_closes_the_connection(tmp_path):
    """Found with the JoinGroup bug above: when the answer of a request that had waited
    (a future) could not be encoded, the error went to the event loop, the request
    never completed, and its connection stayed busy forever: no answer, no close, and
    every later request of the client queued behind it.  Now the connection is closed
    with the error logged, as a failing synchronous handler already did.  In-process,
    with a handler replaced by one whose answer kio cannot write."""
    from pylog.broker import Broker
    from pylog.server import KafkaServer, ServerConfig

    cfg = ServerConfig.from_settings({"listeners": "PLAINTEXT://127.0.0.1:0"}, data_dir=str(tmp_path / "data"))
    loop = asyncio.new_event_loop()
    broker = Broker.open(cfg.data_dir, dict(cfg.broker_settings))
    server = KafkaServer(cfg, broker, loop)
    try:
        loop.run_until_complete(server.start())
        port = server.bound[0][1].port

        def later(ctx: Any, req: Any) -> Any:
            fut = loop.create_future()
            loop.call_soon(fut.set_result, object())  # not a response
            return fut

        async def ask() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_request(ApiKey.API_VERSIONS, 3, 1, "regressions", build_request(
                ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})))
            try:
                return await asyncio.wait_for(reader.read(), 10)  # b"" once the server closes
            finally:
                writer.close()

        for handler in (later, lambda ctx, req: object()):
            server.apis._handlers[ApiKey.API_VERSIONS] = handler
            assert loop.run_until_complete(ask()) == b""
    finally:
        loop.run_until_complete(server.stop())
        broker.close()
        loop.close()
