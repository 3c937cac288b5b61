"""Broker.produce_many / Partition.append_many: several payloads for one partition in one
call give what a produce of each in turn gives (results, first error, log, producer
state), whatever the payloads are."""
from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylog
from pylog.errors import (CorruptRecordError, InvalidArgument, InvalidRequiredAcks, OutOfOrderSequence, PylogError,
                          RecordTooLarge, UnknownTopicOrPartition)
from pylog.records import build_batch
from tests.conftest import SMALL

PID = 7
NOW = int(time.time() * 1000)
MAX_MESSAGE_BYTES = 4096

KINDS = ["next", "next", "next", "dup_prev", "gap", "plain", "oversize", "corrupt", "epoch_bump", "zstd",
         "two_batches"]


def _payloads(kinds, sizes):
    """Payload bytes for ``kinds``: an idempotent producer's batches in sequence, with
    the anomalies a test wants among them."""
    out = []
    seq, epoch = 0, 0
    last_idem = None
    for kind, n in zip(kinds, sizes):
        values = [b"v%d-%d" % (len(out), i) for i in range(n)]
        ts = NOW - len(out) * 7919 % 5000  # not in order: the state keeps the largest
        if kind == "dup_prev" and last_idem is not None:
            out.append(last_idem)
            continue
        if kind == "epoch_bump":
            epoch, seq = epoch + 1, 0
        if kind == "plain":
            out.append(build_batch(values, base_timestamp=ts))
            continue
        if kind == "two_batches":
            first = build_batch(values, base_timestamp=ts, producer_id=PID, producer_epoch=epoch,
                                base_sequence=seq)
            second = build_batch(values, base_timestamp=ts, producer_id=PID, producer_epoch=epoch,
                                 base_sequence=seq + n)
            seq += 2 * n
            out.append(first + second)
            continue
        if kind == "oversize":
            values[0] = b"x" * MAX_MESSAGE_BYTES
        data = build_batch(values, base_timestamp=ts, producer_id=PID, producer_epoch=epoch,
                           base_sequence=seq + (3 if kind == "gap" else 0),
                           compression="zstd" if kind == "zstd" else "none")
        if kind == "corrupt":
            data = bytearray(data)
            data[-1] ^= 0x55
            data = bytes(data)
        seq += n + (3 if kind == "gap" else 0)
        last_idem = data
        out.append(data)
    return out


def _state(broker):
    p = broker.partition("t", 0)
    batches = [bytes(b.buffer) for b in broker.fetch("t", 0, 0, max_bytes=1 << 30, to_log_end=True).batches] \
        if p.log_end_offset else []
    producers = {pid: (e.epoch, list(e.batches), e.last_timestamp) for pid, e in p.producers._producers.items()}
    return batches, producers, p.log_end_offset, p.high_watermark


def _one_by_one(broker, payloads):
    results = []
    for data in payloads:
        try:
            results.append(broker.produce("t", 0, data, acks=1))
        except PylogError as exc:
            return results, exc
    return results, None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=9), sizes=st.data(),
       before=st.integers(0, 3), compression=st.sampled_from(["producer", "zstd"]))
def test_produce_many_is_produce_of_each_in_turn(tmp_path_factory, kinds, sizes, before, compression):
    sizes = [sizes.draw(st.integers(1, 5)) for _ in kinds]
    payloads = _payloads(kinds, sizes)
    before = min(before, len(payloads) - 1)
    root = tmp_path_factory.mktemp("many")
    config = dict(SMALL)
    brokers = []
    try:
        for name in ("many", "each"):
            b = pylog.Broker.open(root / name, config, background_threads=False)
            brokers.append(b)
            b.create_topic("t", 1, config={"max.message.bytes": MAX_MESSAGE_BYTES,
                                           "compression.type": compression})
            _one_by_one(b, payloads[:before])  # earlier writes: a duplicate may be of one of them
        many, each = brokers
        got, got_error = many.produce_many("t", 0, payloads[before:], acks=1)
        want, want_error = _one_by_one(each, payloads[before:])
        assert got == want
        assert type(got_error) is type(want_error)
        assert str(got_error) == str(want_error)
        assert _state(many) == _state(each)
        assert many.traffic._counters == each.traffic._counters  # records and bytes in, per partition
    finally:
        for b in brokers:
            b.close()


def _count_appends(monkeypatch, broker):
    """A list that gets one item per write to the partition's log."""
    log = broker.partition("t", 0).log
    calls = []
    real = log.append_batches

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(log, "append_batches", spy)
    return calls


@pytest.fixture
def broker(tmp_path):
    b = pylog.Broker.open(tmp_path / "data", dict(SMALL), background_threads=False)
    b.create_topic("t", 1, config={"max.message.bytes": MAX_MESSAGE_BYTES})
    yield b
    b.close()


def test_a_chain_of_batches_is_written_once_with_each_batch_s_offsets(broker, monkeypatch):
    payloads = _payloads(["next"] * 4, [3, 1, 2, 5])
    writes = _count_appends(monkeypatch, broker)
    results, error = broker.produce_many("t", 0, payloads, acks=-1)
    assert error is None and len(writes) == 1
    assert [(r.base_offset, r.last_offset, r.records) for r in results] == [(0, 2, 3), (3, 3, 1), (4, 5, 2),
                                                                            (6, 10, 5)]
    assert [r.bytes for r in results] == [len(p) for p in payloads]
    assert broker.partition("t", 0).high_watermark == 11
    # The producer state remembers each batch, as after four produce calls: a retry of
    # any of the last five is a duplicate.
    again = broker.produce("t", 0, payloads[1], acks=1)
    assert (again.duplicate, again.base_offset, again.last_offset) == (True, 3, 3)


def test_the_payload_refused_stops_the_call_after_the_ones_before_it(broker):
    payloads = _payloads(["next", "next", "oversize", "next"], [2, 2, 2, 2])
    results, error = broker.produce_many("t", 0, payloads, acks=1)
    assert [r.base_offset for r in results] == [0, 2]
    assert isinstance(error, RecordTooLarge)
    assert broker.partition("t", 0).log_end_offset == 4  # the last payload was not tried
    payloads = _payloads(["next", "gap"], [2, 2])
    results, error = broker.produce_many("t", 0, [payloads[1]] + payloads, acks=1)
    assert results == [] and isinstance(error, OutOfOrderSequence)


def test_a_corrupt_payload_is_named_by_its_own_position(broker):
    payloads = _payloads(["next", "corrupt"], [2, 2])
    results, error = broker.produce_many("t", 0, payloads, acks=1)
    assert len(results) == 1 and isinstance(error, CorruptRecordError)
    assert "at byte 0" in str(error)  # the position in its own payload, not in a joined buffer


def test_bad_arguments_raise_and_write_nothing(broker):
    payloads = _payloads(["next", "next"], [1, 1])
    with pytest.raises(UnknownTopicOrPartition):
        broker.produce_many("t", 1, payloads)
    with pytest.raises(InvalidRequiredAcks):
        broker.produce_many("t", 0, payloads, acks=2)
    results, error = broker.produce_many("t", 0, [b"not a batch at all", payloads[0]])
    assert results == [] and isinstance(error, CorruptRecordError)
    results, error = broker.produce_many("t", 0, [payloads[0], "not bytes"])
    assert len(results) == 1 and isinstance(error, InvalidArgument)
    assert broker.partition("t", 0).log_end_offset == 1


def test_counted_once_in_the_topic_s_traffic_and_readers_woken(broker):
    seen = []
    broker.add_data_listener(lambda topic, partition: seen.append((topic, partition)))
    payloads = _payloads(["next"] * 3, [2, 2, 2])
    broker.produce_many("t", 0, payloads, acks=1)
    assert seen == [("t", 0)]
    assert broker.traffic._counters["t"][0][:2] == [6, sum(len(p) for p in payloads)]
    broker.produce_many("t", 0, [payloads[0], payloads[0]], acks=1)  # duplicates: nothing written
    assert seen == [("t", 0)]


def test_chains_over_the_wrap_of_sequence_numbers(broker, monkeypatch):
    top = 0x7FFFFFFF
    p = broker.partition("t", 0)
    broker.produce("t", 0, build_batch([b"a", b"b"], producer_id=PID, producer_epoch=0, base_sequence=0), acks=1)
    # The producer's last sequence made top - 2, as after 2^31 - 1 records.
    entries = p.producers._producers[PID].batches
    entries[-1] = dataclasses.replace(entries[-1], first_seq=top - 3, last_seq=top - 2)
    payloads = [build_batch([b"c", b"d", b"e"], producer_id=PID, producer_epoch=0, base_sequence=top - 1),
                build_batch([b"f"], producer_id=PID, producer_epoch=0, base_sequence=1)]
    writes = _count_appends(monkeypatch, broker)
    results, error = broker.produce_many("t", 0, payloads, acks=1)
    assert error is None and [r.base_offset for r in results] == [2, 5]
    assert len(writes) == 1  # one chain across the wrap
    assert [(e.first_seq, e.last_seq) for e in entries][-2:] == [(top - 1, 0), (1, 1)]


def test_each_kind_of_payload_is_what_its_name_says(broker):
    # The property test's generator: a typo there would silently test less.
    got = {}
    for kind in sorted(set(KINDS)):
        broker.delete_topic("t")
        broker.create_topic("t", 1, config={"max.message.bytes": MAX_MESSAGE_BYTES})
        results, error = broker.produce_many("t", 0, _payloads(["next", kind], [2, 2]), acks=1)
        got[kind] = (len(results), type(error).__name__)
    assert got == {"next": (2, "NoneType"), "dup_prev": (2, "NoneType"), "gap": (1, "OutOfOrderSequence"),
                   "plain": (2, "NoneType"), "oversize": (1, "RecordTooLarge"),
                   "corrupt": (1, "CorruptRecordError"), "epoch_bump": (2, "NoneType"), "zstd": (2, "NoneType"),
                   "two_batches": (1, "CorruptRecordError")}
