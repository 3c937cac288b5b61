"""Leader epochs: the leader-epoch cache of a partition and KIP-101 truncation.

Owns the file ``leader-epoch-checkpoint`` in a partition directory and the logic by
which a returning follower finds where its log stops agreeing with the leader's
(KIP-101, KIP-279: OffsetsForLeaderEpoch), so that replicas never diverge
(docs/architecture.md, Invariant 6).

Model.  Every batch a leader appends carries the leader's epoch (partitionLeaderEpoch).
The cache holds one entry per epoch present in the log: (epoch, start_offset), the
offset of the first record of that epoch; entries are strictly increasing in both.
An epoch has exactly one leader, and a leader only appends to its own log in its own
epoch, so the pair (offset, epoch) names one record on every replica: two replicas
that both hold epoch E agree on every offset below E's start offset and on E's
records up to the shorter of the two.  The whole truncation logic rests on that.
It needs, of the caller:

* a leader records its epoch when it becomes leader, ``assign(epoch, log_end_offset)``
  (as Kafka's Partition.makeLeader), and every append assigns a batch's epoch when it
  is newer than :attr:`LeaderEpochCache.latest_epoch` (before writing the batch);
* a replica that lost records it once had (power loss, unclean truncation) never
  appends again in an epoch it held before: it needs a new epoch from the controller;
* after ``Log.truncate_to(x)``: ``truncate_from_end(x)``; after the log start moves:
  ``truncate_from_start(log_start_offset)``; at open: :func:`recover_cache`.

File format (Kafka's ``LeaderEpochCheckpointFile``)::

    0            <- version
    2            <- number of entries
    0 0          <- epoch start_offset
    3 1500

Written to ``leader-epoch-checkpoint.tmp``, fsynced, renamed over the file, then the
directory is fsynced: a crash leaves the old or the new file, never half of one.
A file that cannot be parsed makes :meth:`LeaderEpochCache.load` raise StorageError
naming it; :func:`recover_cache` then rebuilds the cache from the log's batches.

Sans-I/O apart from the checkpoint file: no threads, no clock.  A lock makes each
method atomic, so fetch handlers on other threads may call :meth:`end_offset_for`.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, NamedTuple, Optional, Tuple

from pylog.errors import InvalidArgument, StorageError
from pylog.storage.checkpoint import fsync_dir, write_atomically
from pylog.util import check_int

if TYPE_CHECKING:  # pragma: no cover
    from pylog.storage import Log

__all__ = [
    "LEADER_EPOCH_CHECKPOINT_FILE",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochCache",
    "rebuild_from_log",
    "recover_cache",
    "divergence",
    "truncation_step",
    "truncation_offset",
]

logger = logging.getLogger("pylog.replication")

#: Kafka's file name, in the partition directory.
LEADER_EPOCH_CHECKPOINT_FILE = "leader-epoch-checkpoint"
#: Kafka's "no epoch" (RecordBatch.NO_PARTITION_LEADER_EPOCH) and "no offset" answers.
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
_VERSION = 0
#: Limits: epochs are int32 in the batch header, offsets int64.
MAX_EPOCH = 0x7FFFFFFF
MAX_OFFSET = 2**63 - 1
#: Largest checkpoint file read (bytes): far above any real cache, bounds a bad file.
MAX_CHECKPOINT_BYTES = 64 << 20
#: Batch headers rebuild_from_log asks Log.read for at a time (bytes of batches).
_SCAN_READ_BYTES = 4 << 20


class EpochEntry(NamedTuple):
    """One leader epoch and the offset of its first record."""

    epoch: int
    start_offset: int


class LeaderEpochCache:
    """Kafka's LeaderEpochFileCache: (epoch, start_offset) entries of one partition.

    ``directory`` is the partition directory holding ``leader-epoch-checkpoint``;
    None keeps the cache in memory only (tests, models).  Every method that changes
    the entries writes the checkpoint before it returns (as Kafka does), so the file
    is never behind the cache; :meth:`flush` rewrites it on demand.
    """

    def __init__(self, directory: "os.PathLike[str] | str | None" = None,
                 entries: Iterable[Tuple[int, int]] = ()) -> None:
        self.directory = None if directory is None else Path(directory)
        self._lock = threading.Lock()
        self._epochs: List[int] = []
        self._starts: List[int] = []
        prev: Optional[EpochEntry] = None
        for item in entries:
            epoch, start = item
            check_int("epoch", epoch, min=0, max=MAX_EPOCH)
            check_int("start_offset", start, min=0, max=MAX_OFFSET)
            if prev is not None and not (epoch > prev.epoch and start > prev.start_offset):
                raise InvalidArgument(
                    f"leader epoch entries must increase strictly in epoch and start offset: "
                    f"({epoch}, {start}) follows {tuple(prev)}")
            self._epochs.append(epoch)
            self._starts.append(start)
            prev = EpochEntry(epoch, start)

    # ------------------------------------------------------------ file I/O
    @property
    def path(self) -> Optional[Path]:
        """The checkpoint file, or None for an in-memory cache."""
        return None if self.directory is None else self.directory / LEADER_EPOCH_CHECKPOINT_FILE

    @classmethod
    def load(cls, directory: "os.PathLike[str] | str") -> "LeaderEpochCache":
        """The cache of the partition directory ``directory`` as its checkpoint says.

        A missing file is an empty cache.  A file that is not a well-formed checkpoint
        (version 0, the entry count, then that many "epoch start_offset" lines, strictly
        increasing, nothing else) raises StorageError naming the file and what is wrong;
        on recovery use :func:`recover_cache`, which rebuilds from the log instead.
        """
        path = Path(directory) / LEADER_EPOCH_CHECKPOINT_FILE
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_CHECKPOINT_BYTES + 1)
        except FileNotFoundError:
            return cls(directory)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"reading leader epoch checkpoint {path}: {exc.strerror}") from exc
        if len(raw) > MAX_CHECKPOINT_BYTES:
            raise StorageError(0, f"leader epoch checkpoint {path} is larger than {MAX_CHECKPOINT_BYTES} bytes")
        return cls(directory, _parse_checkpoint(raw, path))

    def flush(self) -> None:
        """Write the checkpoint atomically (tmp, fsync, rename, directory fsync).

        No-op for an in-memory cache.  Raises StorageError if the file cannot be written.
        """
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        path = self.path
        if path is None:
            return
        lines = [str(_VERSION), str(len(self._epochs))]
        lines += [f"{e} {s}" for e, s in zip(self._epochs, self._starts)]
        data = ("\n".join(lines) + "\n").encode()
        try:
            write_atomically(path, data)  # a full disk: the old checkpoint stays, no .tmp
            fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(exc.errno or 0, f"writing leader epoch checkpoint {path}: {exc.strerror}") from exc

    # ------------------------------------------------------------- queries
    @property
    def entries(self) -> Tuple[EpochEntry, ...]:
        """The entries, oldest first."""
        with self._lock:
            return tuple(EpochEntry(e, s) for e, s in zip(self._epochs, self._starts))

    @property
    def latest_epoch(self) -> int:
        """The largest epoch held, -1 (UNDEFINED_EPOCH) if none."""
        with self._lock:
            return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    @property
    def earliest_epoch(self) -> int:
        """The smallest epoch held, -1 if none."""
        with self._lock:
            return self._epochs[0] if self._epochs else UNDEFINED_EPOCH

    def start_offset_of(self, epoch: int) -> Optional[int]:
        """The start offset of ``epoch``, None if the cache does not hold it."""
        with self._lock:
            i = bisect.bisect_left(self._epochs, epoch)
            if i < len(self._epochs) and self._epochs[i] == epoch:
                return self._starts[i]
            return None

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch of the record at ``offset`` as far as the cache tells: the epoch of
        the last entry starting at or below it; -1 if none."""
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            return self._epochs[i] if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> Tuple[int, int]:
        """OffsetsForLeaderEpoch: (epoch, end_offset) for ``requested_epoch``.

        ``epoch`` is the largest epoch held that is <= ``requested_epoch``; ``end_offset``
        is the start offset of the next larger epoch held, or ``log_end_offset`` if
        ``epoch`` is the latest.  (-1, -1) (UNDEFINED) if ``requested_epoch`` is -1, the
        cache is empty or ``requested_epoch`` is below every epoch held.

        Two cases differ from Kafka's LeaderEpochFileCache.endOffsetFor, on purpose:
        a requested epoch above the latest answers (latest, log_end_offset) where Kafka
        answers UNDEFINED (a leader whose cache lags, or a deposed leader asked by a
        follower that is ahead, still gives a safe answer: see :func:`truncation_step`);
        a requested epoch below the first answers UNDEFINED where Kafka answers
        (requested, first start offset) — the follower then truncates fully.
        """
        check_int("requested_epoch", requested_epoch, min=-1, max=MAX_EPOCH)
        check_int("log_end_offset", log_end_offset, min=0, max=MAX_OFFSET)
        with self._lock:
            if requested_epoch == UNDEFINED_EPOCH:
                return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
            i = bisect.bisect_right(self._epochs, requested_epoch) - 1
            if i < 0:
                return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
            if i == len(self._epochs) - 1:
                return self._epochs[i], log_end_offset
            return self._epochs[i], self._starts[i + 1]

    # ----------------------------------------------------------- mutations
    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; return whether anything changed.

        Ignored (False) when ``epoch`` is below the latest epoch, or equals it and
        ``start_offset`` is not below its start.  Otherwise, as Kafka's assign: every
        entry whose epoch is >= ``epoch`` or whose start offset is >= ``start_offset`` is
        removed from the end, then the entry is added, and the checkpoint is written.
        (Kafka's assign would also let an older epoch drop newer ones; here that is
        :meth:`truncate_from_end`'s job, after the log truncation that causes it.)
        Raises InvalidArgument for a negative epoch or offset, StorageError if the
        checkpoint cannot be written (a full disk): the cache is then left unchanged.
        """
        check_int("epoch", epoch, min=0, max=MAX_EPOCH)
        check_int("start_offset", start_offset, min=0, max=MAX_OFFSET)
        with self._lock:
            if self._epochs:
                last_epoch, last_start = self._epochs[-1], self._starts[-1]
                if epoch < last_epoch or (epoch == last_epoch and start_offset >= last_start):
                    return False
            before = (list(self._epochs), list(self._starts))
            removed = []
            while self._epochs and (self._epochs[-1] >= epoch or self._starts[-1] >= start_offset):
                removed.append((self._epochs.pop(), self._starts.pop()))
            if removed:
                logger.info("leader epoch cache %s: epoch %d at offset %d replaces %s",
                            self.directory, epoch, start_offset, removed[::-1])
            self._epochs.append(epoch)
            self._starts.append(start_offset)
            try:
                self._flush_locked()
            except StorageError:
                self._epochs, self._starts = before
                raise
            return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """After the log was truncated to ``end_offset``: drop the entries starting at or
        beyond it; return whether anything changed (then the checkpoint is written)."""
        check_int("end_offset", end_offset, min=0, max=MAX_OFFSET)
        with self._lock:
            if not self._truncate_from_end_locked(end_offset):
                return False
            self._flush_locked()
            return True

    def _truncate_from_end_locked(self, end_offset: int) -> bool:
        if not self._starts or self._starts[-1] < end_offset:
            return False
        i = bisect.bisect_left(self._starts, end_offset)
        del self._epochs[i:], self._starts[i:]
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """After the log start moved to ``start_offset``: drop the entries wholly below it;
        the first kept entry starts at max(its start, ``start_offset``).  Returns
        whether anything changed (then the checkpoint is written)."""
        check_int("start_offset", start_offset, min=0, max=MAX_OFFSET)
        with self._lock:
            if not self._truncate_from_start_locked(start_offset):
                return False
            self._flush_locked()
            return True

    def _truncate_from_start_locked(self, start_offset: int) -> bool:
        # the last entry starting at or below start_offset covers it
        i = bisect.bisect_right(self._starts, start_offset) - 1
        if i < 0 or (i == 0 and self._starts[0] == start_offset):
            return False
        del self._epochs[:i], self._starts[:i]
        self._starts[0] = start_offset
        return True

    def clear(self) -> None:
        """Drop every entry (the log was deleted or truncated fully) and write the file."""
        with self._lock:
            self._epochs.clear()
            self._starts.clear()
            self._flush_locked()

    def __len__(self) -> int:
        return len(self._epochs)

    def __repr__(self) -> str:
        return f"LeaderEpochCache({str(self.directory)!r}, {list(self.entries)})"


def _parse_checkpoint(raw: bytes, path: Path) -> List[Tuple[int, int]]:
    def bad(why: str) -> StorageError:
        return StorageError(0, f"leader epoch checkpoint {path} is damaged: {why}")

    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise bad("not ASCII text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise bad("fewer than 2 lines (version, count)")
    try:
        version = int(lines[0])
        count = int(lines[1])
    except ValueError:
        raise bad(f"version/count lines {lines[0]!r}, {lines[1]!r} are not integers") from None
    if version != _VERSION:
        raise bad(f"version {version}, expected {_VERSION}")
    if count != len(lines) - 2:
        raise bad(f"count says {count} entries, the file has {len(lines) - 2}")
    out: List[Tuple[int, int]] = []
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split(" ")
        if len(parts) != 2:
            raise bad(f"line {n} {line!r} is not 'epoch start_offset'")
        try:
            epoch, start = int(parts[0]), int(parts[1])
        except ValueError:
            raise bad(f"line {n} {line!r} is not two integers") from None
        if not 0 <= epoch <= MAX_EPOCH or not 0 <= start <= MAX_OFFSET:
            raise bad(f"line {n}: epoch {epoch} or start offset {start} out of range")
        if out and not (epoch > out[-1][0] and start > out[-1][1]):
            raise bad(f"line {n}: entry ({epoch}, {start}) does not increase on {out[-1]}")
        out.append((epoch, start))
    return out


# ======================================================================== log scans
def _scan_into(cache: LeaderEpochCache, log: "Log", start: int, end: int) -> bool:
    """Add an entry for every batch of ``log`` in [start, end) whose epoch is newer than
    the cache's latest.  Returns False if a batch carries an epoch below the latest
    seen (the log and the cache disagree), True otherwise.  The caller holds the
    cache's lock (or owns the cache alone); the file is not written."""
    pos = start
    epochs, starts = cache._epochs, cache._starts
    latest = epochs[-1] if epochs else UNDEFINED_EPOCH
    while pos < end:
        batches = log.read(pos, _SCAN_READ_BYTES, max_offset=end)
        if not batches:
            break
        for b in batches:
            epoch = b.partition_leader_epoch
            if epoch < 0:
                pass
            elif epoch > latest:
                first = max(b.base_offset, start)
                if starts and first <= starts[-1]:
                    return False  # a newer epoch at or below the latest entry's start
                epochs.append(epoch)
                starts.append(first)
                latest = epoch
            elif epoch < latest:
                return False
            pos = b.next_offset
    return True


def rebuild_from_log(log: "Log") -> LeaderEpochCache:
    """A cache for ``log``'s directory built from the partitionLeaderEpoch of every batch
    from the log start to the log end (batches without an epoch, -1, are skipped).

    The first entry starts at the log start offset even if its batch starts below.
    The checkpoint file is not written: call :meth:`LeaderEpochCache.flush`.  Raises
    what Log.read raises (LogClosed).
    """
    cache = LeaderEpochCache(log.dir)
    start, end = log.log_start_offset, log.log_end_offset
    if not _scan_into(cache, log, start, end):
        logger.warning("log %s: batch leader epochs decrease along the log; the rebuilt "
                       "epoch cache keeps the first occurrence of each newer epoch", log.dir)
        cache = LeaderEpochCache(log.dir)
        _scan_lenient(cache, log, start, end)
    return cache


def _scan_lenient(cache: LeaderEpochCache, log: "Log", start: int, end: int) -> None:
    pos = start
    while pos < end:
        batches = log.read(pos, _SCAN_READ_BYTES, max_offset=end)
        if not batches:
            break
        for b in batches:
            epoch = b.partition_leader_epoch
            if epoch > cache.latest_epoch:
                cache._epochs.append(epoch)
                cache._starts.append(max(b.base_offset, start))
            pos = b.next_offset


def recover_cache(log: "Log") -> LeaderEpochCache:
    """The epoch cache of ``log`` after a (re)open, consistent with the log's batches.

    Loads the checkpoint; drops entries at or beyond the log end (the log lost its tail
    in a crash or power loss) and clips at the log start; then checks the batches from
    the latest remaining entry's start to the log end and adds the epochs the
    checkpoint had not recorded yet (it lagged the log).  A damaged checkpoint, or one
    the batches contradict, is rebuilt from the whole log (logged at WARNING).  The
    checkpoint is written if anything changed.
    """
    start, end = log.log_start_offset, log.log_end_offset
    try:
        cache = LeaderEpochCache.load(log.dir)
    except StorageError as exc:
        logger.warning("%s; rebuilding the leader epoch cache from the log", exc)
        cache = rebuild_from_log(log)
        cache.flush()
        return cache
    before = cache.entries
    with cache._lock:
        cache._truncate_from_end_locked(end)
        cache._truncate_from_start_locked(start)
        scan_from = cache._starts[-1] if cache._starts else start
        ok = _scan_into(cache, log, scan_from, end)
        if ok and cache._starts:
            # the batch at the latest entry's start must carry that epoch (else the
            # checkpoint names an epoch the log does not hold there: rebuild)
            ok = _epoch_at(log, cache._starts[-1], end) in (cache._epochs[-1], None)
    if not ok:
        logger.warning("log %s: leader epoch checkpoint %s disagrees with the log's batches; "
                       "rebuilding it from the log", log.dir, before)
        cache = rebuild_from_log(log)
        cache.flush()
        return cache
    if cache.entries != before:
        logger.info("log %s: leader epoch cache recovered from %s to %s", log.dir, before, cache.entries)
        cache.flush()
    return cache


def _epoch_at(log: "Log", offset: int, end: int) -> Optional[int]:
    """partitionLeaderEpoch of the batch holding ``offset`` (None past the end)."""
    if offset >= end:
        return None
    batches = log.read(offset, 0, max_offset=end)
    return batches[0].partition_leader_epoch if batches else None


# ======================================================================= truncation
def divergence(follower_epoch: int, follower_leo: int, leader_cache: LeaderEpochCache,
               leader_leo: int) -> Optional[int]:
    """One KIP-101 step on the leader's side: the offset at or above which the follower's
    log may disagree, given the follower's latest epoch and log end offset.

    The leader's end offset for ``follower_epoch`` (:meth:`LeaderEpochCache.end_offset_for`),
    at most ``follower_leo``.  None when the leader holds no epoch <= ``follower_epoch``
    (UNDEFINED): nothing of the follower's log can be trusted, truncate fully.

    Final only when the leader holds ``follower_epoch`` itself.  When it holds only an
    older epoch, the follower's records of ``follower_epoch`` all diverge, but this
    offset may lie above their start (the follower's log is not known here); the
    follower must then look up its own end offset for the leader's epoch —
    :func:`truncation_step` does that, :func:`truncation_offset` loops it to the end.
    """
    check_int("follower_leo", follower_leo, min=0, max=MAX_OFFSET)
    epoch, end = leader_cache.end_offset_for(follower_epoch, leader_leo)
    if epoch == UNDEFINED_EPOCH:
        return None
    return min(end, follower_leo)


def truncation_step(follower_cache: LeaderEpochCache, follower_leo: int,
                    leader_epoch: int, leader_end_offset: int) -> Tuple[int, bool]:
    """The follower's side of one OffsetsForLeaderEpoch exchange (Kafka's
    getOffsetTruncationState, KIP-279): given the leader's answer (``leader_epoch``,
    ``leader_end_offset``) to the follower's latest epoch, return (offset, done).

    The follower truncates its log to ``offset`` (and its cache from the end); if not
    ``done`` it asks again with its new latest epoch.  Each not-done step strictly
    lowers the follower's latest epoch, so the exchange ends.  An UNDEFINED answer, or
    a follower holding no epoch at or below the leader's, gives (0, True): nothing of
    the follower's log is known to agree — truncate fully (if 0 is below the
    follower's log start, delete everything and restart at the leader's log start).
    """
    check_int("follower_leo", follower_leo, min=0, max=MAX_OFFSET)
    check_int("leader_epoch", leader_epoch, min=-1, max=MAX_EPOCH)
    if leader_epoch == UNDEFINED_EPOCH or leader_end_offset < 0:
        return 0, True
    f_epoch, f_end = follower_cache.end_offset_for(leader_epoch, follower_leo)
    if f_epoch == UNDEFINED_EPOCH:
        return 0, True
    if f_epoch == leader_epoch:
        return min(leader_end_offset, f_end, follower_leo), True
    # The follower lacks leader_epoch: its records from the start of its next epoch
    # above f_epoch (all in epochs the leader does not hold) diverge.
    return min(f_end, follower_leo), False


def truncation_offset(follower_cache: LeaderEpochCache, follower_leo: int,
                      leader_cache: LeaderEpochCache, leader_leo: int) -> int:
    """The offset the follower must truncate to so that its log is a prefix of the
    leader's: the first offset at which the two logs' epochs differ (or the shorter
    log's end), found by walking back epochs as the OffsetsForLeaderEpoch exchange
    does (:func:`truncation_step` against the leader's :meth:`end_offset_for`).

    Records are trusted only as far as an epoch both logs hold vouches for them:
    with no common epoch the answer is 0, even if both logs begin with records
    without an epoch.  Neither cache is changed.
    """
    check_int("follower_leo", follower_leo, min=0, max=MAX_OFFSET)
    check_int("leader_leo", leader_leo, min=0, max=MAX_OFFSET)
    follower = LeaderEpochCache(None, follower_cache.entries)
    leo = follower_leo
    follower.truncate_from_end(leo)
    for _ in range(len(follower) + 1):
        epoch = follower.latest_epoch
        if epoch == UNDEFINED_EPOCH:
            return 0
        answer = leader_cache.end_offset_for(epoch, leader_leo)
        offset, done = truncation_step(follower, leo, *answer)
        if done:
            return offset
        leo = offset
        follower.truncate_from_end(leo)
    raise AssertionError("truncation_offset: the exchange did not end")  # pragma: no cover
