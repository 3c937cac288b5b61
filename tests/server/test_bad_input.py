"""Bad input over the wire: each malformed frame closes that connection (or gets the
error code Kafka would send), logs a WARNING naming the client address and the
problem, changes no log, and leaves the server serving everyone else."""
from __future__ import annotations

import os
import struct
import time

import pytest

from pylog.protocol import ApiKey
from pylog.records import build_batch
from tests.server.rawclient import RawClient

PRODUCE_V = 9


def _wait_for_log(srv, text: str, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = srv.log_text()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log:\n{srv.log_tail()}")


def _produce(client: RawClient, topic: str, records: bytes, acks: int = 1):
    return client.call(ApiKey.PRODUCE, PRODUCE_V, {
        "transactional_id": None, "acks": acks, "timeout": 30000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]})


def _offsets(client: RawClient, topic: str):
    """(log start, high watermark) of partition 0 (one ListOffsets each: Kafka refuses a
    partition named twice in one request)."""
    out = []
    for t in (-2, -1):
        resp = client.call(ApiKey.LIST_OFFSETS, 6, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": topic, "partitions": [{"partition_index": 0, "timestamp": t}]}]})
        part = resp.topics[0].partitions[0]
        assert part.error_code == 0
        out.append(part.offset)
    return tuple(out)


@pytest.fixture
def topic_with_data(server):
    """A topic with three records written, and the bytes of its log segment."""
    with RawClient(server.bootstrap) as c:
        created = c.call(ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": "kept", "num_partitions": 1,
                                                             "replication_factor": 1, "assignments": [],
                                                             "configs": []}], "timeout": 30000})
        assert created.topics[0].error_code == 0
        resp = _produce(c, "kept", build_batch([b"one", b"two", b"three"]))
        assert resp.responses[0].partition_responses[0].error_code == 0
        assert _offsets(c, "kept") == (0, 3)
    return "kept"


def _segment_bytes(srv, topic):
    """The head of each segment file (the test's records are a few hundred bytes; the
    rest of a segment is space reserved for appends, all zeros)."""
    d = srv.data_dir / f"{topic}-0"
    out = {}
    for p in sorted(d.iterdir()):
        if p.suffix == ".log":
            with open(p, "rb") as f:
                out[p.name] = f.read(1 << 16)
    return out


BAD_FRAMES = [
    ("negative size", struct.pack(">i", -1), "a request of -1 bytes"),
    ("size above socket.request.max.bytes", struct.pack(">i", 200 * 1024 * 1024), "socket.request.max.bytes"),
    ("truncated body", struct.pack(">ihhih", 12, ApiKey.PRODUCE, PRODUCE_V, 1, -1) + b"\x00\x00",
     "does not parse"),
    ("unknown API key", struct.pack(">ihhih", 10, 999, 0, 1, -1), "unknown API key 999"),
    ("unsupported version", struct.pack(">ihhih", 10, ApiKey.METADATA, 77, 1, -1), "Metadata v77 is not supported"),
    ("garbage", struct.pack(">i", 40) + bytes(range(200, 240)), "closing connection"),
]


@pytest.mark.parametrize("what,frame,reason", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_malformed_frames_close_the_connection_and_change_nothing(server, topic_with_data, what, frame, reason):
    before = _segment_bytes(server, topic_with_data)
    with RawClient(server.bootstrap) as bad:
        bad.sock.sendall(frame)
        assert bad.closed_by_server(), f"{what}: the server kept the connection open"
        port = bad.local_port
    log = _wait_for_log(server, f"127.0.0.1:{port}")
    line = next(x for x in log.splitlines() if f"127.0.0.1:{port}" in x)
    assert "WARNING" in line and reason in line, line
    # the server still serves, and the topic is exactly as before
    with RawClient(server.bootstrap) as good:
        assert _offsets(good, topic_with_data) == (0, 3)
    assert _segment_bytes(server, topic_with_data) == before


def test_unsupported_api_versions_gets_kafkas_v0_answer(server):
    with RawClient(server.bootstrap) as c:
        frame = struct.pack(">hhih", ApiKey.API_VERSIONS, 42, 5, 4) + b"test" + b"\x00" + b"\x00"
        c.sock.sendall(struct.pack(">i", len(frame)) + frame)
        from pylog.protocol import decode_response

        cid, resp = decode_response(ApiKey.API_VERSIONS, 0, c.recv_frame())
        assert cid == 5 and resp.error_code == 35  # UNSUPPORTED_VERSION
        versions = {k.api_key: k.max_version for k in resp.api_keys}
        assert versions[ApiKey.API_VERSIONS] == 3
        # the connection stays usable: the client retries with a version pylog speaks
        assert c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t",
                                                "client_software_version": "1"}).error_code == 0


def test_corrupt_record_batch_gets_corrupt_message_and_writes_nothing(server, topic_with_data):
    before = _segment_bytes(server, topic_with_data)
    batch = bytearray(build_batch([b"four", b"five"]))
    batch[-1] ^= 0xFF  # the CRC no longer matches
    with RawClient(server.bootstrap) as c:
        part = _produce(c, topic_with_data, bytes(batch)).responses[0].partition_responses[0]
        assert part.error_code == 2  # CORRUPT_MESSAGE
        assert "crc" in (part.error_message or "").lower()
        port = c.local_port
        # the connection stays open and the next good batch is accepted
        ok = _produce(c, topic_with_data, build_batch([b"four"])).responses[0].partition_responses[0]
        assert (ok.error_code, ok.base_offset) == (0, 3)
        assert _offsets(c, topic_with_data) == (0, 4)
    line = next(x for x in _wait_for_log(server, f"127.0.0.1:{port}").splitlines() if f"127.0.0.1:{port}" in x)
    assert "WARNING" in line and "refused" in line
    after = _segment_bytes(server, topic_with_data)
    assert after[next(iter(after))].startswith(before[next(iter(before))].rstrip(b"\0"))


def test_acks_0_produce_error_closes_the_connection(server, topic_with_data):
    batch = bytearray(build_batch([b"x"]))
    batch[-1] ^= 0xFF
    with RawClient(server.bootstrap) as c:
        c.send(ApiKey.PRODUCE, PRODUCE_V, {
            "transactional_id": None, "acks": 0, "timeout": 30000,
            "topic_data": [{"name": topic_with_data, "partition_data": [{"index": 0, "records": bytes(batch)}]}]})
        assert c.closed_by_server()  # Kafka's way of telling an acks=0 producer
    with RawClient(server.bootstrap) as c:
        assert _offsets(c, topic_with_data) == (0, 3)


def test_random_frames_never_kill_the_server(server, topic_with_data):
    rng = __import__("random").Random(7)
    for _ in range(200):
        body = os.urandom(rng.randrange(0, 300)) if rng.random() < 0.5 else \
            struct.pack(">hhih", rng.choice(list(range(0, 70))), rng.randrange(0, 20), 1, -1) + \
            os.urandom(rng.randrange(0, 100))
        with RawClient(server.bootstrap, timeout_s=5) as c:
            c.sock.sendall(struct.pack(">i", len(body)) + body)
            c.sock.settimeout(0.2)
            try:
                c.sock.recv(65536)
            except OSError:
                pass
    assert server.proc.poll() is None
    with RawClient(server.bootstrap) as c:
        assert _offsets(c, topic_with_data) == (0, 3)
