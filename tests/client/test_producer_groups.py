"""The sender ships a partition's ready batches in one Broker.produce_many call (at most
max.request.size bytes of them), and a batch refused in such a call goes on alone with
the retry policy, the batches behind it after it, in order and exactly once."""
from __future__ import annotations

import itertools
from typing import Any, List, Optional, Tuple

import pytest

import pylog
from pylog import errors

VALUE = b"x" * 90


class Calls:
    """A broker wrapper that records each produce_many call's payload sizes, and each
    produce call; ``refuse``: (call number, payload index, error) makes that produce_many
    call write the payloads before the index and answer the error for it."""

    def __init__(self, broker: Any, refuse: Optional[Tuple[int, int, Exception]] = None) -> None:
        self.broker = broker
        self.refuse = refuse
        self.many: List[List[int]] = []
        self.single = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        self.single += 1
        return self.broker.produce(*args, **kwargs)

    def produce_many(self, topic: str, partition: int, payloads: List[Any], **kwargs: Any) -> Any:
        self.many.append([len(p) for p in payloads])
        if self.refuse is not None and self.refuse[0] == len(self.many) - 1:
            _, k, error = self.refuse
            results, _ = self.broker.produce_many(topic, partition, payloads[:k], **kwargs) if k else ([], None)
            return results, error
        return self.broker.produce_many(topic, partition, payloads, **kwargs)


def values_in(broker: Any, partition: int) -> List[bytes]:
    return [r.value for r in broker.partition("t", partition).log.records()]


def send_lingering(p: Any, n: int, partitions: int) -> List[Any]:
    """``n`` records round the partitions, all ready before the sender ships any (they
    linger until flush)."""
    futs = [p.send("t", VALUE + b"%d" % i, partition=i % partitions) for i in range(n)]
    p.flush()
    return futs


def test_a_partition_s_ready_batches_ship_in_one_call_in_order(broker):
    broker.create_topic("t", 2)
    conn = Calls(broker)
    with pylog.Producer(conn, linger_ms=60_000, batch_size=1000) as p:
        futs = send_lingering(p, 400, 2)
    assert max(len(c) for c in conn.many) > 5  # grouped: a call carried several batches
    assert conn.single == 0
    for part in range(2):
        sent = [VALUE + b"%d" % i for i in range(part, 400, 2)]
        assert values_in(broker, part) == sent
        assert [f.result().offset for f in futs[part::2]] == list(range(200))


def test_a_call_carries_at_most_max_request_size_bytes(broker):
    broker.create_topic("t", 1)
    conn = Calls(broker)
    with pylog.Producer(conn, linger_ms=60_000, batch_size=1000, max_request_size=4000) as p:
        send_lingering(p, 300, 1)
    assert conn.many and all(sum(sizes) <= 4000 for sizes in conn.many)
    assert max(len(sizes) for sizes in conn.many) >= 3
    assert len(values_in(broker, 0)) == 300


@pytest.mark.parametrize("at", [0, 2])
def test_a_batch_refused_retriably_goes_again_and_those_behind_it_follow(broker, at):
    broker.create_topic("t", 1)
    conn = Calls(broker, refuse=(0, at, errors.NotEnoughReplicas("injected")))
    with pylog.Producer(conn, linger_ms=60_000, batch_size=1000, retry_backoff_ms=0) as p:
        futs = send_lingering(p, 100, 1)
    assert len(conn.many[0]) > at + 2  # the refused batch had batches behind it
    assert conn.single >= 1  # the refused one (and those behind it) went alone
    assert values_in(broker, 0) == [VALUE + b"%d" % i for i in range(100)]  # exactly once, in order
    assert [f.result().offset for f in futs] == list(range(100))


def test_a_batch_refused_for_good_fails_alone_and_those_behind_it_are_written(broker):
    """The batches behind a refused one were numbered (idempotence) but not written:
    they are numbered again, so no gap makes the broker refuse them as out of order."""
    broker.create_topic("t", 1)
    conn = Calls(broker, refuse=(0, 1, errors.InvalidRecord("injected")))
    with pylog.Producer(conn, linger_ms=60_000, batch_size=1000, retry_backoff_ms=0) as p:
        futs = send_lingering(p, 100, 1)
    assert len(conn.many[0]) > 3
    failed = [i for i, f in enumerate(futs) if f.exception() is not None]
    assert failed and all(isinstance(futs[i].exception(), errors.InvalidRecord) for i in failed)
    assert failed == list(range(failed[0], failed[-1] + 1))  # one batch's records
    written = [VALUE + b"%d" % i for i in range(100) if i not in set(failed)]
    assert values_in(broker, 0) == written
    assert [f.result().offset for i, f in enumerate(futs) if i not in set(failed)] == list(range(len(written)))


def test_an_oversized_batch_in_a_call_is_split_and_the_rest_go_on(broker):
    """A real refusal (RecordTooLarge from max.message.bytes): the batch is halved as
    Kafka's producer does, and the batches behind it are still written, in order."""
    broker.create_topic("t", 1, config={"max.message.bytes": 1000})
    conn = Calls(broker)
    values = [b"s%d" % i for i in range(20)] + [b"b" * 500, b"b" * 500] + [b"t%d" % i for i in range(20)]
    with pylog.Producer(conn, linger_ms=60_000, batch_size=1100, retry_backoff_ms=0) as p:
        futs = [p.send("t", v, partition=0) for v in values]
        p.flush()
    assert any(len(c) > 1 for c in conn.many)
    assert [f.result().offset for f in futs] == list(range(len(values)))
    assert values_in(broker, 0) == values


# ------------------------------------------------- where one batch ends and the next begins
RECORD = 100  # bytes a record of VALUE (90) + a 10-byte suffix counts with its 14 of overhead (+ 0 key)


def counted(value: bytes, key: bytes = b"") -> int:
    return len(value) + len(key) + 14


def test_a_record_that_would_take_a_batch_over_batch_size_starts_the_next(broker):
    """Keyed records (one partition): each batch is as full as batch.size lets it be, and
    sending costs one trip through Python per batch, not two (C hands the record that
    does not fit to Python, which seals the full batch and opens the next with it)."""
    broker.create_topic("t", 1)
    size = 61 + 10 * counted(VALUE + b"000000", b"k") + 50  # room for 10 records, not 11
    values = [VALUE + b"%06d" % i for i in range(95)]
    with pylog.Producer(broker, linger_ms=60_000, batch_size=size) as p:
        futs = [p.send("t", v, key=b"k") for v in values]
        p.flush()
        fallbacks = len(values) - p._send_path.fast_sends
    batches = broker.partition("t", 0).log.read(0, 1 << 30)
    assert [b.record_count for b in batches] == [10] * 9 + [5]
    assert fallbacks == len(batches)  # each batch's first record, and no other
    assert [f.result().offset for f in futs] == list(range(95))


@pytest.mark.parametrize("slack", [50, 0])
def test_the_keyless_record_that_does_not_fit_moves_on_with_a_new_batch(broker, slack):
    """KIP-480's sticky partitioner: a full batch is sealed and the keyless record that did
    not fit starts a batch on another partition, in the same trip through Python.  (With
    no slack the tenth record fills the batch exactly: it is sealed at once, and the
    eleventh, counted against its new partition, moves on.)"""
    broker.create_topic("t", 4)
    size = 61 + 10 * counted(VALUE + b"000000") + slack
    values = [VALUE + b"%06d" % i for i in range(200)]
    with pylog.Producer(broker, linger_ms=60_000, batch_size=size) as p:
        futs = [p.send("t", v) for v in values]
        p.flush()
        fallbacks = len(values) - p._send_path.fast_sends
    metas = [f.result() for f in futs]
    runs = [len(list(g)) for _, g in itertools.groupby(m.partition for m in metas)]
    assert runs == [10] * 20  # ten records a batch, then another partition
    assert all(a.partition != b.partition for a, b in zip(metas[::10], metas[10::10]))
    assert fallbacks == (20 if slack else 40)
    got = sorted(r.value for part in range(4) for r in broker.partition("t", part).log.records())
    assert got == sorted(values)


def test_with_room_short_credit_is_shared_so_records_stay_in_c(broker):
    """Keyed records over four partitions with buffer.memory nearly used: each open batch
    holds a share of what is free, not one batch all of it (which sent nearly every
    record of the other partitions through Python, each taking the credit back)."""
    broker.create_topic("t", 4)
    n = 600
    record = counted(VALUE + b"000", b"0")
    with pylog.Producer(broker, linger_ms=60_000, batch_size=1 << 20, buffer_memory=n * record + 2000,
                        max_block_ms=0) as p:
        futs = [p.send("t", VALUE + b"%03d" % i, partition=i % 4) for i in range(n)]
        fallbacks = n - p._send_path.fast_sends
        p.flush()
    assert fallbacks < n // 10, fallbacks
    assert [f.result().offset for f in futs] == [i // 4 for i in range(n)]
