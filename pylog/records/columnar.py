"""Columnar records: numpy arrays over one buffer, checked once, built in C per batch.

The write-side mirror of :class:`~pylog.records.RecordArrays` (what ``poll_arrays`` and
``decode_records`` return).  A column of values (and optionally of keys) is one
contiguous bytes-like buffer plus one of three index layouts, given by keyword so that
no array can be mistaken for another:

``lengths=``
    int array of n lengths; the values lie end to end from byte 0 of the buffer, in
    order (bytes past the last one are ignored).  -1 is a null value; 0 an empty one.
``offsets=``
    int array of n + 1 end offsets, Arrow style: value *i* is
    ``buffer[offsets[i]:offsets[i + 1]]``.  Non-decreasing, within the buffer.  No nulls
    (use ``lengths=`` with -1 for those).
``positions=`` + ``lengths=``
    value *i* is ``buffer[positions[i]:positions[i] + lengths[i]]`` in any order, as
    ``RecordArrays.value_pos``/``value_len`` lay them out (-1 length: null, its position
    is ignored).  Records read with ``poll_arrays`` go back in as they came.

Every check is a numpy reduction over the arrays (no Python work per record): lengths
>= -1 and within int32, offsets monotone, every value inside its buffer, timestamps >=
-1.  :class:`Columns` then splits the records into runs that each fit one batch of a
size limit (from a per-record upper bound of the encoded size, in one C pass:
``pl_columns_split``), and makes the ``pl_batch_input`` of each run, pointing into the
caller's buffers: the C build reads the bytes where they are, no join, no copy in
Python.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from pylog._native import check, ffi, lib
from pylog.errors import InvalidArgument, InvalidTimestamp, RecordTooLarge
from pylog.records.batch import record_overhead_bound
from pylog.records.compression import compress

__all__ = ["Columns", "prepare_columns"]

_MAX_FIELD = 0x7FFFFFEF  #: bytes of one key or value (PL_MAX_RECORD_BYTES)
_INT32_MAX = 0x7FFFFFFF
_HEADER_BYTES = 61  #: PL_BATCH_HEADER_BYTES


def _varint_sizes(zigzagged: np.ndarray) -> np.ndarray:
    """Bytes of the varints of non-negative (already zigzagged) int64 values."""
    out = np.ones(len(zigzagged), dtype=np.int64)
    for shift in range(7, 63, 7):
        out += zigzagged >= (1 << shift)
    return out


def _int_array(x: Any, what: str, dtype: Any) -> np.ndarray:
    """``x`` as a 1-D contiguous array of ``dtype``; InvalidArgument unless it holds integers
    that fit."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} must be an array of integers: {exc}") from None
    if a.ndim != 1:
        raise InvalidArgument(f"{what} must be one-dimensional, got shape {a.shape}")
    if len(a) and not np.issubdtype(a.dtype, np.integer):
        raise InvalidArgument(f"{what} must hold integers, got dtype {a.dtype}")
    if a.dtype != dtype:
        info = np.iinfo(dtype)
        if len(a) and (int(a.min()) < info.min or int(a.max()) > info.max):
            raise InvalidArgument(f"{what} must fit in {np.dtype(dtype).name}: values from {int(a.min())} "
                                  f"to {int(a.max())}")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


class _Column:
    """One checked column (values or keys): buffer, int32 lengths, int64 positions or
    None (end to end from byte ``start``), and the total payload bytes."""

    __slots__ = ("buffer", "start", "lens", "pos", "payload", "has_null", "_at", "_at_byte", "_firsts",
                 "_extremes")

    def __init__(self, buffer: Any, start: int, lens: np.ndarray, pos: Optional[np.ndarray],
                 payload: int, has_null: bool) -> None:
        self.buffer = buffer
        self.start = start  #: byte of the first entry (end-to-end layout)
        self.lens = lens
        self.pos = pos
        self.payload = payload  #: bytes of all non-null entries
        self.has_null = has_null
        self._at = 0  #: entry whose first byte is _at_byte (a cursor: runs come in order)
        self._at_byte = start
        self._firsts: Dict[int, int] = {}  #: entry -> its first byte, as split() found them
        self._extremes: Optional[Tuple[int, int]] = None

    def extremes(self) -> Tuple[int, int]:
        """(shortest, longest) length, -1 for a null (one pass over the lengths, once)."""
        if self._extremes is None:
            self._extremes = (int(self.lens.min()), int(self.lens.max())) if len(self.lens) else (0, 0)
        return self._extremes

    def bytes_of(self, lens: np.ndarray) -> int:
        """Bytes the entries with these lengths take (nulls none)."""
        total = int(lens.sum(dtype=np.int64))
        return total + int(np.count_nonzero(lens < 0)) if self.has_null else total

    def first_byte(self, start: int, end: int) -> int:
        """End-to-end layout: the byte where entry ``start`` begins (remembering where
        ``end`` begins, so that consecutive runs cost one pass in all; runs made by
        :meth:`Columns.split` cost nothing, it noted where each begins)."""
        first = self._firsts.get(start)
        if first is not None:
            return first
        if start != self._at:
            self._at, self._at_byte = start, self.start + self.bytes_of(self.lens[:start])
        first = self._at_byte
        self._at, self._at_byte = end, first + self.bytes_of(self.lens[start:end])
        return first

    def positions(self) -> np.ndarray:
        """Each entry's position (int64), for any layout."""
        if self.pos is not None:
            return self.pos
        pos = np.empty(len(self.lens), dtype=np.int64)
        pos[0] = self.start
        np.cumsum(np.maximum(self.lens[:-1], 0) if self.has_null else self.lens[:-1], out=pos[1:])
        pos[1:] += self.start
        return pos


def _buffer_size(buffer: Any, what: str) -> int:
    if isinstance(buffer, (str, int, float, list, tuple)) or buffer is None:
        raise InvalidArgument(f"{what} must be one bytes-like buffer (bytes, bytearray, memoryview, "
                              f"numpy array), got {type(buffer).__name__}")
    try:
        with ffi.from_buffer("uint8_t[]", buffer) as b:
            return len(b)
    except (TypeError, ValueError, BufferError) as exc:
        raise InvalidArgument(f"{what} must be a contiguous bytes-like buffer: {exc}") from None


def _column(buffer: Any, lengths: Any, offsets: Any, positions: Any, what: str,
            count: Optional[int]) -> _Column:
    size = _buffer_size(buffer, what)
    lname, oname, pname = ("lengths", "offsets", "positions") if what == "values" else (
        "key_lengths", "key_offsets", "key_positions")
    if (lengths is None) == (offsets is None):
        raise InvalidArgument(f"give {what} exactly one of {lname}= (n lengths, -1 = null) or "
                              f"{oname}= (n + 1 end offsets)")
    if offsets is not None:
        if positions is not None:
            raise InvalidArgument(f"{pname}= goes with {lname}=, not with {oname}=")
        offs = _int_array(offsets, oname, np.int64)
        if len(offs) < 1:
            raise InvalidArgument(f"{oname} needs n + 1 entries (at least 1), got none")
        first = int(offs[0])
        if first < 0 or int(offs[-1]) > size:
            raise InvalidArgument(f"{oname} run from {first} to {int(offs[-1])}, outside the {size}-byte "
                                  f"{what} buffer")
        lens64 = np.diff(offs)
        lo64, hi64 = (int(lens64.min()), int(lens64.max())) if len(lens64) else (0, 0)
        if lo64 < 0:
            i = int(np.argmax(lens64 < 0))
            raise InvalidArgument(f"{oname} must not decrease: {oname}[{i + 1}]={int(offs[i + 1])} < "
                                  f"{oname}[{i}]={int(offs[i])}")
        if hi64 > _MAX_FIELD:
            i = int(np.argmax(lens64))
            raise RecordTooLarge(f"{what}[{i}] is {int(lens64[i])} bytes, over the {_MAX_FIELD}-byte limit")
        lens = lens64.astype(np.int32)
        col = _Column(buffer, first, lens, None, int(offs[-1]) - first, False)
        col._extremes = (lo64, hi64)
    else:
        lens = _int_array(lengths, lname, np.int32)
        lo, hi = (int(lens.min()), int(lens.max())) if len(lens) else (0, 0)
        if lo < -1:
            i = int(np.argmin(lens))
            raise InvalidArgument(f"{lname}[{i}] is {int(lens[i])}: a length is >= 0, or -1 for null")
        if hi > _MAX_FIELD:
            i = int(np.argmax(lens))
            raise RecordTooLarge(f"{what}[{i}] is {int(lens[i])} bytes, over the {_MAX_FIELD}-byte limit")
        col = _Column(buffer, 0, lens, None, 0, lo < 0)
        col._extremes = (lo, hi)
        col.payload = col.bytes_of(lens)
        if positions is None:
            if col.payload > size:
                raise InvalidArgument(f"{lname} add up to {col.payload} bytes but the {what} buffer has {size}")
        else:
            pos = _int_array(positions, pname, np.int64)
            if pos.shape != lens.shape:
                raise InvalidArgument(f"{pname} has {len(pos)} entries but {lname} has {len(lens)}")
            live = lens > 0
            if len(pos) and int(np.where(live, pos, 0).min()) < 0:
                i = int(np.argmax(live & (pos < 0)))
                raise InvalidArgument(f"{pname}[{i}] is {int(pos[i])}: positions are >= 0")
            stop = pos + lens
            if len(pos) and int(np.where(live, stop, 0).max()) > size:
                i = int(np.argmax(live & (stop > size)))
                raise InvalidArgument(f"{what}[{i}] at {pname}[{i}]={int(pos[i])} with length {int(lens[i])} "
                                      f"runs past the {size}-byte {what} buffer")
            col.pos = pos
    if count is not None and len(col.lens) != count:
        raise InvalidArgument(f"{what} has {len(col.lens)} entries but values has {count}")
    return col


class Columns:
    """Checked columnar records (see the module docstring).  Make with :func:`prepare_columns`."""

    __slots__ = ("count", "values", "keys", "timestamps")

    def __init__(self, values: _Column, keys: Optional[_Column], timestamps: Optional[np.ndarray]) -> None:
        self.count = len(values.lens)
        self.values = values
        self.keys = keys
        self.timestamps = timestamps

    @property
    def all_keyed(self) -> bool:
        """Every record has a (non-null) key."""
        return self.keys is not None and not self.keys.has_null

    @property
    def payload_bytes(self) -> int:
        """Bytes of all keys and values."""
        return self.values.payload + (self.keys.payload if self.keys is not None else 0)

    def _record_overhead(self, with_timestamps: bool) -> int:
        """An upper bound of the bytes a record of this input adds to a batch besides its
        key and value bytes: length varint, attributes, timestamp and offset deltas, key
        and value length varints, header count (bounds from the inputs' maxima)."""
        n = self.count
        vmax = self.values.extremes()[1]
        kmax = self.keys.extremes()[1] if self.keys is not None else -1
        ts_range = 0
        if with_timestamps and self.timestamps is not None:
            ts_range = int(self.timestamps.max()) - int(self.timestamps.min())
        return record_overhead_bound(n, vmax, kmax, ts_range)

    def _payloads(self, start: int = 0, end: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Key + value bytes of records [start, end) (int64; into ``out`` if given)."""
        v = self.values.lens[start:end]
        p = np.maximum(v, 0, out=out[:len(v)] if out is not None else None, dtype=np.int64)
        if self.keys is not None:
            p += np.maximum(self.keys.lens[start:end], 0)
        return p

    def _max_payload(self) -> int:
        m = max(self.values.extremes()[1], 0)
        if self.keys is not None:
            m += max(self.keys.extremes()[1], 0)
        return m

    def split(self, max_batch_bytes: int, with_timestamps: bool = True,
              max_records: int = _INT32_MAX) -> List[Tuple[int, int, int]]:
        """Runs ``(start, end, size_bound)`` of records, in order, each of which makes
        one batch of at most ``max_batch_bytes`` (``size_bound`` >= the batch's size),
        greedily filled by the bound.  A record that alone needs more than the bound
        allows gets a run of its own, with its exact size.  Raises RecordTooLarge,
        before anything is built, if some record alone makes a batch over
        ``max_batch_bytes``.  Works through the arrays a window at a time: no temporary
        as large as the input.
        """
        n = self.count
        over = self._record_overhead(with_timestamps)
        room = max_batch_bytes - _HEADER_BYTES
        total = _HEADER_BYTES + n * over + self.payload_bytes
        if total <= max_batch_bytes and n <= max_records:
            return [(0, n, total)]
        alone = self._alone(over, room, max_batch_bytes) if self._max_payload() + over > room else {}
        if not alone:
            return self._split_c(over, room, max_records)
        # Records a run can hold at most (each takes >= over + the smallest payload).
        min_pay = max(self.values.extremes()[0], 0)
        if self.keys is not None:
            min_pay += max(self.keys.extremes()[0], 0)
        cap = min(room // (over + min_pay) + 1, max_records + 1, n)
        guess = min(cap, int(room // (over + self.payload_bytes / n) * 1.25) + 16)
        cum = np.empty(cap + 1, dtype=np.int64)
        cum[0] = 0
        tmp = np.empty(cap, dtype=np.int64)
        runs = []
        s = 0
        while s < n:
            if s in alone:
                runs.append((s, s + 1, alone[s]))
                s += 1
                continue
            w = min(guess, n - s)
            while True:
                p = self._payloads(s, s + w, tmp)
                p += over
                np.cumsum(p, out=cum[1:w + 1])
                e = int(np.searchsorted(cum[:w + 1], room, side="right")) - 1
                if e < w or s + w >= n or w >= cap:
                    break
                w = min(2 * w, cap, n - s)  # every record of the window fit: look further
            e = min(max(e, 1), max_records)  # e == 0 cannot happen: such records run alone
            runs.append((s, s + e, _HEADER_BYTES + int(cum[e])))
            s += e
        return runs

    def _split_c(self, over: int, room: int, max_records: int) -> List[Tuple[int, int, int]]:
        """:meth:`split` when every record fits a batch with others: one C pass, which
        also says where each run's values and keys begin (for :meth:`_Column.first_byte`)."""
        n = self.count
        # Greedy runs: two in a row weigh more than room, so there are at most
        # 2 * total / room + 1 of them (plus the max_records cuts).
        max_runs = 2 * ((n * over + self.payload_bytes) // max(room, 1)) + n // max(max_records, 1) + 3
        out = np.empty((4, max_runs), dtype=np.uint64)
        vl = self.values.lens
        kl = self.keys.lens if self.keys is not None else None
        with ffi.from_buffer("int32_t[]", vl) as vc, ffi.from_buffer("uint64_t[]", out) as oc:
            kc = ffi.from_buffer("int32_t[]", kl) if kl is not None else ffi.NULL
            try:
                runs = check(lib.pl_columns_split(vc, kc, n, over, room, max_records, oc, oc + max_runs,
                                                  oc + 2 * max_runs, oc + 3 * max_runs, max_runs),
                             "splitting records into batches")
            finally:
                if kc is not ffi.NULL:
                    ffi.release(kc)
        ends, weights, vbytes, kbytes = (row[:runs].tolist() for row in out)
        starts = [0] + ends[:-1]
        for col, sizes in ((self.values, vbytes), (self.keys, kbytes)):
            if col is not None and col.pos is None:
                at = col.start
                for s, size in zip(starts, sizes):
                    col._firsts[s] = at
                    at += size
        return [(s, e, _HEADER_BYTES + w) for s, e, w in zip(starts, ends, weights)]

    def _alone(self, over: int, room: int, max_batch_bytes: int) -> dict:
        """{index: exact batch size} of the records too large to share a batch; raises
        RecordTooLarge if one is too large even alone."""
        payloads = self._payloads()
        big = np.nonzero(payloads + over > room)[0]
        # A record alone: timestamp and offset deltas 0, so its exact size is known.
        klen = self.keys.lens[big].astype(np.int64) if self.keys is not None else np.full(len(big), -1)
        vlen = self.values.lens[big].astype(np.int64)
        body = (3 + _varint_sizes(np.where(klen >= 0, 2 * klen, 1)) + np.maximum(klen, 0)
                + _varint_sizes(np.where(vlen >= 0, 2 * vlen, 1)) + np.maximum(vlen, 0) + 1)
        single = _HEADER_BYTES + _varint_sizes(2 * body) + body
        worst = int(np.argmax(single))
        if int(single[worst]) > max_batch_bytes:
            i = int(big[worst])
            raise RecordTooLarge(f"record {i} ({int(payloads[i])} bytes of key and value) makes a batch of "
                                 f"{int(single[worst])} bytes, over the limit of {max_batch_bytes}")
        return dict(zip(big.tolist(), single.tolist()))

    @contextmanager
    def pinned(self) -> Iterator["_Pinned"]:
        """The buffers and arrays as cdata for the C calls, each exported once for all
        the runs; released at exit (a live export must never outlive the call, see
        docs/architecture.md)."""
        held: List[Any] = []

        def export(ctype: str, obj: Any) -> Any:
            if obj is None:
                return ffi.NULL
            c = ffi.from_buffer(ctype, obj)
            held.append(c)
            return c

        try:
            pin = _Pinned()
            pin.values = export("uint8_t[]", self.values.buffer)
            pin.value_lens = export("int32_t[]", self.values.lens)
            pin.value_pos = export("int64_t[]", self.values.pos)
            if self.keys is not None:
                pin.keys = export("uint8_t[]", self.keys.buffer)
                pin.key_lens = export("int32_t[]", self.keys.lens)
                pin.key_pos = export("int64_t[]", self.keys.pos)
            pin.timestamps = export("int64_t[]", self.timestamps)
            yield pin
        finally:
            for c in held:
                ffi.release(c)

    def batch_input(self, pinned: "_Pinned", start: int, end: int, *, base_timestamp: int,
                    with_timestamps: bool = True, attributes: int = 0, producer_id: int = -1,
                    producer_epoch: int = -1, base_sequence: int = -1) -> Tuple[Any, tuple]:
        """The ``pl_batch_input`` of records [start, end) (pointers into what ``pinned``
        exported: valid while it is) and what to keep alive while it is used."""
        cd = ffi.new("pl_batch_input *")
        cd.count = end - start
        cd.values, cd.value_lens, cd.value_pos = self._pointers(
            self.values, pinned.values, pinned.value_lens, pinned.value_pos, start, end)
        if self.keys is not None:
            cd.keys, cd.key_lens, cd.key_pos = self._pointers(
                self.keys, pinned.keys, pinned.key_lens, pinned.key_pos, start, end)
        if with_timestamps and self.timestamps is not None:
            cd.timestamps = pinned.timestamps + start
            cd.base_timestamp = int(self.timestamps[start])
        else:
            cd.base_timestamp = base_timestamp
        cd.base_offset = 0
        cd.producer_id = producer_id
        cd.producer_epoch = producer_epoch
        cd.base_sequence = base_sequence
        cd.partition_leader_epoch = -1
        cd.attributes = attributes
        return cd, (cd, pinned)

    @staticmethod
    def _pointers(col: _Column, buf: Any, lens: Any, pos: Any, start: int, end: int) -> Tuple[Any, Any, Any]:
        """(data pointer, lengths, positions or NULL) of entries [start, end) of ``col``."""
        if col.pos is not None:
            return buf, lens + start, pos + start
        return buf + col.first_byte(start, end), lens + start, ffi.NULL

    def build(self, start: int, end: int, *, base_timestamp: int, producer_id: int = -1,
              producer_epoch: int = -1, base_sequence: int = -1, codec: int = 0,
              size_bound: Optional[int] = None) -> Any:
        """Records [start, end) as one Kafka v2 batch (bytes-like), compressed with ``codec``
        (a Kafka codec id) when not 0: one C build call (plus the codec for the records
        section).  ``size_bound``: a bound of the uncompressed batch's size known to the
        caller (from :meth:`split`), which spares the C walk that computes one."""
        with self.pinned() as pinned:
            cd, keep = self.batch_input(pinned, start, end, base_timestamp=base_timestamp,
                                        producer_id=producer_id, producer_epoch=producer_epoch,
                                        base_sequence=base_sequence)
            bound = int(lib.pl_batch_size_bound(cd)) if size_bound is None or codec != 0 else size_bound
            if bound == 0:
                raise RecordTooLarge(f"a batch of these {end - start} records would exceed the maximum batch size")
            if codec == 0:
                # Not a bytearray: that would zero all of it first, then the build writes
                # it all again.  A bound too small is refused by the build (PL_E_NOSPACE).
                out = np.empty(bound, dtype=np.uint8)
                with ffi.from_buffer("uint8_t[]", out) as o:
                    n = check(lib.pl_batch_build(cd, o, bound), "building record batch")
                return memoryview(out)[:n]
            rec = ffi.new("uint8_t[]", bound)
            n = check(lib.pl_records_encode(cd, rec, bound), "encoding records")
            plain_header = ffi.new("uint8_t[]", bound)
            check(lib.pl_batch_build(cd, plain_header, bound), "building record batch")
            del cd, keep
        packed = compress(codec, ffi.buffer(rec, n)[:])
        info = ffi.new("pl_batch_info *")
        check(lib.pl_batch_parse_header(plain_header, bound, info), "reading built header")
        info.attributes = (info.attributes & ~7) | codec
        out = ffi.new("uint8_t[]", _HEADER_BYTES + len(packed))
        ffi.memmove(out + _HEADER_BYTES, packed, len(packed))
        total = check(lib.pl_batch_seal(out, len(out), len(packed), info), "sealing compressed batch")
        return ffi.buffer(out, total)[:]

    def take(self, order: np.ndarray) -> "Columns":
        """The records in the order of the indices ``order`` (a permutation or a subset),
        without moving a byte: the columns become positions + lengths into the same
        buffers."""
        return Columns(_take(self.values, order), None if self.keys is None else _take(self.keys, order),
                       None if self.timestamps is None else self.timestamps[order])


class _Pinned:
    """What :meth:`Columns.pinned` exported: cdata over the whole buffers and arrays
    (ffi.NULL where absent)."""

    __slots__ = ("values", "value_lens", "value_pos", "keys", "key_lens", "key_pos", "timestamps")

    def __init__(self) -> None:
        self.values = self.value_lens = self.value_pos = ffi.NULL
        self.keys = self.key_lens = self.key_pos = self.timestamps = ffi.NULL


def _take(col: _Column, order: np.ndarray) -> _Column:
    lens = col.lens[order]
    out = _Column(col.buffer, 0, lens, col.positions()[order], 0, bool(len(lens)) and int(lens.min()) < 0)
    out.payload = out.bytes_of(lens)
    return out


def prepare_columns(values: Any, *, lengths: Any = None, offsets: Any = None, positions: Any = None,
                    keys: Any = None, key_lengths: Any = None, key_offsets: Any = None,
                    key_positions: Any = None, timestamps: Any = None) -> Columns:
    """Check columnar records (layouts in the module docstring) without copying bytes.

    ``keys=None`` means every key is null (then no ``key_*`` array may be given).
    ``timestamps``: None (the caller's default) or n ints, ms since the epoch (>= -1).
    Raises InvalidArgument naming the array and the entry that is wrong (shapes,
    dtypes, bounds), RecordTooLarge (a key or value over the record limit),
    InvalidTimestamp.
    """
    vals = _column(values, lengths, offsets, positions, "values", None)
    n = len(vals.lens)
    if n == 0:
        raise InvalidArgument("no records: a record batch needs at least one")
    if n > _INT32_MAX:
        raise InvalidArgument(f"at most {_INT32_MAX} records per call, got {n}")
    ks = None
    if keys is None:
        if key_lengths is not None or key_offsets is not None or key_positions is not None:
            raise InvalidArgument("key_lengths/key_offsets/key_positions given without keys=")
    else:
        ks = _column(keys, key_lengths, key_offsets, key_positions, "keys", n)
    ts = None
    if timestamps is not None:
        try:
            ts = _int_array(timestamps, "timestamps", np.int64)
        except InvalidArgument as exc:
            raise InvalidTimestamp(f"timestamps are ms since the epoch: {exc}") from None
        if len(ts) != n:
            raise InvalidArgument(f"timestamps has {len(ts)} entries but values has {n}")
        if int(ts.min()) < -1:
            i = int(np.argmin(ts))
            raise InvalidTimestamp(f"timestamps[{i}] is {int(ts[i])}; timestamps are ms since the epoch (>= -1)")
    return Columns(vals, ks, ts)


def _check_native() -> None:  # pragma: no cover - import-time guard
    assert lib.PL_BATCH_HEADER_BYTES == _HEADER_BYTES


_check_native()
