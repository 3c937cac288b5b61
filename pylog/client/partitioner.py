"""Which partition a produced record goes to.

Owns Kafka's key hash (murmur2, as the Java client computes it, from the C core) and
:class:`DefaultPartitioner`, the rule the Producer applies to every record that does
not name its partition itself (an explicit ``partition=`` always wins; the Producer
checks that before calling the partitioner):

* **keyed record** -- ``(murmur2(key) & 0x7fffffff) % num_partitions``, exactly as
  ``org.apache.kafka.clients.producer`` does, so a key lands on the partition a Java
  (or librdkafka ``murmur2_random``) producer would choose.  An empty key ``b""`` is a
  key like any other; only ``None`` is keyless.
* **keyless record** -- the *uniform sticky* partitioner of KIP-794: all keyless
  records of a topic go to one partition until about ``batch.size`` bytes were sent
  to it, then a new partition is drawn at random among the others.  Batches fill up
  (fewer, larger requests) while the load stays even over many batches.  Kafka's
  adaptive variant (``partitioner.adaptive.partitioning.enable``, which weighs
  partitions by broker queue depth) is not implemented: an embedded broker has no
  slow leaders to steer around.

``hash="xxhash"`` (the Producer's ``partitioner="xxhash"``) replaces murmur2 for keyed
records with ``xxhash.xxh32_intdigest(key, seed=0) % num_partitions`` (xxh32 is
unsigned, so no sign masking).  It is pylog's own option, not interoperable with any
Kafka client: use it only when no other producer writes the same keys to the topic.

Performance (per-record hot path, see :meth:`DefaultPartitioner.partition`): the
keyless path is a dict lookup and a few list operations; the keyed path is one call
into the C extension's ``murmur2`` (which keeps the GIL), or a dict hit in a bounded
key-to-hash cache that switches itself off when keys rarely repeat.
"""
from __future__ import annotations

import random
from typing import Any, List, Optional

import numpy as np
import xxhash

from pylog._native import _records, ffi, lib
from pylog.errors import InvalidArgument, InvalidConfig
from pylog.util import check_int

__all__ = [
    "DefaultPartitioner",
    "PARTITIONER_HASHES",
    "murmur2",
    "murmur2_partition",
    "murmur2_batch",
    "murmur2_partitions",
    "xxhash_partition",
    "to_positive",
]

#: Key hashes :class:`DefaultPartitioner` accepts.
PARTITIONER_HASHES = ("murmur2", "xxhash")

#: Kafka's default batch.size (bytes); the sticky partitioner's switch threshold.
DEFAULT_BATCH_SIZE = 16384

#: Keys the murmur2 cache holds at most before it is cleared.
KEY_CACHE_CAPACITY = 65536
#: While the cache is off, how many misses until it is tried again.
KEY_CACHE_RETRY_MISSES = 16 * KEY_CACHE_CAPACITY

_MASK31 = 0x7FFFFFFF
_MAX_BATCH_KEYS = 0xFFFFFFFF

#: Kafka's murmur2 through the C extension, which keeps the GIL (see csrc/pysend.c).
_murmur2 = _records.murmur2
_xxh32 = xxhash.xxh32_intdigest


def to_positive(h: int) -> int:
    """Kafka's ``Utils.toPositive``: the low 31 bits of a 32-bit hash."""
    return h & _MASK31


def _as_bytes(key: Any) -> bytes:
    """``key`` as bytes if it is a bytes-like object; TypeError otherwise."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a record key must be bytes (or None for no key), not {type(key).__name__}")


def _check_num_partitions(num_partitions: Any) -> None:
    check_int("num_partitions", num_partitions, min=1)


def murmur2(key: bytes) -> int:
    """Kafka's ``Utils.murmur2(key)``: a signed 32-bit int, equal to what Java returns.

    ``key`` is bytes, bytearray or memoryview (TypeError otherwise).
    ``murmur2(b"21") == -973932308``.
    """
    if key.__class__ is not bytes:
        key = _as_bytes(key)
    return _murmur2(key)


def murmur2_partition(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's Java producer picks for ``key``:
    ``toPositive(murmur2(key)) % num_partitions``.

    Raises TypeError for a non-bytes key and InvalidArgument if num_partitions < 1.
    """
    if num_partitions.__class__ is not int or num_partitions < 1:
        _check_num_partitions(num_partitions)
    if key.__class__ is not bytes:
        key = _as_bytes(key)
    return (_murmur2(key) & _MASK31) % num_partitions


def xxhash_partition(key: bytes, num_partitions: int) -> int:
    """pylog's optional key partitioning: ``xxh32(key, seed=0) % num_partitions``.

    Not compatible with any Kafka client (see the module docstring).
    """
    if num_partitions.__class__ is not int or num_partitions < 1:
        _check_num_partitions(num_partitions)
    if key.__class__ is not bytes:
        key = _as_bytes(key)
    return _xxh32(key) % num_partitions


def _batch_args(buffer: Any, lengths: Any, positions: Any):
    """cdata arguments of a pl_murmur2_batch-style call, checked."""
    try:
        lens = np.ascontiguousarray(lengths, dtype=np.int32)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgument(f"lengths must be int32 key lengths: {exc}") from None
    if lens.ndim != 1:
        raise InvalidArgument(f"lengths must be one-dimensional, got shape {lens.shape}")
    count = len(lens)
    if count > _MAX_BATCH_KEYS:
        raise InvalidArgument(f"at most {_MAX_BATCH_KEYS} keys per call, got {count}")
    try:
        buf = ffi.from_buffer("uint8_t[]", buffer)
    except TypeError:
        raise TypeError(f"buffer must be a bytes-like object, not {type(buffer).__name__}") from None
    pos_c = ffi.NULL
    pos = None
    if positions is not None:
        try:
            pos = np.ascontiguousarray(positions, dtype=np.int64)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidArgument(f"positions must be int64 byte positions: {exc}") from None
        if pos.shape != lens.shape:
            raise InvalidArgument(
                f"positions has shape {pos.shape} but lengths has shape {lens.shape}")
        pos_c = ffi.from_buffer("int64_t[]", pos)
    out = np.empty(count, dtype=np.int32)
    # `lens`, `pos` and `out` are returned so that they outlive the C call.
    return buf, len(buf), pos_c, pos, ffi.from_buffer("int32_t[]", lens), lens, count, out


def murmur2_batch(buffer: Any, lengths: Any, positions: Any = None) -> np.ndarray:
    """murmur2 of many keys held in one buffer, as an int32 array.

    Keys lie in ``buffer`` end to end in order (``positions=None``), or at
    ``positions[i]`` (bytes from the start, as ``RecordArrays.key_pos``).
    ``lengths[i]`` is key i's length, -1 for a null key (its hash is reported as 0).
    Raises InvalidArgument if a length is below -1, a position is negative, a key runs
    past the buffer, or the arrays do not match.
    """
    buf, buf_len, pos_c, _pos, lens_c, _lens, count, out = _batch_args(buffer, lengths, positions)
    rc = lib.pl_murmur2_batch(buf, buf_len, pos_c, lens_c, count, ffi.from_buffer("int32_t[]", out))
    if rc != lib.PL_OK:
        raise InvalidArgument("murmur2_batch: a key length is below -1, a position is negative "
                              f"or a key runs past the {buf_len}-byte buffer")
    return out


def murmur2_partitions(buffer: Any, lengths: Any, num_partitions: int,
                       positions: Any = None) -> np.ndarray:
    """Java-compatible partitions of many keys (see :func:`murmur2_batch` for the
    layout), as an int32 array; a null key (length -1) gets -1."""
    _check_num_partitions(num_partitions)
    if num_partitions > 0x7FFFFFFF:
        raise InvalidArgument(f"num_partitions must fit in an int32, got {num_partitions}")
    buf, buf_len, pos_c, _pos, lens_c, _lens, count, out = _batch_args(buffer, lengths, positions)
    rc = lib.pl_murmur2_partitions(buf, buf_len, pos_c, lens_c, count, num_partitions,
                                   ffi.from_buffer("int32_t[]", out))
    if rc != lib.PL_OK:
        raise InvalidArgument("murmur2_partitions: a key length is below -1, a position is "
                              f"negative or a key runs past the {buf_len}-byte buffer")
    return out


class DefaultPartitioner:
    """Kafka's default partitioning: murmur2 for keyed records, uniform sticky for
    keyless ones (see the module docstring).

    ``batch_size`` is the producer's ``batch.size`` (bytes, >= 0): a topic's keyless
    records stay on one partition until at least that many bytes (as counted by the
    ``record_size`` arguments) went to it.  ``hash`` is ``"murmur2"`` (Kafka's, the
    default) or ``"xxhash"``.  ``rng`` (a ``random.Random``) draws the sticky
    partitions; give a seeded one for reproducible placement.

    Thread safety: calls from several producer threads at once never fail or return
    a partition out of range; the byte count that decides a switch may then miss a
    record or switch twice, which only shifts a batch boundary.
    """

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE, hash: str = "murmur2", *,
                 rng: Optional[random.Random] = None) -> None:
        check_int("batch.size", batch_size, min=0, error=InvalidConfig)
        if hash not in PARTITIONER_HASHES:
            raise InvalidConfig(
                f"partitioner must be one of {', '.join(PARTITIONER_HASHES)}, got {hash!r}")
        self.batch_size = batch_size
        self.hash = hash
        self._rng = rng if rng is not None else random.Random()
        # topic -> [partition, bytes left before a switch (batch_size - bytes produced to
        #           it since it was chosen), num_partitions]
        self._sticky: dict = {}
        self._sticky_get = self._sticky.get
        # murmur2 key cache: key bytes -> toPositive(murmur2(key))
        self._cache: dict = {}
        self._cache_get = self._cache.get
        self._cache_on = True
        self._cache_hits = 0       # hits since the cache was last cleared
        self._cache_retry_in = 0   # while off: keyed calls until it is tried again
        if hash == "xxhash":
            self._keyed = self._keyed_xxhash
        else:
            self._keyed = None

    def partition(self, topic: str, key: Optional[bytes], num_partitions: int,
                  record_size: int) -> int:
        """The partition for one record of ``record_size`` bytes to ``topic``, which
        has ``num_partitions`` partitions.

        Keyed (``key`` is bytes-like): the key's partition, always the same for the
        same key and partition count.  Keyless (``key is None``): the topic's sticky
        partition; ``record_size`` counts toward its switch.  Raises TypeError for a
        key that is not bytes-like and InvalidArgument if num_partitions < 1.
        """
        if key is None:
            st = self._sticky_get(topic)
            if st is None or st[2] != num_partitions:
                st = self._new_sticky(topic, num_partitions)
            p = st[0]
            st[1] -= record_size
            if st[1] <= 0:
                self._switch(st)
            return p
        if num_partitions < 1:
            _check_num_partitions(num_partitions)
        if self._keyed is not None:
            return self._keyed(key, num_partitions)
        if self._cache_on:
            try:
                h = self._cache_get(key)
            except TypeError:  # unhashable: bytearray, or not a key at all
                return self._keyed_uncached(key, num_partitions)
            if h is None:
                return self._cache_miss(key, num_partitions)
            self._cache_hits += 1
            return h % num_partitions
        if key.__class__ is not bytes:
            key = _as_bytes(key)
        self._cache_retry_in -= 1
        if self._cache_retry_in <= 0:
            self._cache_on = True
            self._cache_hits = 0
        return (_murmur2(key) & _MASK31) % num_partitions

    # ---- keyed records ------------------------------------------------------

    def _keyed_uncached(self, key: Any, num_partitions: int) -> int:
        key = _as_bytes(key)
        return (_murmur2(key) & _MASK31) % num_partitions

    def _keyed_xxhash(self, key: Any, num_partitions: int) -> int:
        if key.__class__ is not bytes:
            key = _as_bytes(key)
        return _xxh32(key) % num_partitions

    def _cache_miss(self, key: Any, num_partitions: int) -> int:
        """Hash ``key`` in C and remember it.

        When the cache is full it is cleared, and kept on only if at least as many
        calls hit it as missed it since the last clear; otherwise keys rarely repeat
        and caching stops for KEY_CACHE_RETRY_MISSES keyed calls (which then cost a
        bare C call), then is tried again.
        """
        if key.__class__ is not bytes:
            key = _as_bytes(key)
        h = _murmur2(key) & _MASK31
        cache = self._cache
        if len(cache) >= KEY_CACHE_CAPACITY:
            self._cache_on = self._cache_hits >= len(cache)
            cache.clear()
            self._cache_hits = 0
            self._cache_retry_in = KEY_CACHE_RETRY_MISSES
        if self._cache_on:
            cache[key] = h
        return h % num_partitions

    # ---- keyless records: uniform sticky ---------------------------------------

    def _new_sticky(self, topic: str, num_partitions: int) -> List[int]:
        """Sticky state for a topic seen first or whose partition count changed."""
        _check_num_partitions(num_partitions)
        st = [self._rng.randrange(num_partitions), self.batch_size, num_partitions]
        self._sticky[topic] = st
        return st

    def _switch(self, st: List[int]) -> None:
        """Move the sticky partition to another one chosen uniformly at random."""
        n = st[2]
        if n > 1:
            r = self._rng.randrange(n - 1)
            st[0] = r + 1 if r >= st[0] else r
        st[1] = self.batch_size

    def sticky_partition(self, topic: str) -> Optional[int]:
        """The partition the next keyless record of ``topic`` goes to (None before
        the first keyless record or after :meth:`forget_topic`)."""
        st = self._sticky_get(topic)
        return None if st is None else st[0]

    def forget_topic(self, topic: str) -> None:
        """Drop the sticky state of a deleted topic (a no-op for an unknown one)."""
        self._sticky.pop(topic, None)
