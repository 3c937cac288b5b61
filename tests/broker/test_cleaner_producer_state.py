"""Idempotent-producer state survives log compaction and a crash.

After a crash the broker has no producer-state snapshot and rebuilds the state from the
batch headers in the log.  Compaction must leave headers that rebuild the same state
(Kafka's rule): a batch that loses records keeps its baseOffset, lastOffsetDelta and
baseSequence; a producer's last batch is kept (empty if all its records went); and the
last sequence of a batch is baseSequence + lastOffsetDelta, whatever its record count.

The scenario below makes one idempotent producer (A) lose records from a batch, lose
whole batches (one at the start of a segment, one followed by removed batches), and
have every record of its last batch superseded by another producer (B).  The broker is
then reopened without a snapshot (the file deleted, or the process SIGKILLed) and A and
B must go on where they were: the next sequence is accepted, a retried batch that is
still in the log is answered as a duplicate with its first offsets.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import pylog
from pylog import errors
from pylog.broker.partition import PRODUCER_SNAPSHOT
from pylog.records import RecordBatch, build_batch, iter_records
from pylog.storage.log import RECOVERY_POINT_FILE

from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
#: Each record's timestamp is T + its offset; the broker's clock stays at NOW (no
#: segment.ms roll, no compaction lag).
T = 1_700_000_000_000
NOW = T + 60_000
TOPIC_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}

#: Original (base offset, last offset) of each batch the scenario writes, by (producer, first sequence).
Ranges = Dict[Tuple[str, int], Tuple[int, int]]


def batch(pid: int, epoch: int, seq: int, keys: List[bytes], first_ts: int = T) -> bytes:
    """One batch of ``keys`` (value = key + b"=" + sequence of the record), timestamps
    from ``first_ts`` on."""
    values = [k + b"=%d" % (seq + i) for i, k in enumerate(keys)]
    return build_batch(values, keys=keys, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                       timestamps=[first_ts + i for i in range(len(keys))])


def plain(keys: List[bytes], first_ts: int) -> bytes:
    """A batch without a producer id (a non-idempotent producer)."""
    return build_batch([k + b"=plain" for k in keys], keys=keys,
                       timestamps=[first_ts + i for i in range(len(keys))])


def write_and_clean(broker: pylog.Broker) -> Tuple[Dict[str, Tuple[int, int]], Ranges]:
    """Write the scenario into topic "c", compact it; returns the producers' (id, epoch)
    and the original offset range of each idempotent batch."""
    broker.create_topic("c", 1, config=TOPIC_CONFIG)
    part = broker.partition("c", 0)
    ids = {"A": broker.init_producer_id(), "B": broker.init_producer_id()}
    ranges: Ranges = {}

    def send(who: str, seq: int, keys: List[bytes]) -> None:
        pid, epoch = ids[who]
        res = broker.produce("c", 0, batch(pid, epoch, seq, keys, T + part.log_end_offset))
        ranges[(who, seq)] = (res.base_offset, res.last_offset)

    # segment 0, offsets 0..6
    send("A", 0, [b"k1", b"k2", b"k3"])        # 0..2   loses k1
    broker.produce("c", 0, plain([b"k4"], T + 3))  # 3      removed
    send("A", 3, [b"k5", b"k6"])               # 4..5   removed entirely
    send("B", 0, [b"k7"])                      # 6      kept
    part.log.roll()
    # segment 1, offsets 7..12
    broker.produce("c", 0, plain([b"k8"], T + 7))  # 7      removed: the segment's first batch
    send("A", 5, [b"k9", b"k10"])              # 8..9   loses k9
    send("B", 1, [b"k11"])                     # 10     removed
    send("A", 7, [b"k12", b"k13"])             # 11..12 A's last batch: every record superseded by B
    part.log.roll()
    # segment 2, offsets 13..21: B supersedes
    send("B", 2, [b"k1", b"k4", b"k5", b"k6", b"k8", b"k9", b"k11", b"k12", b"k13"])
    part.log.roll()
    results = broker.run_cleaner(force=True)
    assert results and results[0].skipped is None and results[0].segments_cleaned == 2
    return ids, ranges


def all_batches(broker: pylog.Broker) -> List[RecordBatch]:
    """Every batch of the partition, in order (a read stops at a segment's end)."""
    log = broker.partition("c", 0).log
    out: List[RecordBatch] = []
    while not out or out[-1].next_offset < log.log_end_offset:
        out += log.read(out[-1].next_offset if out else log.log_start_offset, 1 << 20)
    return out


def check_headers(broker: pylog.Broker, ids: Dict[str, Tuple[int, int]], ranges: Ranges) -> None:
    """The cleaned log: A's batches at their original ranges (the last one empty), the
    batch it lost entirely gone, the offsets still tiled."""
    part = broker.partition("c", 0)
    batches = all_batches(broker)
    names = {pid: who for who, (pid, _) in ids.items()}
    seen = {}
    off = 0
    for b in batches:
        assert b.base_offset == off
        off = b.next_offset
        if b.producer_id >= 0:
            key = (names[b.producer_id], b.base_sequence)
            assert (b.base_offset, b.last_offset) == ranges[key], key
            seen[key] = b.record_count
    assert off == part.log_end_offset == 22
    assert seen == {("A", 0): 2, ("A", 5): 1, ("A", 7): 0, ("B", 0): 1, ("B", 2): 9}


def values_by_offset(broker: pylog.Broker) -> Dict[int, bytes]:
    out = {}
    for b in all_batches(broker):
        out.update((r.offset, r.value) for r in iter_records(b.buffer))
    return out


def check_producers_go_on(broker: pylog.Broker, ids: Dict[str, Tuple[int, int]], ranges: Ranges) -> None:
    """After a rebuild from headers: retries of batches still in the log are duplicates,
    the next sequences are accepted, a gap is still refused."""
    (a, ea), (b, eb) = ids["A"], ids["B"]
    for seq, keys in ((7, [b"k12", b"k13"]), (5, [b"k9", b"k10"]), (0, [b"k1", b"k2", b"k3"])):
        dup = broker.produce("c", 0, batch(a, ea, seq, keys))
        assert dup.duplicate and (dup.base_offset, dup.last_offset) == ranges[("A", seq)], seq
    dup = broker.produce("c", 0, batch(b, eb, 2, [b"k1", b"k4", b"k5", b"k6", b"k8", b"k9", b"k11",
                                                  b"k12", b"k13"]))
    assert dup.duplicate and dup.base_offset == 13
    with pytest.raises(errors.OutOfOrderSequence):
        broker.produce("c", 0, batch(a, ea, 10, [b"k14"]))  # sequence 9 skipped
    before = values_by_offset(broker)
    res_a = broker.produce("c", 0, batch(a, ea, 9, [b"k14"]))
    res_b = broker.produce("c", 0, batch(b, eb, 11, [b"k15"]))
    assert not res_a.duplicate and not res_b.duplicate
    assert (res_a.base_offset, res_b.base_offset) == (22, 23)
    after = values_by_offset(broker)
    assert after == {**before, 22: b"k14=9", 23: b"k15=11"}


@pytest.mark.parametrize("clean_close", [True, False])
def test_producer_state_rebuilt_from_a_cleaned_log(open_broker, clean_close):
    broker = open_broker(background_threads=False, clock=lambda: NOW)
    ids, ranges = write_and_clean(broker)
    check_headers(broker, ids, ranges)
    before = values_by_offset(broker)
    broker.close()
    snap = broker.data_dir / "c-0" / PRODUCER_SNAPSHOT
    assert snap.exists()
    if not clean_close:  # as after a crash: the state is rebuilt from the batch headers
        snap.unlink()
    broker = open_broker(background_threads=False, clock=lambda: NOW)
    assert values_by_offset(broker) == before
    check_headers(broker, ids, ranges)
    check_producers_go_on(broker, ids, ranges)


#: Offsets of the records the cleaning keeps.
KEPT = [1, 2, 6, 9] + list(range(13, 22))


def test_consumer_and_time_lookup_read_the_cleaned_batches(open_broker):
    """Empty batches, batches whose first record is not at their base offset, and
    filler batches: a consumer (one record per poll too) and offsets_for_times see the
    kept records only, at their offsets."""
    broker = open_broker(background_threads=False, clock=lambda: NOW)
    write_and_clean(broker)
    assert sorted(values_by_offset(broker)) == KEPT
    for per_poll in (1, 500):
        c = pylog.Consumer(broker, auto_offset_reset="earliest", max_poll_records=per_poll)
        c.assign([("c", 0)])
        got = []
        for _ in range(100):
            recs = c.poll(timeout=0)
            got += recs
            if not recs and c.position(("c", 0)) == 22:
                break
        assert [r.offset for r in got] == KEPT
        assert all(r.timestamp == T + r.offset for r in got)
        c.close()
    part = broker.partition("c", 0)
    for off in range(22):
        assert part.offset_for_timestamp(T + off) == min(k for k in KEPT if k >= off), off
    assert part.offset_for_timestamp(T + 22) is None


CHILD = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {repo!r})
    import pylog
    from tests.broker.test_cleaner_producer_state import NOW, write_and_clean
    from tests.conftest import SMALL
    broker = pylog.Broker.open(sys.argv[1], dict(SMALL), background_threads=False, clock=lambda: NOW)
    ids, ranges = write_and_clean(broker)
    print(json.dumps({{"ids": ids, "ranges": [[w, s, lo, hi] for (w, s), (lo, hi) in ranges.items()]}}))
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_producer_state_after_sigkill_following_a_cleaning(tmp_path, caplog):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO)), str(data)],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    ids = {who: tuple(v) for who, v in out["ids"].items()}
    ranges = {(w, s): (lo, hi) for w, s, lo, hi in out["ranges"]}
    assert not (data / "c-0" / PRODUCER_SNAPSHOT).exists()
    # no recovery point: every segment, the cleaned ones too, is recovered (validated)
    (data / "c-0" / RECOVERY_POINT_FILE).unlink(missing_ok=True)
    caplog.set_level(logging.WARNING, logger="pylog.storage")
    broker = pylog.Broker.open(data, dict(SMALL), background_threads=False, clock=lambda: NOW)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    try:
        check_headers(broker, ids, ranges)
        check_producers_go_on(broker, ids, ranges)
    finally:
        broker.close()


def test_expired_producers_last_batch_goes_at_the_next_cleaning(open_broker):
    """producer.id.expiration.ms: a producer silent that long is forgotten by the
    partition, and the cleaner stops keeping its (empty) last batch; a live one's stays."""
    now = [NOW]
    expiry = 3_600_000
    broker = open_broker({"producer.id.expiration.ms": expiry}, background_threads=False,
                         clock=lambda: now[0])
    ids, ranges = write_and_clean(broker)
    part = broker.partition("c", 0)
    (a, ea), (b, eb) = ids["A"], ids["B"]
    # B is heard from later than A: only A's last batch (timestamps T + 11, T + 12) expires.
    broker.produce("c", 0, batch(b, eb, 11, [b"k20"], first_ts=T + expiry))
    assert part.producers.producer_ids() == {a, b}
    now[0] = T + 12 + expiry  # A's last timestamp + producer.id.expiration.ms
    broker.run_housekeeping(force=True)
    assert part.producers.producer_ids() == {b}
    part.log.roll()
    broker.run_cleaner(force=True)
    batches = all_batches(broker)
    assert not any(x.producer_id == a and x.record_count == 0 for x in batches)  # A's empty one went
    assert any(x.producer_id == a for x in batches)  # A's batches with live records stay
    off = 0
    for x in batches:  # still densely tiled
        assert x.base_offset == off
        off = x.next_offset
    assert off == part.log_end_offset
    # A is now unknown: it must start again at sequence 0 (or a new epoch), as Kafka's.
    with pytest.raises(errors.OutOfOrderSequence, match="unknown"):
        broker.produce("c", 0, batch(a, ea, 9, [b"k30"]))
    assert not broker.produce("c", 0, batch(a, ea, 0, [b"k30"])).duplicate
    # B goes on where it was.
    assert not broker.produce("c", 0, batch(b, eb, 12, [b"k31"])).duplicate
