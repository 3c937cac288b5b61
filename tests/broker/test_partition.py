"""Partition operations other modules call instead of touching its internals."""
from __future__ import annotations

import pytest

from pylog.broker.config import TopicConfig
from pylog.broker.partition import Partition
from pylog.errors import InvalidRecord
from tests.storage.helpers import FakeClock

T = 1_700_000_000_000


@pytest.fixture
def part(tmp_path):
    config = TopicConfig.build({"segment.index.bytes": 4096, "cleanup.policy": "compact"})
    p = Partition.open("__consumer_offsets", 0, tmp_path / "__consumer_offsets-0", config, broker_id=0,
                       clock=FakeClock(T))
    yield p
    p.close()


def test_append_records_flushes_and_moves_the_high_watermark(part):
    assert part.append_records([b"v1", None], keys=[b"k1", b"k2"]) == 0
    assert part.append_records([b"v3"], keys=[b"k1"]) == 2
    assert (part.log_end_offset, part.high_watermark, part.log.recovery_point) == (3, 3, 3)
    assert [(r.offset, r.key, r.value) for r in part.read(0)[0].records()] == [
        (0, b"k1", b"v1"), (1, b"k2", None)]


def test_append_records_of_a_replicated_partition_leaves_the_high_watermark_to_the_driver(part):
    part.replicated = True
    part.append_records([b"v"], keys=[b"k"])
    assert (part.log_end_offset, part.high_watermark, part.log.recovery_point) == (1, 0, 1)


def test_append_records_refused_writes_nothing(part):
    with pytest.raises(InvalidRecord, match="needs a key"):
        part.append_records([b"v"])  # a compacted log's records need keys
    assert (part.log_end_offset, part.high_watermark) == (0, 0)
