"""Concurrency and limits: in-order answers, slow and stalled clients, idle connections,
request floods, idle timeouts — measured on a real `pylog serve` process.

Resource bounds are asserted (bytes, memory), never time."""
from __future__ import annotations

import resource
import select
import socket
import struct
import time

import pytest

from pylog.protocol import ApiKey
from pylog.records import build_batch
from tests.server.rawclient import RawClient


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _create(c: RawClient, topic: str, partitions: int = 1) -> None:
    resp = c.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": topic, "num_partitions": partitions,
                                                      "replication_factor": 1, "assignments": [], "configs": []}],
                                          "timeout": 30000})
    assert resp.topics[0].error_code == 0


def _fetch_request(topic: str, offset: int = 0, max_wait_ms: int = 0, min_bytes: int = 1) -> dict:
    return {"replica_id": -1, "max_wait": max_wait_ms, "min_bytes": min_bytes, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": offset,
                                                        "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""}


def test_pipelined_requests_are_answered_in_order(server):
    with RawClient(server.bootstrap) as c:
        _create(c, "ordered")
        sent = []
        for i in range(60):
            kind = i % 3
            if kind == 0:
                sent.append((c.send(ApiKey.API_VERSIONS, 3, {"client_software_name": "t",
                                                            "client_software_version": "1"}), ApiKey.API_VERSIONS, 3))
            elif kind == 1:
                sent.append((c.send(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False,
                                                          "include_topic_authorized_operations": False}),
                             ApiKey.METADATA, 12))
            else:  # a long-poll fetch that waits: later requests must still answer after it
                sent.append((c.send(ApiKey.FETCH, 12, _fetch_request("ordered", max_wait_ms=50, min_bytes=10)),
                             ApiKey.FETCH, 12))
        for cid, key, version in sent:
            got, _ = c.recv(key, version)
            assert got == cid


def test_a_stalled_client_does_not_stall_others(server):
    with RawClient(server.bootstrap) as c:
        _create(c, "shared")
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(struct.pack(">i", 5000) + b"\x00\x03")  # half a request, then silence
    hog = RawClient(server.bootstrap)
    # a client that asks for data and never reads the answers
    batch = build_batch([b"x" * 1000] * 500)
    with RawClient(server.bootstrap) as p:
        for _ in range(20):
            resp = p.call(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": 1, "timeout": 30000,
                                              "topic_data": [{"name": "shared",
                                                              "partition_data": [{"index": 0, "records": batch}]}]})
            assert resp.responses[0].partition_responses[0].error_code == 0
    for _ in range(200):
        hog.send(ApiKey.FETCH, 12, _fetch_request("shared"))
    try:
        with RawClient(server.bootstrap, timeout_s=30) as other:
            for _ in range(20):
                resp = other.call(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False,
                                                        "include_topic_authorized_operations": False})
                assert [t.name for t in resp.topics if not t.is_internal] == ["shared"]
    finally:
        stalled.close()
        hog.close()


def test_thousands_of_idle_connections_cost_little(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = 2000
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    with RawClient(server.bootstrap) as c:  # warm up: every module loaded, one connection served
        c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
    before = _rss_bytes(server.pid)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
        with RawClient(server.bootstrap) as c:  # all accepted, and the server still answers
            resp = c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
            assert resp.error_code == 0
        after = _rss_bytes(server.pid)
    finally:
        for s in socks:
            s.close()
    per_connection = (after - before) / n
    assert per_connection < 48 * 1024, f"{per_connection:.0f} bytes of server memory per idle connection"


def test_a_request_flood_is_back_pressured(start_server):
    """A client that sends fetch after fetch and never reads the (large) answers: the
    server stops working for it once its answers pile up, then stops reading its
    requests, so TCP pushes back; memory stays bounded."""
    srv = start_server("--override", "queued.max.requests=16")
    with RawClient(srv.bootstrap) as c:
        _create(c, "flood")
        batch = build_batch([b"y" * 1000] * 900)  # ~0.9 MB, one fetch answer each
        for _ in range(4):
            r = c.call(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": 1, "timeout": 30000,
                                           "topic_data": [{"name": "flood", "partition_data": [
                                               {"index": 0, "records": batch}]}]})
            assert r.responses[0].partition_responses[0].error_code == 0
    from pylog.protocol import build_request, encode_request

    frame = encode_request(ApiKey.FETCH, 12, 1, "flood", build_request(ApiKey.FETCH, 12, _fetch_request("flood")))
    rss_before = _rss_bytes(srv.pid)
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read the answers
    s.setblocking(False)
    requests = 0
    try:
        while requests < 200_000:  # 200,000 answers would be 180 GB
            _, writable, _ = select.select([], [s], [], 3.0)
            if not writable:
                break  # the server stopped taking requests: back-pressure
            try:
                s.send(frame)  # a frame is ~100 bytes: sent whole or not at all here
                requests += 1
            except BlockingIOError:
                continue
        grown = _rss_bytes(srv.pid) - rss_before
    finally:
        s.close()
    # (the kernel's socket buffers on both sides take a few MB of requests; the server
    # itself holds at most queued.max.requests of them)
    assert requests < 200_000, "the server kept taking requests from a client that reads nothing"
    assert grown < 64 * 1024 ** 2, f"the server grew by {grown} bytes"
    # and it still answers others
    with RawClient(srv.bootstrap) as other:
        assert other.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t",
                                                   "client_software_version": "1"}).error_code == 0


def test_idle_connections_are_closed(start_server):
    srv = start_server("--override", "connections.max.idle.ms=300")
    with RawClient(srv.bootstrap) as c:
        c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
        port = c.local_port
        assert c.closed_by_server(timeout_s=30)
    deadline = time.monotonic() + 20
    while f"127.0.0.1:{port}" not in srv.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in srv.log_text().splitlines() if f"127.0.0.1:{port}" in x)
    assert "WARNING" in line and "connections.max.idle.ms" in line


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_serve_large_fetches_intact(start_server, loop):
    """The asyncio loop writes fetch answers with sendmsg from the mapping, uvloop with
    its own gather writes: both must deliver every byte."""
    srv = start_server("--event-loop", loop)
    with RawClient(srv.bootstrap) as c:
        _create(c, "big")
        batches = [build_batch([bytes([i]) * 1000] * 200) for i in range(8)]
        for b in batches:
            r = c.call(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": 1, "timeout": 30000,
                                           "topic_data": [{"name": "big", "partition_data": [
                                               {"index": 0, "records": b}]}]})
            assert r.responses[0].partition_responses[0].error_code == 0
        resp = c.call(ApiKey.FETCH, 12, {**_fetch_request("big"), "max_bytes": 64 << 20,
                                         "topics": [{"topic": "big", "partitions": [
                                             {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 64 << 20}]}]})
        records = bytes(resp.responses[0].partitions[0].records)
    from pylog.records import iter_records

    values = [r.value for r in iter_records(records)]
    assert values == [bytes([i]) * 1000 for i in range(8) for _ in range(200)]
    assert f"event loop {loop}" in srv.log_text()
