"""Process kill and power loss, emulated on real log directories.

The deterministic simulator (issue 4, point 8) uses these to put a partition's
directory in a state a real failure could leave, then reopens it with
:meth:`Log.open`, which must recover (docs/architecture.md, Invariant 2).

``kill_process``
    SIGKILL: the Log is dropped with no flush, no checkpoint and no clean-shutdown
    marker.  Every write already made is in the page cache, which survives a process
    kill, so the files stay exactly as they are.

``power_loss``
    The machine loses power after the process died: what was not fsynced may be gone.
    The Log's recovery point is what was fsynced (Log.flush moves it only after the
    fsyncs).  Everything below it survives.  From the first batch at or after it
    (or, with ``partial_writeback``, a later batch boundary chosen by the RNG: the
    kernel may have written some dirty pages back), the ``.log`` is cut; a torn tail
    may follow (a strict prefix of the next batch, random garbage, zeros of a
    preallocated file); later segments are deleted (their index files are sometimes
    left behind as orphans); the index files of the segments that are not wholly
    durable are kept, deleted, cut or garbled.  Checkpoint files (recovery point, log
    start, leader epochs) are written atomically with fsync, so they keep whatever
    was last written: they are not touched.

Not emulated: bytes a truncation removed coming back (a truncation that was not yet
fsynced when power went), reordered write-back that keeps a later page but loses an
earlier one inside the kept prefix, and damage to fsynced data (a disk lying).

Everything is chosen by the ``random.Random`` passed in: the same seed, the same
damage.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from pylog.errors import InvalidArgument, StorageError
from pylog.storage.checkpoint import OffsetCheckpointFile
from pylog.storage.log import CLEAN_SHUTDOWN_FILE, LOCK_FILE, RECOVERY_POINT_FILE
from pylog.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, parse_segment_file_name, segment_file_name
from pylog.util import check_int

if TYPE_CHECKING:  # pragma: no cover
    from pylog.storage.log import Log

__all__ = ["PowerLossReport", "kill_process", "power_loss", "power_loss_log"]

#: baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8 (the start of
#: Kafka's v2 batch header) and the header size.
_HEADER = struct.Struct(">qiib")
_HEADER_BYTES = 61
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_POS = 23
#: Most garbage bytes a torn tail gets.
MAX_GARBAGE_BYTES = 256


@dataclass
class PowerLossReport:
    """What :func:`power_loss` did to a directory."""

    durable_offset: int  #: the offset below which nothing was touched
    cut_offset: int  #: data from this offset on was dropped (the log recovers to >= this)
    cut_segment: Optional[int]  #: base offset of the segment cut, None if nothing was there
    cut_position: int  #: byte position of the cut in that segment's .log
    torn_prefix_bytes: int = 0  #: bytes of the next batch left after the cut
    garbage_bytes: int = 0  #: random bytes left after those
    zero_fill_bytes: int = 0  #: zeros after those (a preallocated file's size survived)
    deleted_segments: List[int] = field(default_factory=list)  #: base offsets of deleted segments
    index_damage: List[Tuple[str, str]] = field(default_factory=list)  #: (file name, what was done)
    clean: bool = False  #: the log had been closed cleanly: nothing could be lost


def kill_process(log: "Log") -> None:
    """Abandon an open Log as SIGKILL would: no flush, no checkpoint, no clean-shutdown
    marker, page cache kept (the files stay as they are).  Locks, mappings and files
    are released, so the directory can be reopened at once (crash recovery runs).
    Views of the log handed out earlier keep their bytes.  A closed log is left alone.
    """
    log.abandon()


def power_loss_log(log: "Log", rng: random.Random, *, tear: bool = True,
                   partial_writeback: bool = False) -> PowerLossReport:
    """Kill ``log``'s process (if it is still open) and cut power: :func:`kill_process`,
    then :func:`power_loss` on its directory with the log's recovery point (what it had
    fsynced when it was last open) as the durable offset.  A log that was closed
    cleanly loses nothing.  ``log`` must be the last Log that had the directory open.
    """
    durable = log.recovery_point
    kill_process(log)
    return power_loss(log.dir, durable_offset=durable, rng=rng, tear=tear,
                      partial_writeback=partial_writeback)


def power_loss(log_dir: "os.PathLike[str] | str", *, durable_offset: int, rng: random.Random,
               tear: bool = True, partial_writeback: bool = False) -> PowerLossReport:
    """Make ``log_dir`` look as a power loss could leave it; return what was done.

    ``durable_offset`` is the Log's recovery point when it was abandoned: every batch
    starting below it survives intact, so a later Log.open recovers a log end offset
    >= ``durable_offset`` (the batch holding it is kept whole) and nothing below it
    changes.  The cut is at the first batch at or after it, or with
    ``partial_writeback`` at a batch boundary the RNG picks at or after that one.
    With ``tear`` the RNG may leave a torn tail after the cut (see the module).

    A directory whose log was closed cleanly (it holds the clean-shutdown marker) had
    everything fsynced: it is left alone.  Raises StorageError if a Log still has the
    directory open (call :func:`kill_process` first) or it cannot be read/written,
    InvalidArgument for a bad argument.
    """
    check_int("durable_offset", durable_offset, min=0)
    if not isinstance(rng, random.Random):
        raise InvalidArgument(f"rng must be a random.Random, got {type(rng).__name__}")
    directory = Path(log_dir)
    if not directory.is_dir():
        raise StorageError(0, f"power_loss: {directory} is not a directory")
    _check_not_open(directory)
    if (directory / CLEAN_SHUTDOWN_FILE).exists():
        return PowerLossReport(durable_offset, durable_offset, None, 0, clean=True)
    try:
        return _power_loss(directory, durable_offset, rng, tear, partial_writeback)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(exc.errno or 0, f"power_loss on {directory}: {exc.strerror}") from exc


def _check_not_open(directory: Path) -> None:
    lock = directory / LOCK_FILE
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StorageError(0, f"power_loss: the log in {directory} is still open; "
                                  "call kill_process(log) first") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _batch_boundaries(data: "mmap.mmap | bytes", base: int) -> List[Tuple[int, int, int, int]]:
    """(position, size, base offset, next offset) of each batch at the start of a .log's
    bytes, by header walk; stops at zeros, a bad length or magic, or a batch cut by the
    end.  (The file is an abandoned log's: its batches were validated when they were
    appended or recovered, so no CRC check is needed to find where they are.)"""
    out: List[Tuple[int, int, int, int]] = []
    pos = 0
    expect = base
    while len(data) - pos >= _HEADER_BYTES:
        offset, length, _epoch, magic = _HEADER.unpack_from(data, pos)
        delta = _LAST_OFFSET_DELTA.unpack_from(data, pos + _LAST_OFFSET_DELTA_POS)[0]
        size = 12 + length
        if length < _HEADER_BYTES - 12 or magic != 2 or pos + size > len(data) or delta < 0 \
                or offset < expect:
            break
        out.append((pos, size, offset, offset + delta + 1))
        expect = offset + delta + 1
        pos += size
    return out


def _read_prefix(path: Path, start: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(size)


def _walk_file(path: Path, base: int) -> List[Tuple[int, int, int, int]]:
    """The batches of one .log file, read through a private read-only mapping (only the
    header pages are touched: an active segment's file is segment.bytes long)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
            return _batch_boundaries(mm, base)


def _checkpointed_recovery_point(directory: Path) -> Optional[int]:
    entries = OffsetCheckpointFile(directory / RECOVERY_POINT_FILE).read()
    if len(entries) == 1:
        return next(iter(entries.values()))
    return None


def _power_loss(directory: Path, durable: int, rng: random.Random, tear: bool,
                partial_writeback: bool) -> PowerLossReport:
    fsynced = _checkpointed_recovery_point(directory)
    if fsynced is not None and durable < fsynced:
        raise InvalidArgument(
            f"durable_offset {durable} is below the recovery point checkpointed in {directory} "
            f"({fsynced}): the log had fsynced up to there")
    names = os.listdir(directory)
    bases = sorted(b for b in (parse_segment_file_name(n) for n in names) if b is not None)
    if not bases:
        return PowerLossReport(durable, durable, None, 0)
    # The segment holding the durable offset: the last one starting at or below it.
    first = 0
    for i, b in enumerate(bases):
        if b <= durable:
            first = i
    # Cut points, in order: (segment index, byte position, offset, size of the batch
    # there — 0 at the end of the data).
    candidates: List[Tuple[int, int, int, int]] = []
    data_end_offset = bases[first]
    for i in range(first, len(bases)):
        batches = _walk_file(directory / segment_file_name(bases[i], LOG_SUFFIX), bases[i])
        for pos, size, off, _nxt in batches:
            if off >= durable:
                candidates.append((i, pos, off, size))
        data_end_offset = batches[-1][3] if batches else bases[i]
        if candidates and not partial_writeback:
            break
        if i == len(bases) - 1 or bases[i + 1] != data_end_offset:
            # The end of the data (a gap before the next segment: Log.open would drop
            # the later ones anyway).
            data_end = batches[-1][0] + batches[-1][1] if batches else 0
            candidates.append((i, data_end, data_end_offset, 0))
            break
    if candidates[0][2] < durable:
        raise InvalidArgument(
            f"durable_offset {durable} is beyond the data in {directory} (it ends at offset "
            f"{data_end_offset}): pass the abandoned Log's recovery point")
    choice = rng.randrange(len(candidates)) if partial_writeback else 0
    seg_i, cut_pos, cut_offset, next_size = candidates[choice]
    report = PowerLossReport(durable, cut_offset, bases[seg_i], cut_pos)
    log_path = directory / segment_file_name(bases[seg_i], LOG_SUFFIX)
    # ---- the cut segment's .log: the kept prefix, then maybe a torn tail
    tail = b""
    if tear:
        if next_size > 1 and rng.random() < 0.5:
            k = rng.randrange(1, next_size)  # a strict prefix of the next batch
            tail += _read_prefix(log_path, cut_pos, k)
            report.torn_prefix_bytes = k
        if rng.random() < 0.4:
            g = rng.randrange(1, MAX_GARBAGE_BYTES + 1)
            tail += rng.randbytes(g)
            report.garbage_bytes = g
    kept = cut_pos + len(tail)
    file_size = log_path.stat().st_size
    with open(log_path, "r+b") as f:
        f.seek(cut_pos)
        f.write(tail)
        f.truncate(kept)
        if tear and file_size > kept and rng.random() < 0.5:
            f.truncate(file_size)  # the preallocated size survived: zeros after the tail
            report.zero_fill_bytes = file_size - kept
    # ---- later segments are lost; sometimes their index files are left behind
    for i in range(seg_i + 1, len(bases)):
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            p = directory / segment_file_name(bases[i], suffix)
            if suffix != LOG_SUFFIX and tear and rng.random() < 0.3:
                continue  # an orphan index file: Log.open removes it
            if p.exists():
                p.unlink()
        report.deleted_segments.append(bases[i])
    # ---- index files of the segments that were not wholly durable (Log.open
    # recovers those segments, rebuilding their indexes from the .log)
    for i in range(first, seg_i + 1):
        for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            p = directory / segment_file_name(bases[i], suffix)
            what = _damage_index(p, rng) if tear else "kept"
            if what != "kept":
                report.index_damage.append((p.name, what))
    return report


def _damage_index(path: Path, rng: random.Random) -> str:
    """Keep, delete, cut or garble one index file (its segment is recovered at open,
    which rebuilds the indexes from the .log)."""
    if not path.exists():
        return "kept"
    how = rng.choice(("kept", "kept", "delete", "cut", "garble", "zero"))
    if how == "delete":
        path.unlink()
    elif how == "cut":
        size = path.stat().st_size
        os.truncate(path, rng.randrange(0, size + 1) if size else 0)
    elif how in ("garble", "zero"):
        size = path.stat().st_size
        if size:
            with open(path, "r+b") as f:
                for _ in range(rng.randint(1, 8)):
                    pos = rng.randrange(size)
                    n = min(size - pos, rng.randint(1, 24))
                    f.seek(pos)
                    f.write(bytes(n) if how == "zero" else bytes(rng.getrandbits(8) for _ in range(n)))
    return how
