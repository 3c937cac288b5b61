"""pylog's Producer and Consumer over the network, against a real `pylog serve`.

Most tests share one server (module scope; each test uses its own topics and groups):
3 partitions per new topic, groups that start at once and accept 1 s sessions, and a
message.max.bytes of 200 kB so that an oversized record is cheap to make.  Tests that
stop or reconfigure a server start their own.  Nothing here waits on time: every wait
is a poll with a timeout until the expected state is there.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Dict, List, Tuple

import pytest

import pylog
from pylog.errors import NetworkException, RecordTooLarge, UnknownTopicOrPartition
from tests.server.serverproc import FAST, ServerProcess

PARTITIONS = 3
SERVER_ARGS = FAST + ["--override", f"num.partitions={PARTITIONS}",
                      "--override", "group.min.session.timeout.ms=1000",
                      "--override", "message.max.bytes=200000",
                      "--override", "offsets.topic.num.partitions=3"]
_names = itertools.count()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("netclients")
    s = ServerProcess(d / "data", d / "server.log", SERVER_ARGS).start()
    yield s
    try:
        s.stop(timeout_s=20)
    finally:
        s.kill()


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def consume_all(consumer: pylog.Consumer, n: int, timeout_s: float = 30.0) -> List[pylog.ConsumerRecord]:
    """Poll until ``n`` records came (or the time is up: then return what came)."""
    out: List[pylog.ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += consumer.poll(timeout=1.0)
    return out


def produce(bootstrap: str, topic: str, records: List[Tuple[bytes, bytes]], **settings) -> List[pylog.RecordMetadata]:
    with pylog.Producer(bootstrap, **settings) as p:
        futs = [p.send(topic, v, key=k) for k, v in records]
        p.flush(30)
        return [f.result(30) for f in futs]


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_keyed_keyless_and_headers(srv, codec):
    topic = fresh(f"rt-{codec}")
    sent = []
    with pylog.Producer(srv.bootstrap, compression_type=codec, linger_ms=20) as p:
        futs = []
        for i in range(300):
            key = None if i % 3 == 0 else b"key-%d" % (i % 7)
            headers = [("i", b"%d" % i), ("empty", None)] if i % 2 else None
            value = None if i == 5 else b"value-%d" % i
            futs.append(p.send(topic, value, key=key, headers=headers))
            sent.append((key, value, tuple(headers or ())))
        p.flush(30)
        metas = [f.result(30) for f in futs]
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        got = consume_all(c, len(sent))
    assert len(got) == len(sent)
    by_place = {(r.partition, r.offset): r for r in got}
    for (key, value, headers), m in zip(sent, metas):
        r = by_place[(m.partition, m.offset)]
        assert (r.key, r.value, r.headers) == (key, value, headers)
    # keyed records with the same key share a partition
    parts: Dict[bytes, set] = {}
    for (key, _, _), m in zip(sent, metas):
        if key is not None:
            parts.setdefault(key, set()).add(m.partition)
    assert all(len(s) == 1 for s in parts.values())


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks(srv, acks):
    topic = fresh("acks")
    values = [b"a%d" % i for i in range(200)]
    metas = produce(srv.bootstrap, topic, [(None, v) for v in values], acks=acks)
    if acks == 0:
        assert all(m.offset == -1 for m in metas)  # no answer, no offset
    else:
        assert sorted((m.partition, m.offset) for m in metas) == sorted(
            (p, o) for p in {m.partition for m in metas} for o in range(sum(m.partition == p for m in metas)))
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        got = consume_all(c, len(values))
    assert sorted(r.value for r in got) == sorted(values)


def test_poll_and_poll_arrays_return_exactly_what_was_produced_in_order(srv):
    topic = fresh("order")
    records = [(b"k%d" % (i % 11), b"v%06d" % i) for i in range(5000)]
    metas = produce(srv.bootstrap, topic, records, linger_ms=2, batch_size=4096)
    expected: Dict[int, List[Tuple[int, bytes, bytes]]] = {}
    for (k, v), m in zip(records, metas):
        expected.setdefault(m.partition, []).append((m.offset, k, v))
    for rows in expected.values():
        assert [o for o, _, _ in rows] == list(range(len(rows)))  # produced in send order

    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest", max_poll_records=123) as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        got = consume_all(c, len(records))
        assert c.poll(timeout=0.2) == []
    per: Dict[int, List[Tuple[int, bytes, bytes]]] = {}
    for r in got:
        per.setdefault(r.partition, []).append((r.offset, r.key, r.value))
    assert per == expected

    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        chunks = []
        deadline = time.monotonic() + 30
        while sum(len(a) for a in chunks) < len(records) and time.monotonic() < deadline:
            chunks.append(c.poll_arrays(max_records=1500, timeout=1.0))
        assert all(len(a) <= 1500 for a in chunks)
    per = {}
    for a in chunks:
        for p, off, k, v in zip(a.partition.tolist(), a.offsets.tolist(), a.keys(), a.values()):
            per.setdefault(p, []).append((off, k, v))
    assert per == expected


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_send_batch_over_the_network_idempotent(srv, codec):
    """send_batch's batches (encoded by the calling thread, stamped with the producer
    id and sequences by the sender) go over the wire as Produce requests: every record
    is stored once, at the offsets the future gives."""
    import numpy as np

    topic = fresh("batch")
    values = [b"value-%06d" % i for i in range(4000)]
    keys = [b"key-%d" % (i % 13) for i in range(4000)]
    buf = np.frombuffer(b"".join(values), dtype=np.uint8)
    lens = np.array([len(v) for v in values], dtype=np.int32)
    with pylog.Producer(srv.bootstrap, compression_type=codec, max_request_size=8192) as p:  # idempotent
        fut = p.send_batch(topic, buf, lengths=lens, keys=b"".join(keys), key_lengths=[len(k) for k in keys])
        offsets = fut.result(timeout=60)
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        got = consume_all(c, len(values))
    stored = {(r.partition, r.offset): (r.key, r.value) for r in got}
    assert len(stored) == len(values)
    assert {(int(p), int(o)): kv for p, o, kv in zip(fut.partitions, offsets, zip(keys, values))} == stored


# ----------------------------------------------------------------------------- idempotence
def test_idempotent_producer_survives_a_server_restart_and_writes_each_record_once(start_server):
    srv = start_server("--override", "num.partitions=2")
    topic = "restart"
    n_before, n_during = 300, 300
    with pylog.Producer(srv.bootstrap, linger_ms=1, retry_backoff_ms=50) as p:
        assert p.idempotent
        first = [p.send(topic, b"r%04d" % i, key=b"k%d" % (i % 5)) for i in range(n_before)]
        p.flush(30)
        assert srv.stop() == 0  # SIGTERM: clean shutdown
        # These are sent (and retried) while the server is away.
        second = [p.send(topic, b"r%04d" % i, key=b"k%d" % (i % 5)) for i in range(n_before, n_before + n_during)]
        srv.restart()
        p.flush(60)
        metas = [f.result(60) for f in first + second]
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0), (topic, 1)])
        got = consume_all(c, n_before + n_during)
        assert c.poll(timeout=0.5) == []
    values = [r.value for r in got]
    assert sorted(values) == [b"r%04d" % i for i in range(n_before + n_during)]  # each exactly once
    for part in (0, 1):  # and in send order within each partition
        mine = [r.value for r in got if r.partition == part]
        assert mine == sorted(mine)
    assert {(m.partition, m.offset) for m in metas} == {(r.partition, r.offset) for r in got}


# ----------------------------------------------------------------------------- groups
def test_group_of_two_with_rebalances_consumes_each_record_once_and_resumes(srv):
    topic, group = fresh("grp"), fresh("g")
    produce(srv.bootstrap, topic, [(None, b"a%d" % i) for i in range(300)])
    settings = dict(group_id=group, auto_offset_reset="earliest", session_timeout_ms=6000,
                    heartbeat_interval_ms=200, auto_commit_interval_ms=100_000)
    seen: List[Tuple[int, int]] = []
    c1 = pylog.Consumer(srv.bootstrap, **settings)
    c2 = pylog.Consumer(srv.bootstrap, **settings)
    try:
        c1.subscribe([topic])
        deadline = time.monotonic() + 30
        while not c1.assignment() and time.monotonic() < deadline:
            seen += [(r.partition, r.offset) for r in c1.poll(timeout=0.2, max_records=20)]
        assert len(c1.assignment()) == PARTITIONS
        c2.subscribe([topic])  # a second member joins: the group rebalances
        while (not c2.assignment() or len(seen) < 300) and time.monotonic() < deadline:
            for c in (c1, c2):
                seen += [(r.partition, r.offset) for r in c.poll(timeout=0.2, max_records=20)]
        assert c1.assignment() and c2.assignment()
        assert sorted(c1.assignment() + c2.assignment()) == [(topic, i) for i in range(PARTITIONS)]
        produce(srv.bootstrap, topic, [(None, b"b%d" % i) for i in range(300)])
        while len(seen) < 450 and time.monotonic() < deadline:
            for c in (c1, c2):
                seen += [(r.partition, r.offset) for r in c.poll(timeout=0.2, max_records=20)]
        c1.close()  # one leaves (committing): c2 takes over every partition
        while (len(c2.assignment()) < PARTITIONS or len(seen) < 600) and time.monotonic() < deadline:
            seen += [(r.partition, r.offset) for r in c2.poll(timeout=0.2, max_records=50)]
        assert len(c2.assignment()) == PARTITIONS
    finally:
        c1.close()
        c2.close()
    assert len(seen) == 600 and len(set(seen)) == 600  # every record exactly once
    # A restarted consumer of the group resumes from the committed offsets.
    produce(srv.bootstrap, topic, [(None, b"c%d" % i) for i in range(30)])
    with pylog.Consumer(srv.bootstrap, **settings) as c3:
        c3.subscribe([topic])
        got = consume_all(c3, 30)
        assert sorted(r.value for r in got) == sorted(b"c%d" % i for i in range(30))
        assert c3.poll(timeout=0.3) == []


def test_seek_offsets_for_times_and_committed(srv):
    topic, group = fresh("seek"), fresh("g")
    base = int(time.time() * 1000) - 100_000
    with pylog.Producer(srv.bootstrap) as p:
        for i in range(50):
            p.send(topic, b"s%d" % i, partition=0, timestamp=base + i * 1000)
        p.flush(30)
    tp = (topic, 0)
    with pylog.Consumer(srv.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([tp])
        assert c.committed([tp]) == {tp: None}
        c.seek(tp, 40)
        got = consume_all(c, 10)
        assert [r.offset for r in got] == list(range(40, 50))
        c.seek(tp, 3)
        assert c.poll(timeout=5, max_records=1)[0].value == b"s3"
        c.commit({tp: 7})
        assert c.committed([tp]) == {tp: 7}
        assert c.offsets_for_times({tp: base + 20_500}) == {tp: (21, base + 21_000)}
        assert c.offsets_for_times({tp: base + 999_999}) == {tp: None}
        assert c.beginning_offsets([tp]) == {tp: 0} and c.end_offsets([tp]) == {tp: 50}
        c.seek_to_end()
        assert c.position(tp) == 50
        c.seek_to_beginning([tp])
        assert c.poll(timeout=5, max_records=1)[0].offset == 0
    with pylog.Consumer(srv.bootstrap, group_id=group) as c:  # committed offset is where it starts
        c.assign([tp])
        assert c.poll(timeout=5, max_records=1)[0].offset == 7


# ----------------------------------------------------------------------------- Kafka's partitioner
def test_keys_land_where_kafka_clients_put_them(srv):
    from confluent_kafka import Consumer as CKConsumer, Producer as CKProducer, TopicPartition

    topic_a, topic_b = fresh("murmur-a"), fresh("murmur-b")
    keys = [b"key-%d" % i for i in range(200)] + [b"", b"\x00\xff" * 9, "ключ".encode()]
    # pylog produces; librdkafka (Java's murmur2 partitioner) reads where each key went
    metas = produce(srv.bootstrap, topic_a, [(k, k) for k in keys])
    pylog_part = {k: m.partition for k, m in zip(keys, metas)}
    ck = CKConsumer({"bootstrap.servers": srv.bootstrap, "group.id": fresh("ck"), "auto.offset.reset": "earliest"})
    try:
        ck.assign([TopicPartition(topic_a, i, 0) for i in range(PARTITIONS)])
        seen: Dict[bytes, int] = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(keys) and time.monotonic() < deadline:
            for m in ck.consume(500, timeout=1.0):
                assert m.error() is None
                seen[m.key() or b""] = m.partition()
    finally:
        ck.close()
    assert seen == pylog_part
    # librdkafka with Java's partitioner produces; pylog's partitioner agrees
    kp = CKProducer({"bootstrap.servers": srv.bootstrap, "partitioner": "murmur2_random"})
    kp.produce(topic_b, b"create")  # let the topic exist before keyed sends
    kp.flush(30)
    for k in keys:
        kp.produce(topic_b, key=k, value=k)
    assert kp.flush(30) == 0
    with pylog.Producer(srv.bootstrap) as p:
        n = len(p.partitions_for(topic_b))
    from pylog.client.partitioner import murmur2_partition

    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic_b, i) for i in range(n)])
        got = [r for r in consume_all(c, len(keys) + 1) if r.value != b"create"]
    assert len(got) == len(keys)
    # An empty key is hashed by librdkafka's murmur2_random only when not null; both
    # sides agree with pylog's murmur2 of the key bytes.
    assert {r.key or b"": r.partition for r in got} == {k: murmur2_partition(k, n) for k in keys}
    assert {k: murmur2_partition(k, n) for k in keys} == pylog_part


# ----------------------------------------------------------------------------- errors
def test_unknown_topic_is_a_clear_error_for_a_consumer(srv):
    with pylog.Consumer(srv.bootstrap, group_id=fresh("g")) as c:
        with pytest.raises(UnknownTopicOrPartition, match="no-such-topic"):
            c.subscribe(["no-such-topic"])
        with pytest.raises(UnknownTopicOrPartition):
            c.assign([("no-such-topic", 0)])


def test_unknown_partition_of_an_existing_topic(srv):
    topic = fresh("parts")
    produce(srv.bootstrap, topic, [(None, b"x")])
    with pylog.Producer(srv.bootstrap) as p:
        with pytest.raises(UnknownTopicOrPartition):
            p.send(topic, b"x", partition=PARTITIONS)
    with pylog.Consumer(srv.bootstrap) as c:
        with pytest.raises(UnknownTopicOrPartition, match="it has 3"):
            c.assign([(topic, PARTITIONS)])


def test_no_server_is_a_network_exception_naming_the_address():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for make in (lambda: pylog.Producer(f"127.0.0.1:{port}"), lambda: pylog.Consumer(f"127.0.0.1:{port}")):
        with pytest.raises(NetworkException, match=f"127.0.0.1:{port}") as info:
            make()
        assert info.value.retriable


def test_record_larger_than_message_max_bytes_is_record_too_large(srv):
    topic = fresh("big")
    with pylog.Producer(srv.bootstrap) as p:
        with pytest.raises(RecordTooLarge):
            p.send(topic, b"x" * 300_000, partition=0).result(30)
        # the refused batch did not break the partition's sequence numbers
        assert p.send(topic, b"small", partition=0).result(30).offset == 0


def test_bad_bootstrap_strings_are_invalid_config():
    from pylog.errors import InvalidConfig

    for bad in ("", "localhost", "host:port", "h:0", "h:70000"):
        with pytest.raises(InvalidConfig):
            pylog.Producer(bad)


def test_clients_share_nothing_across_threads_unsafely(srv):
    """Several threads send through one producer while its sender ships them."""
    topic = fresh("threads")
    with pylog.Producer(srv.bootstrap, linger_ms=1) as p:
        def worker(w: int) -> None:
            for i in range(300):
                p.send(topic, b"%d-%d" % (w, i), key=b"%d" % w)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush(30)
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, i) for i in range(PARTITIONS)])
        got = consume_all(c, 1200)
    assert len(got) == 1200
    for w in range(4):
        mine = [int(r.value.split(b"-")[1]) for r in got if r.key == b"%d" % w]
        assert mine == list(range(300))


# ----------------------------------------------------------------------------- lost answers
def _kill(*socks: socket.socket) -> None:
    for s in socks:  # shutdown first: a plain close does not end a recv in another thread
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


class AnswerDroppingProxy:
    """A TCP proxy in front of a server that forwards the ``drop_at``-th Produce request
    and then, instead of its answer, closes the client's connection: the write happened,
    the producer never hears of it."""

    def __init__(self, drop_at: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream: Tuple[str, int] = ("127.0.0.1", 0)
        self.drop_at = drop_at
        self.produces = 0
        self.dropped = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            doomed: List[int] = []  # correlation ids whose answer must not arrive
            threading.Thread(target=self._requests, args=(client, server, doomed), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, doomed), daemon=True).start()

    @staticmethod
    def _frame(s: socket.socket) -> bytes:
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise OSError("closed")
            head += chunk
        size = int.from_bytes(head, "big")
        body = b""
        while len(body) < size:
            chunk = s.recv(size - len(body))
            if not chunk:
                raise OSError("closed")
            body += chunk
        return head + body

    def _requests(self, client: socket.socket, server: socket.socket, doomed: List[int]) -> None:
        try:
            while True:
                frame = self._frame(client)
                if int.from_bytes(frame[4:6], "big") == 0:  # Produce
                    with self._lock:
                        self.produces += 1
                        if self.produces == self.drop_at:
                            doomed.append(int.from_bytes(frame[8:12], "big"))
                server.sendall(frame)
        except OSError:
            _kill(client, server)

    def _answers(self, server: socket.socket, client: socket.socket, doomed: List[int]) -> None:
        try:
            while True:
                frame = self._frame(server)
                if int.from_bytes(frame[4:8], "big") in doomed:
                    self.dropped += 1
                    raise OSError("answer dropped")
                client.sendall(frame)
        except OSError:
            _kill(client, server)

    def close(self) -> None:
        self.listener.close()


def test_a_lost_produce_answer_is_retried_and_written_once(start_server):
    proxy = AnswerDroppingProxy(drop_at=3)
    try:
        srv = start_server("--override", "num.partitions=1",
                           "--advertised-listeners", f"PLAINTEXT://127.0.0.1:{proxy.port}")
        proxy.upstream = ("127.0.0.1", srv.port)
        with pylog.Producer(f"127.0.0.1:{proxy.port}", linger_ms=0, retry_backoff_ms=20) as p:
            futs = []
            for i in range(20):
                futs.append(p.send("once", b"r%d" % i))
                p.flush(30)  # one batch per request: the third request's answer is lost
            metas = [f.result(30) for f in futs]
        assert proxy.dropped == 1
        assert [m.offset for m in metas] == list(range(20))  # the retry got the first write's offset
    finally:
        proxy.close()
    with pylog.Consumer(srv.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("once", 0)])
        got = consume_all(c, 20)
        assert c.poll(timeout=0.3) == []
        assert c.end_offsets([("once", 0)]) == {("once", 0): 20}
    assert [r.value for r in got] == [b"r%d" % i for i in range(20)]
