"""Fetch long-polling: a waiting Fetch is answered by the append that gives it enough
bytes (fetch.min.bytes), not by polling and not only at max.wait.ms."""
from __future__ import annotations

import select

from pylog.protocol import ApiKey
from pylog.records import build_batch, iter_records
from tests.server.rawclient import RawClient

FETCH_V = 12


def _create(c: RawClient, topic: str) -> None:
    r = c.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": 1, "replication_factor": 1,
                                                    "assignments": [], "configs": []}], "timeout": 30000})
    assert r.topics[0].error_code == 0


def _produce(c: RawClient, topic: str, values) -> None:
    r = c.call(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": 1, "timeout": 30000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": build_batch(values)}]}]})
    assert r.responses[0].partition_responses[0].error_code == 0


def _fetch(topic: str, offset: int, min_bytes: int, max_wait_ms: int) -> dict:
    return {"replica_id": -1, "max_wait": max_wait_ms, "min_bytes": min_bytes, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": offset,
                                                        "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""}


def _answered(c: RawClient, wait_s: float) -> bool:
    readable, _, _ = select.select([c.sock], [], [], wait_s)
    return bool(readable)


def test_a_waiting_fetch_wakes_on_append_and_honours_min_bytes(server):
    with RawClient(server.bootstrap, timeout_s=30) as consumer, RawClient(server.bootstrap) as producer:
        _create(producer, "waits")
        # max.wait.ms is far longer than the client's socket timeout: only the append
        # can answer this fetch in time.
        cid = consumer.send(ApiKey.FETCH, FETCH_V, _fetch("waits", 0, min_bytes=3000, max_wait_ms=120_000))
        _produce(producer, "waits", [b"small"])          # ~80 bytes: below min.bytes
        assert not _answered(consumer, 0.5), "answered below fetch.min.bytes"
        _produce(producer, "waits", [b"x" * 1000] * 3)   # now past 3000 bytes
        got, resp = consumer.recv(ApiKey.FETCH, FETCH_V)
        assert got == cid
        part = resp.responses[0].partitions[0]
        assert part.error_code == 0 and part.high_watermark == 4
        assert [r.value for r in iter_records(bytes(part.records))] == [b"small"] + [b"x" * 1000] * 3


def test_an_empty_fetch_is_answered_at_max_wait(server):
    with RawClient(server.bootstrap, timeout_s=30) as c:
        _create(c, "quiet")
        resp = c.call(ApiKey.FETCH, FETCH_V, _fetch("quiet", 0, min_bytes=1, max_wait_ms=200))
        part = resp.responses[0].partitions[0]
        assert part.error_code == 0 and part.high_watermark == 0 and not part.records


def test_fetch_limits_partition_and_response_bytes(server):
    with RawClient(server.bootstrap) as c:
        _create(c, "limits")
        for i in range(5):
            _produce(c, "limits", [bytes([65 + i]) * 1000] * 10)  # five batches of ~10 KB
        req = _fetch("limits", 0, min_bytes=1, max_wait_ms=0)
        req["topics"][0]["partitions"][0]["partition_max_bytes"] = 25_000
        part = c.call(ApiKey.FETCH, FETCH_V, req).responses[0].partitions[0]
        values = [r.value for r in iter_records(bytes(part.records))]
        assert values == [b"A" * 1000] * 10 + [b"B" * 1000] * 10  # two whole batches fit
        # the first batch comes whole even when it alone is above both limits (KIP-74)
        req = _fetch("limits", 0, min_bytes=1, max_wait_ms=0)
        req["max_bytes"] = 100
        req["topics"][0]["partitions"][0]["partition_max_bytes"] = 100
        part = c.call(ApiKey.FETCH, FETCH_V, req).responses[0].partitions[0]
        assert [r.value for r in iter_records(bytes(part.records))] == [b"A" * 1000] * 10
