"""LogCleaner: log compaction (cleanup.policy=compact), Kafka's LogCleaner in one call.

A compacted log keeps, for every key, at least its latest record.  :meth:`LogCleaner.clean`
rewrites the log's closed segments from the log start up to the active segment:

* **Clean and dirty sections.**  ``cleaner-offset-checkpoint`` (Kafka's checkpoint format,
  in the log directory) holds the first offset not yet cleaned.  Everything below it is
  the clean section (each key appears once there), everything from it to the first
  uncleanable segment is the dirty section.  A segment is uncleanable if it is the
  active one or holds a record younger than min.compaction.lag.ms.
* **When.**  Only when dirty bytes / (clean + dirty bytes) >= min.cleanable.dirty.ratio,
  or a dirty segment is older than max.compaction.lag.ms, or ``force=True``.
* **Offset map.**  The dirty section's keys are hashed with xxhash64 into an
  open-addressing table (numpy arrays, linear probing) mapping hash -> latest offset.
  The table holds at most log.cleaner.dedupe.buffer.size / 16 slots, filled to
  log.cleaner.io.buffer.load.factor; if the dirty section has more distinct keys, only
  its first segments are cleaned this time (as Kafka does).  Two keys with the same
  64-bit hash are treated as one key, so the older one's record could be dropped:
  Kafka's SkimpyOffsetMap (MD5 prefix) accepts the same risk, about 2^-64 per pair.
* **Rewrite.**  Each segment of both sections keeps a record iff its key's latest
  offset is its own (or its key is not in the map: a clean-section key not rewritten
  since).  Tombstones (null values) are kept until delete.retention.ms after the
  segment holding them was cleaned (the segment file's modification time, set by the
  swap), then dropped.  Records without a key (possible only if the log was not
  always compacted) are kept.
* **Offsets are preserved.**  Records keep their offsets (a rebuilt batch's records
  carry their true offset deltas, so its first record may sit after its baseOffset);
  batches keep their leader epoch, timestamp type and compression codec
  (re-compressed when a compressed batch lost records).
* **Producer state survives** (Kafka's rule, KIP-98).  After a crash the broker
  rebuilds its idempotent-producer state from batch headers, a batch covering the
  sequences baseSequence .. baseSequence + lastOffsetDelta.  So a batch with a
  producer id keeps its exact baseOffset, lastOffsetDelta, producer id, epoch and
  baseSequence when it loses records, and the last batch of each producer id in the
  examined segments is kept even when all its records go (an empty batch, recordCount
  0, with those header fields and the batch's max timestamp).  Its other batches that
  lose every record go.  Given ``producer_ids`` (the producers the partition still
  remembers: the broker forgets one silent for producer.id.expiration.ms, a day by
  default), an expired producer's empty last batch goes at the next cleaning.
* **Dense tiling.**  The new batches still tile the offsets densely, so recovery's
  "dense batch ranges" check holds.  Offsets of removed batches are covered by the
  kept batch without a producer id just before them (its lastOffsetDelta grows), or
  else by the next kept batch without a producer id (it starts earlier: the first
  kept batch of a segment may start at the segment's base offset), or else by an
  empty batch without a producer id carrying the removed batches' max timestamp (the
  segment's, for a segment left with no batch at all).  Batches with a producer id
  never move.
* **Swap.**  :meth:`pylog.storage.Log.replace_segments` swaps the rewritten segments in
  all at once, crash-safely; views of the old segments stay valid.

The cleaner decides what each segment keeps; the batch bytes (rebuilt batches, empty
batches, grown ranges) are made by :mod:`pylog.records.rewrite`.

The cleaner is a plain object with no thread: a broker calls ``clean`` from its own
background thread or timer.  Not transactional-aware yet (no control batches exist).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import xxhash

from pylog.errors import InvalidArgument, InvalidConfig
from pylog.records import RecordBatch, decode_records, empty_batch, iter_batches, rewrite_batch, with_last_offset
from pylog.storage import Log
from pylog.storage.checkpoint import OffsetCheckpointFile
from pylog.storage.log import SegmentSnapshot
from pylog.util import check_int, now_ms

__all__ = ["LogCleaner", "CleanResult", "OffsetMap", "CLEANER_CHECKPOINT_FILE", "key_hashes"]

#: File in the log directory holding the first offset not yet cleaned (Kafka's name).
CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
#: Bytes per offset-map slot: 8-byte hash + 8-byte offset.
MAP_SLOT_BYTES = 16
_EMPTY = -1


@dataclass(frozen=True)
class CleanResult:
    """What one :meth:`LogCleaner.clean` call did."""

    segments_cleaned: int  #: segments rewritten and swapped in
    records_before: int  #: records in the examined segments before
    records_after: int  #: ... and after
    bytes_before: int  #: bytes of the examined segments before
    bytes_after: int  #: ... and after
    tombstones_removed: int  #: tombstones dropped (delete.retention.ms passed)
    first_dirty_offset: int  #: checkpoint the cleaning started from
    cleaned_up_to: int  #: the new checkpoint: first offset not cleaned
    dirty_ratio: float  #: dirty / (clean + dirty) bytes when the call started
    skipped: Optional[str] = None  #: why nothing was done, or None


# ------------------------------------------------------------------- offset map
class OffsetMap:
    """hash64 -> latest offset, open addressing with linear probing over numpy arrays.

    ``slots`` is a power of two; at most ``max_entries`` (slots * load_factor) keys.
    Inserts and lookups are vectorised: each round probes one slot for every pending
    key; keys that lose a slot to another key (or find it taken) move on one slot.
    """

    __slots__ = ("hashes", "offsets", "mask", "size", "max_entries")

    def __init__(self, slots: int, load_factor: float = 0.9) -> None:
        if slots < 1 or slots & (slots - 1):
            raise InvalidArgument(f"offset map slots must be a power of two, got {slots}")
        self.hashes = np.zeros(slots, dtype=np.uint64)
        self.offsets = np.full(slots, _EMPTY, dtype=np.int64)
        self.mask = np.uint64(slots - 1)
        self.size = 0
        self.max_entries = max(1, int(slots * load_factor))

    @property
    def slots(self) -> int:
        return len(self.offsets)

    def _probe(self, hashes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Slot of each hash: where it is, or the empty slot ending its probe chain
        (with `found` False).  Distinct missing hashes may share an empty slot."""
        slot = (hashes & self.mask).astype(np.int64)
        found = np.zeros(len(hashes), dtype=bool)
        pending = np.arange(len(hashes))
        mask = int(self.mask)
        while len(pending):
            s = slot[pending]
            occ = self.offsets[s] != _EMPTY
            hit = occ & (self.hashes[s] == hashes[pending])
            found[pending[hit]] = True
            go_on = occ & ~hit
            pending = pending[go_on]
            slot[pending] = (slot[pending] + 1) & mask
        return slot, found

    def get_many(self, hashes: np.ndarray) -> np.ndarray:
        """Latest offset of each hash, -1 where absent."""
        if len(hashes) == 0:
            return np.empty(0, dtype=np.int64)
        slot, found = self._probe(hashes)
        out = np.full(len(hashes), _EMPTY, dtype=np.int64)
        out[found] = self.offsets[slot[found]]
        return out

    def new_keys(self, hashes: np.ndarray) -> int:
        """How many distinct hashes of ``hashes`` are not in the map yet."""
        if len(hashes) == 0:
            return 0
        uniq = np.unique(hashes)
        _, found = self._probe(uniq)
        return int((~found).sum())

    def put_many(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        """Record ``offsets`` (increasing) as the latest for ``hashes``; raises
        InvalidArgument if the map would exceed max_entries (nothing inserted then)."""
        if len(hashes) == 0:
            return
        # the last occurrence of each hash wins (offsets increase)
        rev_h = hashes[::-1]
        uniq, first_in_rev = np.unique(rev_h, return_index=True)
        offs = offsets[::-1][first_in_rev]
        if self.size + self.new_keys(uniq) > self.max_entries:
            raise InvalidArgument("offset map full")
        mask = int(self.mask)
        slot = (uniq & self.mask).astype(np.int64)
        pending = np.arange(len(uniq))
        while len(pending):
            s = slot[pending]
            occ = self.offsets[s] != _EMPTY
            hit = occ & (self.hashes[s] == uniq[pending])
            upd = pending[hit]
            self.offsets[slot[upd]] = np.maximum(self.offsets[slot[upd]], offs[upd])
            free = pending[~occ]
            # among keys wanting the same free slot, the first one takes it
            _, winners = np.unique(slot[free], return_index=True)
            win = free[winners]
            self.hashes[slot[win]] = uniq[win]
            self.offsets[slot[win]] = offs[win]
            self.size += len(win)
            lost = np.setdiff1d(free, win, assume_unique=True)
            moved = np.concatenate([pending[occ & ~hit], lost])
            slot[moved] = (slot[moved] + 1) & mask
            pending = moved


def key_hashes(buffer: Any, key_pos: np.ndarray, key_len: np.ndarray) -> np.ndarray:
    """xxhash64 (seed 0) of each key; 0 for null keys (callers mask those out)."""
    mv = buffer if isinstance(buffer, (bytes, memoryview)) else memoryview(buffer)
    h = xxhash.xxh64_intdigest
    out = [h(mv[a:a + n]) if n >= 0 else 0 for a, n in zip(key_pos.tolist(), key_len.tolist())]
    return np.array(out, dtype=np.uint64)


# ---------------------------------------------------------------------- cleaner
class _Segment:
    """A snapshot's records decoded, with each record's batch index."""

    __slots__ = ("snap", "arrays", "batches", "batch_first", "hashes")

    def __init__(self, snap: SegmentSnapshot) -> None:
        self.snap = snap
        self.batches: List[RecordBatch] = list(iter_batches(snap.data))
        # Compaction reads every batch it keeps: a damaged one stops the cleaning of
        # this log (CorruptRecordError naming the segment), never copied into a clean one.
        self.arrays = decode_records(snap.data, check_crcs=True, origin=(str(snap.segment.log_path), 0))
        counts = [b.record_count for b in self.batches]
        self.batch_first = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        if self.batch_first[-1] != len(self.arrays):
            raise InvalidArgument(f"segment {snap.base_offset}: record counts disagree with the records")
        self.hashes = key_hashes(self.arrays.buffer, self.arrays.key_pos, self.arrays.key_len)


class LogCleaner:
    """Compacts logs whose cleanup.policy contains "compact".  See the module doc.

    Settings are Kafka's broker configs in snake_case:
    ``log_cleaner_dedupe_buffer_size`` (bytes for the offset map, 128 MiB),
    ``log_cleaner_io_buffer_size`` (bytes of records hashed and inserted into the map
    per step, 512 KiB), ``log_cleaner_io_buffer_load_factor`` (0.9).  ``clock``
    returns ms (default: wall clock) and drives the compaction lags and tombstone
    expiry.
    """

    def __init__(self, *, log_cleaner_dedupe_buffer_size: int = 128 << 20,
                 log_cleaner_io_buffer_size: int = 512 << 10,
                 log_cleaner_io_buffer_load_factor: float = 0.9,
                 clock: Optional[Callable[[], int]] = None) -> None:
        for name, value, lo in (("log.cleaner.dedupe.buffer.size", log_cleaner_dedupe_buffer_size, MAP_SLOT_BYTES),
                                ("log.cleaner.io.buffer.size", log_cleaner_io_buffer_size, 1)):
            check_int(name, value, min=lo, error=InvalidConfig)
        lf = log_cleaner_io_buffer_load_factor
        if isinstance(lf, bool) or not isinstance(lf, (int, float)) or not 0 < lf <= 1:
            raise InvalidConfig(f"log.cleaner.io.buffer.load.factor must be in (0, 1], got {lf!r}")
        if clock is not None and not callable(clock):
            raise InvalidArgument(f"clock must be a callable returning ms, got {clock!r}")
        self.dedupe_buffer_size = log_cleaner_dedupe_buffer_size
        self.io_buffer_size = log_cleaner_io_buffer_size
        self.load_factor = float(lf)
        self._clock = clock or now_ms
        #: slots of the largest offset map this cleaner may build (a power of two)
        self.max_slots = 1 << int(math.log2(self.dedupe_buffer_size // MAP_SLOT_BYTES))

    # ------------------------------------------------------------ checkpoint
    @staticmethod
    def checkpoint(log: Log) -> Optional[int]:
        """The log's cleaner checkpoint (first offset not cleaned), None if none."""
        entries = OffsetCheckpointFile(log.dir / CLEANER_CHECKPOINT_FILE).read()
        if log.topic_partition in entries:
            return entries[log.topic_partition]
        return next(iter(entries.values())) if len(entries) == 1 else None

    @staticmethod
    def _write_checkpoint(log: Log, offset: int) -> None:
        OffsetCheckpointFile(log.dir / CLEANER_CHECKPOINT_FILE).write({log.topic_partition: offset})

    # ----------------------------------------------------------------- clean
    def clean(self, log: Log, now_ms: Optional[int] = None, *, force: bool = False,
              producer_ids: Optional[Collection[int]] = None) -> CleanResult:
        """Compact ``log``'s closed segments once (see the module doc).

        ``producer_ids``: the idempotent producers the partition still remembers (the
        others expired, producer.id.expiration.ms); only their last batches are kept
        when empty.  None keeps every producer's last batch.

        Returns a CleanResult; ``skipped`` says why nothing was done (policy is not
        compact, nothing dirty, ratio below min.cleanable.dirty.ratio, the log changed
        while cleaning).  ``force`` ignores the ratio.  Raises InvalidConfig if not
        even one dirty segment's keys fit the offset map, LogClosed, StorageError.
        """
        if now_ms is None:
            now_ms = self._clock()
        else:
            check_int("now_ms (ms, or None for now)", now_ms)
        if not isinstance(log, Log):
            raise InvalidArgument(f"log must be a pylog.storage.Log, got {type(log).__name__}")
        cfg = log.config
        snaps = log.snapshot_segments()
        start = log.log_start_offset
        ckpt = self.checkpoint(log)
        first_dirty = ckpt if ckpt is not None and start <= ckpt <= snaps[-1].next_offset else start

        def result(skipped: Optional[str], ratio: float = 0.0, **kw: Any) -> CleanResult:
            base = dict(segments_cleaned=0, records_before=0, records_after=0, bytes_before=0,
                        bytes_after=0, tombstones_removed=0, first_dirty_offset=first_dirty,
                        cleaned_up_to=first_dirty, dirty_ratio=ratio, skipped=skipped)
            base.update(kw)
            return CleanResult(**base)

        if not cfg.compact:
            return result(f"cleanup.policy is {cfg.cleanup_policy!r}, not compact")
        # cleanable: closed segments up to the first holding a record too young to compact
        cleanable: List[SegmentSnapshot] = []
        for snap in snaps:
            if snap.active or (cfg.min_compaction_lag_ms > 0
                               and snap.max_timestamp > now_ms - cfg.min_compaction_lag_ms):
                break
            cleanable.append(snap)
        cleanable = [s for s in cleanable if s.next_offset > start or s.size_bytes == 0]
        clean_sec = [s for s in cleanable if s.next_offset <= first_dirty]
        dirty_sec = [s for s in cleanable if s.next_offset > first_dirty]
        dirty_bytes = sum(s.size_bytes for s in dirty_sec)
        total = dirty_bytes + sum(s.size_bytes for s in clean_sec)
        ratio = dirty_bytes / total if total else 0.0
        if not dirty_sec and not (force and clean_sec):
            return result("no dirty closed segment", ratio)
        overdue = any(0 <= s.max_timestamp < now_ms - cfg.max_compaction_lag_ms for s in dirty_sec)
        if not force and ratio < cfg.min_cleanable_dirty_ratio and not overdue:
            return result(f"dirty ratio {ratio:.3f} < min.cleanable.dirty.ratio "
                          f"{cfg.min_cleanable_dirty_ratio}", ratio)

        # ---- offset map over as many dirty segments as fit
        dirty_records = sum(s.next_offset - s.base_offset for s in dirty_sec)
        want = max(16, int(dirty_records / self.load_factor) + 1)
        slots = min(self.max_slots, 1 << (want - 1).bit_length())
        omap = OffsetMap(slots, self.load_factor)
        decoded: List[_Segment] = []
        for snap in dirty_sec:
            seg = _Segment(snap)
            keyed = seg.arrays.key_len >= 0
            h, o = seg.hashes[keyed], seg.arrays.offsets[keyed]
            if omap.size + omap.new_keys(h) > omap.max_entries:
                if not decoded:
                    raise InvalidConfig(
                        f"log.cleaner.dedupe.buffer.size={self.dedupe_buffer_size} holds "
                        f"{omap.max_entries} keys, fewer than segment {snap.base_offset} of {log.dir} has")
                break
            step = max(1, self.io_buffer_size // 64)  # records per vectorised insert
            for i in range(0, len(h), step):
                omap.put_many(h[i:i + step], o[i:i + step])
            decoded.append(seg)
        end_offset = decoded[-1].snap.next_offset if decoded else first_dirty

        # ---- rewrite the clean section and the mapped part of the dirty section
        examined = [_Segment(s) for s in clean_sec] + decoded
        retained = _last_batch_of_each_producer(examined, producer_ids)
        replacements = []
        rec_before = rec_after = bytes_before = bytes_after = tombstones = 0
        for seg, retain in zip(examined, retained):
            snap = seg.snap
            arr = seg.arrays
            n = len(arr)
            rec_before += n
            bytes_before += snap.size_bytes
            keep = np.ones(n, dtype=bool)
            keyed = arr.key_len >= 0
            latest = omap.get_many(seg.hashes)
            keep &= ~keyed | (latest < 0) | (arr.offsets >= latest)
            tomb = keep & keyed & (arr.value_len < 0)
            was_clean = snap.next_offset <= first_dirty
            if was_clean and now_ms - snap.modified_ms > cfg.delete_retention_ms and tomb.any():
                keep &= ~tomb
                tombstones += int(tomb.sum())
            n_keep = int(keep.sum())
            # a dirty segment with tombstones is rewritten even if unchanged: its new
            # modification time starts their delete.retention.ms
            # so is one holding an expired producer's empty batch (it goes now)
            if n_keep == n and not (not was_clean and tomb.any()) and not _drops_empty(seg, retain):
                rec_after += n
                bytes_after += snap.size_bytes
                continue
            data = _rewrite(seg, keep, retain)
            rec_after += n_keep
            bytes_after += len(data)
            replacements.append((snap, data))

        if replacements and not log.replace_segments(replacements, modified_ms=now_ms):
            return result("the log changed while cleaning (truncation, retention or close)", ratio)
        self._write_checkpoint(log, end_offset)
        return result(None, ratio, segments_cleaned=len(replacements), records_before=rec_before,
                      records_after=rec_after, bytes_before=bytes_before, bytes_after=bytes_after,
                      tombstones_removed=tombstones, cleaned_up_to=end_offset)


# ---------------------------------------------------------------- rewriting
def _last_batch_of_each_producer(segments: Sequence[_Segment],
                                 producer_ids: Optional[Collection[int]] = None) -> List[Set[int]]:
    """For each segment, the indexes of its batches that are the last batch of their
    producer id in all of ``segments`` (those batches are kept even if empty); only of
    ``producer_ids`` when given (the others expired)."""
    last: Dict[int, Tuple[int, int]] = {}
    for si, seg in enumerate(segments):
        for bi, b in enumerate(seg.batches):
            if b.producer_id >= 0 and (producer_ids is None or b.producer_id in producer_ids):
                last[b.producer_id] = (si, bi)
    out: List[Set[int]] = [set() for _ in segments]
    for si, bi in last.values():
        out[si].add(bi)
    return out


def _drops_empty(seg: _Segment, retain: Set[int]) -> bool:
    """Whether the segment holds a producer's empty batch that is no longer retained."""
    return any(b.producer_id >= 0 and b.record_count == 0 and i not in retain
               for i, b in enumerate(seg.batches))


def _rewrite(seg: _Segment, keep: np.ndarray, retain: Set[int]) -> bytes:
    """The segment's batches keeping the records where ``keep``, tiling its offsets.

    A batch with a producer id keeps its exact offset range, producer fields and base
    sequence if it keeps a record or its index is in ``retain`` (then possibly empty);
    otherwise it goes.  Offsets of removed batches go, run by run of one leader epoch,
    to a kept batch without a producer id of that epoch next to them (the one before
    grows, else the one after starts earlier), else to an empty batch without a
    producer id of that epoch.  So the first offset of each leader epoch still lies in
    a batch of that epoch.
    """
    snap = seg.snap
    out: List[Any] = []
    # leader epoch of out[-1] if it has no producer id (its range may grow), else None
    tail_epoch: Optional[int] = None
    expected = snap.base_offset  # next offset the output (with `gap`) must cover
    # offsets of removed batches not covered yet: runs of one leader epoch,
    # [first offset, last offset, leader epoch, max timestamp]
    gap: List[List[int]] = []

    def remove(b: RecordBatch) -> None:
        if gap and gap[-1][2] == b.partition_leader_epoch:
            gap[-1][1] = b.last_offset
            gap[-1][3] = max(gap[-1][3], b.max_timestamp)
        else:
            gap.append([expected, b.last_offset, b.partition_leader_epoch, b.max_timestamp])

    def cover_gap() -> None:
        nonlocal tail_epoch
        for first, last, epoch, ts in gap:
            if tail_epoch == epoch:
                out[-1] = with_last_offset(out[-1], last)
            else:
                out.append(empty_batch(first, last, ts, partition_leader_epoch=epoch))
                tail_epoch = epoch
        gap.clear()

    for i, b in enumerate(seg.batches):
        lo, hi = int(seg.batch_first[i]), int(seg.batch_first[i + 1])
        idx = np.nonzero(keep[lo:hi])[0] + lo
        n_keep = len(idx)
        pid = b.producer_id
        # (an empty batch without a producer id is an earlier cleaning's filler)
        if n_keep == 0 and (pid < 0 or i not in retain):
            remove(b)
            expected = b.next_offset
            continue
        start = b.base_offset
        epoch = b.partition_leader_epoch
        if pid < 0 and gap and gap[-1][2] == epoch and tail_epoch != epoch:
            start = gap.pop()[0]  # it starts earlier, its records keep their true offsets
        cover_gap()
        if n_keep == hi - lo and start == b.base_offset:
            out.append(b.buffer)  # unchanged (for a producer's, maybe an earlier empty one)
        else:  # with no record left: a producer's empty batch, same header fields
            out.append(rewrite_batch(b, seg.arrays, idx, base_offset=start))
        tail_epoch = epoch if pid < 0 else None
        expected = b.next_offset
    if expected < snap.next_offset:  # offsets after the last batch (not in a valid log)
        gap.append([expected, snap.next_offset - 1, -1 if tail_epoch is None else tail_epoch,
                    snap.max_timestamp])
    cover_gap()
    return b"".join(bytes(x) if isinstance(x, memoryview) else x for x in out)
