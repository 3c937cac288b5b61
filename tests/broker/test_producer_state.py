"""Idempotent-producer state (pylog.broker.producer_state) as a Partition rebuilds it from
batch headers.

A v2 batch covers sequences baseSequence .. baseSequence + lastOffsetDelta (Kafka's
lastSequence), whatever its recordCount: compaction removes records from a batch but
keeps its header range, and may leave a producer's last batch with no record at all.
The batches here are encoded by the independent Python encoder of the native tests, so
that nothing of the code under test builds them.
"""
from __future__ import annotations

import struct
import subprocess
import sys
from typing import Sequence

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pylog.broker.config import TopicConfig
from pylog.broker.partition import PRODUCER_SNAPSHOT, Partition
from pylog.errors import InvalidRecord, OutOfOrderSequence
from tests.native.pl_native_helpers import crc32c, encode_record
from tests.storage.helpers import FakeClock

T = 1_700_000_000_000


def producer_batch(base_offset: int, pid: int, epoch: int, base_seq: int, deltas: Sequence[int],
                   last_offset_delta: int) -> bytes:
    """An uncompressed v2 batch whose records sit at ``deltas`` (possibly none, possibly
    with gaps) inside [base_offset, base_offset + last_offset_delta]."""
    recs = b"".join(encode_record(d, 0, b"k%d" % d, b"v%d" % d) for d in deltas)
    after_crc = struct.pack(">hiqqqhii", 0, last_offset_delta, T, T, pid, epoch, base_seq, len(deltas)) + recs
    return struct.pack(">qiibI", base_offset, 4 + 1 + 4 + len(after_crc), -1, 2, crc32c(after_crc)) + after_crc


def open_partition(path) -> Partition:
    config = TopicConfig.build({"segment.index.bytes": 4096, "cleanup.policy": "compact"})
    return Partition.open("t", 0, path, config, broker_id=0, clock=FakeClock(T))


def check_state(part: Partition) -> None:
    # producer 5: sequences 10..14 over offsets 0..4, two records left (deltas 0 and 3)
    assert part.producers.check(5, 1, 15, 1) is None  # the next sequence
    dup = part.producers.check(5, 1, 10, 5)  # a retry of the original batch
    assert dup is not None and (dup.first_seq, dup.last_seq, dup.first_offset, dup.last_offset) == (10, 14, 0, 4)
    with pytest.raises(OutOfOrderSequence):
        part.producers.check(5, 1, 12, 1)  # what recordCount would have said comes next
    # producer 6: an empty batch for sequences 0..2 over offsets 5..7
    assert part.producers.check(6, 0, 3, 2) is None
    dup = part.producers.check(6, 0, 0, 3)
    assert dup is not None and (dup.first_offset, dup.last_offset) == (5, 7)


def test_last_sequence_comes_from_last_offset_delta_live_and_rebuilt(tmp_path):
    path = tmp_path / "t-0"
    part = open_partition(path)
    part.append_as_follower(producer_batch(0, 5, 1, 10, [0, 3], 4))
    part.append_as_follower(producer_batch(5, 6, 0, 0, [], 2))
    assert part.log_end_offset == 8
    check_state(part)  # as a follower copied them
    part.close()
    (path / PRODUCER_SNAPSHOT).unlink()  # as after a crash: rebuild from the headers
    part = open_partition(path)
    try:
        check_state(part)
    finally:
        part.close()


@pytest.mark.parametrize("deltas, last_delta", [([0, 3], 4), ([], 2), ([1], 1)])
def test_leader_refuses_a_batch_whose_count_is_not_its_offset_span(tmp_path, deltas, last_delta):
    """A producer numbers its records densely: recordCount == lastOffsetDelta + 1 (Kafka's
    "inconsistent batch offset range").  Only a follower or the cleaner writes others."""
    part = open_partition(tmp_path / "t-0")
    data = producer_batch(0, 5, 1, 10, deltas, last_delta)
    before = part.log_end_offset
    with pytest.raises(InvalidRecord, match="lastOffsetDelta"):
        part.append(data)
    assert part.log_end_offset == before and part.producers.check(5, 1, 0, 1) is None
    part.close()


def state_of(part: Partition) -> dict:
    """The producer state as data: pid -> (epoch, [(first_seq, last_seq, first_offset, last_offset)])."""
    return {pid: (e.epoch, [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in e.batches])
            for pid, e in part.producers._producers.items()}


def leader_partition(path, segment_bytes: int) -> Partition:
    config = TopicConfig.build({"segment.bytes": segment_bytes, "segment.index.bytes": 4096})
    return Partition.open("t", 0, path, config, broker_id=0, clock=FakeClock(T))


def write(part: Partition, batches) -> list:
    """Leader appends of (pid, epoch, base_seq, records) batches; returns their first offsets."""
    return [part.append(producer_batch(0, pid, epoch, seq, list(range(n)), n - 1)).base_offset
            for pid, epoch, seq, n in batches]


def test_truncation_gives_back_the_batches_below_it_so_a_retry_is_still_a_duplicate(tmp_path):
    """Producer 5's last five batches are cut off (a follower's divergent tail): its
    batches 3..7, which the log still holds, are remembered again.  Before, producer 5
    was forgotten, its retried batch 7 refused as out of order, and librdkafka bumped
    its epoch and wrote the batch a second time (a duplicate in the log)."""
    part = leader_partition(tmp_path / "t-0", 256)  # three batches per segment
    seqs = [(5, 0, 2 * i, 2) for i in range(13)]
    offsets = write(part, seqs)
    assert len(part.log.segments) > 3
    cut = offsets[8]
    part.truncate_to(cut)
    assert part.log_end_offset == cut
    for i in range(3, 8):  # retries of batches the log holds: duplicates at their offsets
        dup = part.producers.check(5, 0, 2 * i, 2)
        assert dup is not None and (dup.first_offset, dup.last_offset) == (offsets[i], offsets[i] + 1)
    assert part.producers.check(5, 0, 16, 2) is None  # batch 8 comes next
    with pytest.raises(OutOfOrderSequence):
        part.producers.check(5, 0, 18, 2)
    res = part.append(producer_batch(0, 5, 0, 14, [0, 1], 1))  # a retry of batch 7 through append
    assert res.duplicate and res.base_offset == offsets[7] and part.log_end_offset == cut
    part.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_state_equals_a_rebuild_from_the_truncated_log(tmp_path_factory, data):
    """Any mix of producers, epochs, batch sizes and segment sizes; a cut at any batch
    boundary: the state after truncate_to is the state a full rescan of the remaining
    log builds (a reopen without snapshot)."""
    path = tmp_path_factory.mktemp("p") / "t-0"
    part = leader_partition(path, data.draw(st.sampled_from([128, 300, 700, 1 << 20]), label="segment.bytes"))
    nxt = {}  # pid -> (epoch, next seq)
    batches = []
    for _ in range(data.draw(st.integers(1, 40), label="batches")):
        pid = data.draw(st.sampled_from([1, 2, 3]))
        epoch, seq = nxt.get(pid, (0, 0))
        if data.draw(st.integers(0, 9)) == 0:
            epoch, seq = epoch + 1, 0  # a new epoch starts at sequence 0
        n = data.draw(st.integers(1, 3))
        batches.append((pid, epoch, seq, n))
        nxt[pid] = (epoch, seq + n)
    offsets = write(part, batches)
    cut = data.draw(st.sampled_from(offsets + [part.log_end_offset]), label="cut")
    part.truncate_to(cut)
    truncated = state_of(part)
    part.close()
    (path / PRODUCER_SNAPSHOT).unlink(missing_ok=True)
    part = leader_partition(path, 1 << 20)
    try:
        assert part.log_end_offset == cut
        assert truncated == state_of(part)
    finally:
        part.close()


def test_dump_log_shows_each_batch_s_producer(tmp_path):
    """`pylog dump-log` prints producerId, producerEpoch and baseSequence (as Kafka's
    DumpLogSegments): what tells a retry written twice from a new producer epoch."""
    part = open_partition(tmp_path / "t-0")
    part.append_as_follower(producer_batch(0, 5, 1, 10, [0, 1], 1))
    part.close()
    out = subprocess.run([sys.executable, "-m", "pylog", "dump-log", str(tmp_path / "t-0")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "offset 0..1 " in out.stdout and "producerId 5 producerEpoch 1 baseSequence 10 crc ok" in out.stdout
