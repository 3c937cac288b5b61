"""kill -9 of `pylog serve` under a producer's load, then a restart on the same data.

A confluent-kafka producer writes a stream of numbered records to three partitions;
the delivery report of an early acknowledgement SIGKILLs the server in the middle of
the stream (requests in flight, records queued), another thread starts it again on
the same data directory and port, and the producer goes on.  After the producer has
flushed, everything is read back and, per partition:

* every acknowledged record is there, once, at the offset its delivery report gave;
* no record is there twice, and the partition's order is the produce order.

A killed process keeps the page cache: what the server wrote before it died is still
in the files, so acks=1 and acks=all both promise that acknowledged records survive
(power loss, which drops unflushed pages, is the simulator's business).  Records that
were not acknowledged may or may not be there.  The duplicates rule is exact because
no send is ever retried blindly:

* acks=1 cannot be idempotent (idempotence needs acks=all), so the producer is told
  not to retry (``retries=0``): a batch whose answer was lost with the connection is
  reported failed, never sent again, hence never written twice;
* acks=all runs the idempotent producer: it retries until the restarted server
  answers, and the server, which rebuilds its producer state from the log when it
  recovers, writes a retried batch once.  Every record must then be acknowledged,
  and each partition must hold exactly what was produced, in order.

Whether a kill lands between a write and its answer is luck, so the last test makes
that case deterministic with raw requests: batches sent again to the restarted server
with the same producer id and sequence are answered with their first offsets and
written once.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional, Tuple

from confluent_kafka import KafkaError, Message, Producer

from pylog.protocol import ApiKey
from pylog.records import build_batch
from tests.server.clientdata import wait_for
from tests.server.test_confluent_kafka import create_topic, read_all
from tests.server.wire import call

PARTITIONS = 3
RECORDS = 6000
#: Records produced before the restart (the kill comes in the middle of them); the
#: rest are produced once the server is back.
BEFORE_RESTART = 4000
#: The server is killed once this many records are acknowledged.
KILL_AFTER_ACKS = 1500
#: Small segments: the stream rolls several, and recovery, which scans a segment's
#: whole preallocated file (about 2 s per default 1 GiB segment), stays short.
SERVER_ARGS = ("--override", "log.segment.bytes=262144", "--override", "log.index.size.max.bytes=8192")


def produce_through_a_kill(srv, topic: str, conf: Dict[str, object]
                           ) -> Tuple[List[bytes], Dict[int, Tuple[int, int]], Dict[int, KafkaError]]:
    """Produce RECORDS numbered values (record i to partition i % PARTITIONS); the
    delivery report of the KILL_AFTER_ACKS-th acknowledgement SIGKILLs the server while
    the first BEFORE_RESTART are being produced, another thread restarts it, and the
    rest are produced after the restart.
    Returns the values, {record: (partition, offset)} of the acknowledged ones and
    {record: error} of the failed ones."""
    values = [f"{topic}:{i:06d}".encode() for i in range(RECORDS)]
    acked: Dict[int, Tuple[int, int]] = {}
    failed: Dict[int, KafkaError] = {}
    killed = threading.Event()
    restarted = threading.Event()
    failure: List[BaseException] = []

    def restarter() -> None:
        try:
            if not killed.wait(60):
                raise AssertionError(f"only {len(acked)} records acknowledged in 60 s")
            part = srv.data_dir / f"{topic}-0"
            assert not (part / ".pylog_cleanshutdown").exists(), "the kill left a clean-shutdown marker"
            assert not (srv.data_dir / ".pylog_cleanshutdown").exists(), "the kill left a clean-shutdown marker"
            srv.restart()
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)
        finally:
            restarted.set()

    thread = threading.Thread(target=restarter, name="kill9-restart")
    thread.start()
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 2, "batch.num.messages": 50,
                  "message.timeout.ms": 60_000, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
                  **conf})

    def produce(i: int) -> None:
        def report(err: Optional[KafkaError], msg: Message) -> None:
            if err is None:
                acked[i] = (msg.partition(), msg.offset())
                if len(acked) == KILL_AFTER_ACKS:
                    srv.kill()  # SIGKILL, right here: later records are in flight or queued
                    killed.set()
            else:
                failed[i] = err
        while True:
            try:
                p.produce(topic, value=values[i], partition=i % PARTITIONS, on_delivery=report)
                break
            except BufferError:  # the local queue is full: wait for room
                p.poll(0.05)
        p.poll(0)

    try:
        for i in range(BEFORE_RESTART):
            produce(i)
        wait_for("the kill and restart", restarted.is_set, 90, lambda: p.poll(0.05))
        if failure:
            raise failure[0]
        for i in range(BEFORE_RESTART, RECORDS):
            produce(i)
        assert p.flush(90) == 0, "records still queued 90 s after the restart"
    finally:
        killed.set()
        thread.join(120)
    if failure:
        raise failure[0]
    assert len(acked) + len(failed) == RECORDS
    return values, acked, failed


def check_partitions(srv, topic: str, values: List[bytes], acked: Dict[int, Tuple[int, int]]) -> Dict[int, List[int]]:
    """The per-partition rules of the module docstring; returns partition -> the
    record numbers it holds, in offset order."""
    got = read_all(srv.bootstrap, topic, list(range(PARTITIONS)), timeout_s=60)
    number = {v: i for i, v in enumerate(values)}
    held: Dict[int, List[int]] = {p: [] for p in range(PARTITIONS)}
    at: Dict[Tuple[int, int], int] = {}
    for g in got:
        assert g.value in number, f"partition {g.partition} offset {g.offset} holds {g.value!r}, never produced"
        i = number[g.value]
        assert i % PARTITIONS == g.partition, f"record {i} is in partition {g.partition}"
        held[g.partition].append(i)
        at[(g.partition, g.offset)] = i
    for part, recs in held.items():
        assert len(set(recs)) == len(recs), f"partition {part} holds duplicates: " \
            f"{sorted(i for i in set(recs) if recs.count(i) > 1)[:10]}"
        assert recs == sorted(recs), f"partition {part} is out of produce order"
    lost = sorted(i for i, (part, off) in acked.items() if at.get((part, off)) != i)
    assert not lost, f"{len(lost)} acknowledged records are not at their offsets after the restart, e.g. " \
        f"{[(i, acked[i]) for i in lost[:5]]}"
    return held


def test_acks_1_records_survive_kill_9_once_and_in_order(start_server):
    srv = start_server(*SERVER_ARGS)
    topic = "kill9-acks1"
    create_topic(srv.bootstrap, topic, PARTITIONS)
    values, acked, failed = produce_through_a_kill(
        srv, topic, {"acks": "1", "enable.idempotence": False, "retries": 0})
    assert len(acked) >= KILL_AFTER_ACKS
    # what was produced after the restart went through
    assert not [i for i in failed if i >= BEFORE_RESTART], {i: str(e) for i, e in list(failed.items())[-3:]}
    check_partitions(srv, topic, values, acked)


def test_acks_all_idempotent_records_survive_kill_9_exactly(start_server):
    srv = start_server(*SERVER_ARGS)
    topic = "kill9-acksall"
    create_topic(srv.bootstrap, topic, PARTITIONS)
    values, acked, failed = produce_through_a_kill(srv, topic, {"acks": "all", "enable.idempotence": True})
    assert not failed, f"{len(failed)} records failed, e.g. {[str(e) for e in list(failed.values())[:3]]}"
    held = check_partitions(srv, topic, values, acked)
    for part in range(PARTITIONS):
        assert held[part] == list(range(part, RECORDS, PARTITIONS)), f"partition {part}"


def test_a_batch_retried_after_a_kill_9_is_written_once(start_server):
    """What makes the idempotent case exact, made deterministic with raw requests: a
    batch whose answer was lost with the killed server, sent again to the restarted
    one (same producer id, epoch and sequence), is answered with its first offset and
    not written again; the producer's next batch follows on."""
    srv = start_server(*SERVER_ARGS)
    bs, topic = srv.bootstrap, "kill9-retry"
    create_topic(bs, topic, 1)
    init = call(bs, ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout": 60_000})
    assert init.error_code == 0
    pid, epoch = init.producer_id, init.producer_epoch

    def send(values: List[bytes], seq: int) -> Tuple[int, int]:
        batch = build_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
        resp = call(bs, ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": -1, "timeout": 10_000, "topic_data": [
            {"name": topic, "partition_data": [{"index": 0, "records": batch}]}]})
        (row,) = resp.responses[0].partition_responses
        return row.error_code, row.base_offset

    assert send([b"a", b"b"], 0) == (0, 0)
    assert send([b"c"], 2) == (0, 2)
    srv.kill()
    srv.restart()
    # the producer did not see the last answers: it sends both batches again
    assert send([b"a", b"b"], 0) == (0, 0)
    assert send([b"c"], 2) == (0, 2)
    assert send([b"d"], 3) == (0, 3)
    got = [(g.offset, g.value) for g in read_all(bs, topic, [0])]
    assert got == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
