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
from typing import Sequence

import pytest

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
