"""Idempotent-producer state of one partition (Kafka's ProducerStateManager, in short).

For each producer id the partition remembers the epoch and the last
:data:`MAX_CACHED_BATCHES` batches written (first/last sequence, offsets).  Before a
batch from an idempotent producer is appended, :meth:`ProducerStateManager.check`
decides:

* a batch whose sequence range equals a remembered one is a **duplicate** (a retry of a
  batch that was written): the caller returns the remembered offset and writes nothing;
* otherwise the batch must start at ``last sequence + 1`` (wrapping after 2^31-1), or
  at 0 with a newer epoch; anything else is :class:`~pylog.errors.OutOfOrderSequence`;
* an epoch older than the known one is :class:`~pylog.errors.InvalidProducerEpoch`.

A batch's sequences are ``baseSequence .. baseSequence + lastOffsetDelta`` (Kafka's
``lastSequence``), not ``.. + recordCount - 1``: the log cleaner removes records from a
batch but keeps its baseOffset, lastOffsetDelta and baseSequence, and keeps each
producer's last batch even when it has no record left, so the same headers give the
same state before and after compaction (see :func:`batch_sequence_count`).

The state is rebuilt from batch headers (:meth:`ProducerStateManager.replay` in log
order) and can be saved to / loaded from a small JSON snapshot so that a clean restart
does not rescan.  Pure data: no I/O except :meth:`save`/:meth:`load` on a path the
caller gives.
"""
from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Sequence, Set, Tuple

from pylog.errors import InvalidProducerEpoch, OutOfOrderSequence, StorageError
from pylog.records import RecordBatch

__all__ = ["ProducerStateManager", "BatchEntry", "MAX_CACHED_BATCHES", "INT32_MAX", "batch_sequence_count"]

#: Kafka keeps the last five batches per producer (max.in.flight.requests.per.connection ≤ 5).
MAX_CACHED_BATCHES = 5
INT32_MAX = 0x7FFFFFFF


@dataclass(frozen=True)
class BatchEntry:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


class _ProducerEntry:
    __slots__ = ("epoch", "batches", "last_timestamp")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: Deque[BatchEntry] = deque(maxlen=MAX_CACHED_BATCHES)
        self.last_timestamp = -1


def _next_seq(seq: int) -> int:
    return 0 if seq == INT32_MAX else seq + 1


def _last_seq(base_seq: int, count: int) -> int:
    return (base_seq + count - 1) % (INT32_MAX + 1)


def batch_sequence_count(batch: RecordBatch) -> int:
    """How many sequence numbers ``batch`` spans: lastOffsetDelta + 1.

    A producer numbers its records one per offset, so this equals the record count of
    a batch as the producer sent it; a compacted batch keeps the range with fewer (or
    no) records.
    """
    return batch.last_offset_delta + 1


class ProducerStateManager:
    """Producer id -> epoch and recent batches, for one partition."""

    def __init__(self) -> None:
        self._producers: Dict[int, _ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def epoch_of(self, producer_id: int) -> Optional[int]:
        e = self._producers.get(producer_id)
        return None if e is None else e.epoch

    def check(self, producer_id: int, epoch: int, base_seq: int, count: int) -> Optional[BatchEntry]:
        """Validate the next batch of an idempotent producer.

        Returns the remembered entry if the batch is a duplicate (do not write it), None
        if it may be appended.  Raises OutOfOrderSequence or InvalidProducerEpoch.
        """
        if producer_id < 0:
            return None
        if base_seq < 0:
            raise OutOfOrderSequence(
                f"producer {producer_id} sent a batch without a sequence number (baseSequence {base_seq})")
        entry = self._producers.get(producer_id)
        last = _last_seq(base_seq, count)
        if entry is None:
            if base_seq != 0:
                raise OutOfOrderSequence(
                    f"producer {producer_id} (epoch {epoch}) is unknown to this partition and its first "
                    f"batch starts at sequence {base_seq}, expected 0")
            return None
        if epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"producer {producer_id} epoch {epoch} is older than the current epoch {entry.epoch}; "
                "it has been fenced by a newer instance")
        if epoch > entry.epoch:
            if base_seq != 0:
                raise OutOfOrderSequence(
                    f"producer {producer_id} started epoch {epoch} at sequence {base_seq}, expected 0")
            return None
        for b in entry.batches:
            if b.first_seq == base_seq and b.last_seq == last:
                return b
        expected = _next_seq(entry.batches[-1].last_seq) if entry.batches else 0
        if base_seq != expected:
            raise OutOfOrderSequence(
                f"producer {producer_id} epoch {epoch}: batch starts at sequence {base_seq}, expected "
                f"{expected} (a batch is missing or was reordered)")
        return None

    def update(self, producer_id: int, epoch: int, base_seq: int, count: int,
               first_offset: int, last_offset: int, timestamp: int) -> None:
        """Record a batch that was appended (or found in the log, in log order)."""
        entry = self._entry(producer_id, epoch)
        if entry is None:
            return
        entry.batches.append(BatchEntry(base_seq, _last_seq(base_seq, count), first_offset,
                                        last_offset, timestamp))
        entry.last_timestamp = max(entry.last_timestamp, timestamp)

    def update_chain(self, producer_id: int, epoch: int,
                     batches: Sequence[Tuple[int, int, int, int, int]]) -> None:
        """:meth:`update` of each of ``batches`` in turn (base sequence, count, first
        offset, last offset, max timestamp; written in this order, one epoch), the same
        state made once: only the last MAX_CACHED_BATCHES are remembered."""
        entry = self._entry(producer_id, epoch) if batches else None
        if entry is None:
            return
        for base_seq, count, first_offset, last_offset, timestamp in batches[-MAX_CACHED_BATCHES:]:
            entry.batches.append(BatchEntry(base_seq, _last_seq(base_seq, count), first_offset, last_offset,
                                            timestamp))
        entry.last_timestamp = max(entry.last_timestamp, max(b[4] for b in batches))

    def _entry(self, producer_id: int, epoch: int) -> Optional[_ProducerEntry]:
        """The entry a batch of (``producer_id``, ``epoch``) is recorded in: a new one
        for a new producer or a newer epoch; None for no producer id, or an older, fenced
        epoch (found while rescanning: the newer one rules)."""
        if producer_id < 0:
            return None
        entry = self._producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = _ProducerEntry(epoch)
            self._producers[producer_id] = entry
        elif epoch < entry.epoch:
            return None
        return entry

    def replay(self, batch: RecordBatch) -> None:
        """Record a batch found in the log at its own offsets (a rebuild after a crash,
        a follower's copy); a batch without a producer id is ignored."""
        if batch.producer_id < 0:
            return
        self.update(batch.producer_id, batch.producer_epoch, batch.base_sequence,
                    batch_sequence_count(batch), batch.base_offset, batch.last_offset,
                    batch.max_timestamp)

    def producer_ids(self) -> Set[int]:
        """The producer ids this partition remembers."""
        return set(self._producers)

    def expire(self, now_ms: int, expiration_ms: int) -> List[int]:
        """Forget producers whose last batch's max timestamp is ``expiration_ms`` or more
        before ``now_ms`` (Kafka's producer.id.expiration.ms); returns their ids.  An
        expired producer that sends again must start a new epoch or sequence 0, as an
        unknown one."""
        gone = [pid for pid, e in self._producers.items() if now_ms - e.last_timestamp >= expiration_ms]
        for pid in gone:
            del self._producers[pid]
        return gone

    def truncate_to(self, offset: int) -> Set[int]:
        """Forget batches at or above ``offset`` (after a log truncation).

        Returns the ids of the producers that lost a remembered batch.  Their state is
        then incomplete: the batches they wrote below ``offset`` before their last
        :data:`MAX_CACHED_BATCHES` are still in the log but no longer remembered (a
        producer may even be forgotten although the log holds its batches).  The caller
        replays those from the log with :meth:`restore`, or a retry of a batch the log
        holds is not recognised as a duplicate and is written twice.
        """
        lost: Set[int] = set()
        for pid in list(self._producers):
            e = self._producers[pid]
            kept = [b for b in e.batches if b.last_offset < offset]
            if len(kept) != len(e.batches):
                lost.add(pid)
                e.batches = deque(kept, maxlen=MAX_CACHED_BATCHES)
            if not e.batches:
                del self._producers[pid]
        return lost

    def restore(self, producer_ids: Set[int], batches: List[RecordBatch]) -> None:
        """Rebuild the state of ``producer_ids`` from their batches in the log (after
        :meth:`truncate_to`), given in log order; their last :data:`MAX_CACHED_BATCHES`
        per producer are enough (the same state as a replay of all).  A producer
        without a batch in ``batches`` is forgotten; other producers' batches are
        ignored."""
        for pid in producer_ids:
            self._producers.pop(pid, None)
        for b in batches:
            if b.producer_id in producer_ids:
                self.replay(b)

    def clear(self) -> None:
        self._producers.clear()

    # ------------------------------------------------------------ snapshots
    def save(self, path: Path, end_offset: int) -> None:
        """Write a snapshot valid for a log ending at ``end_offset`` (atomically)."""
        data = {
            "version": 1,
            "end_offset": end_offset,
            "producers": {
                str(pid): {"epoch": e.epoch,
                           "batches": [[b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp]
                                       for b in e.batches]}
                for pid, e in self._producers.items()
            },
        }
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:  # a full disk: no snapshot (the next open rebuilds the state), no .tmp
                os.unlink(tmp)
            except OSError:
                pass
            raise StorageError(exc.errno or 0, f"writing producer state snapshot {path}: {exc.strerror}") from exc

    @classmethod
    def load(cls, path: Path) -> Tuple["ProducerStateManager", int]:
        """Read a snapshot: (state, end_offset).  A missing or damaged file gives (empty, -1)."""
        mgr = cls()
        try:
            data = json.loads(Path(path).read_text())
            if data.get("version") != 1:
                return mgr, -1
            for pid, e in data["producers"].items():
                entry = _ProducerEntry(int(e["epoch"]))
                for fs, ls, fo, lo, ts in e["batches"]:
                    entry.batches.append(BatchEntry(int(fs), int(ls), int(fo), int(lo), int(ts)))
                mgr._producers[int(pid)] = entry
            return mgr, int(data["end_offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return cls(), -1
