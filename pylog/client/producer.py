"""The Producer: per-partition batching, a background sender, acks, retries, idempotence.

As Kafka's producer: :meth:`Producer.send` puts the record in its partition's open batch
and returns at once with a future; the sender thread ships a batch when it reaches
``batch_size`` bytes or has waited ``linger_ms``, to whatever the producer talks to: an
embedded :class:`~pylog.broker.Broker` or :class:`~pylog.cluster.LocalCluster` (anything
with ``partitions_for``, ``init_producer_id`` and ``produce``, or ``produce_async`` +
``drive``), or a Kafka cluster over the network when given a ``"host:port[,...]"``
bootstrap string (:class:`~pylog.client.network.NetworkClient`, owned and closed by the
producer; the batches of a round go out as one Produce request per broker).

With ``enable_idempotence`` (the default, as in Kafka) the producer takes a producer id
and numbers each partition's batches; a batch resent after a lost reply is written once,
and a batch out of order is rejected by the broker.

Back-pressure, as Kafka's ``buffer.memory`` / ``max.block.ms``: the records the producer
holds (open, waiting, or in flight, until their batch is acknowledged or failed) may take
at most ``buffer_memory`` bytes.  pylog counts each record's serialized size (key + value
+ header keys and values + a small fixed per-record overhead), not Kafka's whole-batch
allocations, and not the 61-byte batch headers.  The sender gives completed batches'
bytes back in chunks of 1/16 of ``buffer_memory`` (and at the end of each of its rounds),
so a blocked send is not woken for every batch.  When a record does not fit, ``send()``
waits, first come first served, up to ``max_block_ms`` for completed batches to free
room, then raises :class:`~pylog.errors.BufferExhausted`; if the batches already on
their way would not free enough, lingering batches are sent at once (oldest first)
rather than after ``linger_ms``.  pylog's producer does not wait for metadata either:
an embedded broker answers ``partitions_for`` at once, and over the network the first
send to a topic asks Metadata right away (blocking up to ``request_timeout_ms``), so
``max_block_ms`` bounds only the wait for buffer room.

The parts, one module each: :mod:`~pylog.client.producer_config` (the settings),
:mod:`~pylog.client.buffer_pool` (buffer.memory), :mod:`~pylog.client.accumulator`
(open batches, linger.ms / batch.size), :mod:`~pylog.client.sender` (the thread that
ships batches and completes their futures) and :mod:`~pylog.client.retry` (the one
retry policy of send() and send_batch()).  This module keeps the public face:
partitioning, send(), send_batch(), flush(), close(), metrics().
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from pylog.client.accumulator import RECORD_OVERHEAD_BYTES as _RECORD_OVERHEAD
from pylog.client.accumulator import RecordAccumulator
from pylog.client.buffer_pool import BufferPool
from pylog.client.producer_batch import (
    BATCH_HEADER_BYTES as _BATCH_HEADER,
    ArrayBatch,
    BatchFuture,
    C_FUTURES,
    BatchResult,
    FutureRecordMetadata,
    RecordMetadata,
)
from pylog.client.producer_config import INT32_MAX as _INT32_MAX
from pylog.client.producer_config import ProducerConfig
from pylog.client.retry import RetryPolicy
from pylog.client.sender import Sender
from pylog.errors import InvalidArgument, InvalidConfig, ProducerClosed, UnknownTopicOrPartition
from pylog.records import encode_headers
from pylog.records.builder import SendPath
from pylog.records.columnar import Columns, prepare_columns
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["Producer", "RecordMetadata", "FutureRecordMetadata", "BatchFuture", "ProducerConfig"]

log = logging.getLogger("pylog.producer")

#: Keys whose partition is remembered (hot keys repeat); cleared when full.
_KEY_CACHE_SIZE = 1 << 17

_BYTES = (bytes, bytearray, memoryview)
_INT64_MAX = (1 << 63) - 1


class Producer:
    """Send records to topics; see the module docstring.

    Settings are Kafka's producer configs as snake_case keywords (or ``config=`` with
    Kafka names): ``acks`` ("all", 1, 0; default "all"), ``linger_ms`` (5),
    ``batch_size`` (16384 bytes), ``compression_type`` ("none", "gzip", "snappy",
    "lz4", "zstd"), ``enable_idempotence`` (True; needs acks="all"), ``retries``,
    ``retry_backoff_ms`` (100), ``delivery_timeout_ms`` (120000),
    ``request_timeout_ms`` (30000), ``max_request_size`` (1048576),
    ``partitioner`` ("murmur2", as Kafka's Java client, or "xxhash"),
    ``buffer_memory`` (33554432 bytes of records held until acknowledged; at least 1),
    ``max_block_ms`` (60000: how long send() may wait for buffer room),
    ``key_serializer``/``value_serializer`` (callables to bytes).

    ``bootstrap`` is a broker object or a ``"host:port[,host:port...]"`` string (see the
    module docstring); over the network the constructor connects and raises
    NetworkException (naming the address) when no bootstrap server answers.

    Raises InvalidConfig for bad settings, UnsupportedCompressionType when the codec's
    package is not installed.
    """

    def __init__(self, bootstrap: Any, config: Optional[Mapping[str, Any]] = None, *,
                 acks: Union[int, str] = "all", linger_ms: int = 5, batch_size: int = 16384,
                 compression_type: str = "none", enable_idempotence: Optional[bool] = None,
                 retries: int = _INT32_MAX, retry_backoff_ms: int = 100,
                 delivery_timeout_ms: int = 120_000, request_timeout_ms: int = 30_000,
                 max_request_size: int = 1_048_576, partitioner: str = "murmur2",
                 buffer_memory: int = 33_554_432, max_block_ms: int = 60_000,
                 key_serializer: Optional[Callable[[Any], bytes]] = None,
                 value_serializer: Optional[Callable[[Any], bytes]] = None,
                 client_id: str = "") -> None:
        cfg = self.config = ProducerConfig.from_settings(
            config, acks=acks, linger_ms=linger_ms, batch_size=batch_size, compression_type=compression_type,
            enable_idempotence=enable_idempotence, retries=retries, retry_backoff_ms=retry_backoff_ms,
            delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=request_timeout_ms,
            max_request_size=max_request_size, partitioner=partitioner, buffer_memory=buffer_memory,
            max_block_ms=max_block_ms, client_id=client_id)
        for name, fn in (("key_serializer", key_serializer), ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):
                raise InvalidConfig(f"{name} must be callable, got {fn!r}")
        self._key_ser = key_serializer
        self._value_ser = value_serializer
        self._plain = key_serializer is None and value_serializer is None
        from pylog.client.partitioner import murmur2_partition, xxhash_partition
        self._hash_partition = murmur2_partition if cfg.partitioner == "murmur2" else xxhash_partition
        self._random = random.Random()
        self._tps: Dict[str, List[Tuple[str, int]]] = {}
        self._key_cache: Dict[bytes, int] = {}

        #: A string bootstrap ("host:port[,host:port]") means a Kafka cluster over the
        #: network: the producer owns that client and closes it in close().
        self._owns_broker = isinstance(bootstrap, str)
        if self._owns_broker:
            from pylog.client.network import NetworkClient

            bootstrap = NetworkClient(bootstrap, client_id=cfg.client_id or "pylog-producer",
                                      allow_auto_topic_creation=True,
                                      request_timeout_ms=cfg.request_timeout_ms,
                                      retry_backoff_ms=cfg.retry_backoff_ms)
        self._broker = bootstrap
        producer_id, producer_epoch = (-1, -1)
        if cfg.enable_idempotence:
            try:
                producer_id, producer_epoch = bootstrap.init_producer_id()
            except BaseException:
                if self._owns_broker:
                    bootstrap.close()
                raise
        self._lock = threading.Lock()
        self._pool = BufferPool(cfg.buffer_memory, cfg.max_block_ms, self._lock)
        self._acc = RecordAccumulator(cfg, self._pool, self._lock)
        # The C send path (csrc/pysend.c): it holds the topics' partition counts and
        # sticky partitions for both paths; it takes send()'s common records itself only
        # without serializers (a bytes value may still need serializing).
        self._send_path = SendPath(self._send_python, cfg.batch_size, cfg.max_request_size, _RECORD_OVERHEAD,
                                   cfg.partitioner == "murmur2", self._random.getrandbits(64))
        if self._plain and C_FUTURES:
            self._acc.send_path = self._send_path
            #: The instance's send is the C one; Producer.send (documented) is its Python twin.
            self.send = self._send_path.send  # type: ignore[method-assign]
        self.retry_policy = RetryPolicy(cfg.retries, cfg.retry_backoff_ms, cfg.delivery_timeout_ms)
        self._sender = Sender(cfg, bootstrap, self._acc, self._pool, self.retry_policy, producer_id, producer_epoch)
        self._sender.start()

    # Settings, as attributes of the producer (read-only views of the config).
    acks = property(lambda self: self.config.acks)
    idempotent = property(lambda self: self.config.enable_idempotence)
    compression_type = property(lambda self: self.config.compression_type)
    linger_ms = property(lambda self: self.config.linger_ms)
    batch_size = property(lambda self: self.config.batch_size)
    retries = property(lambda self: self.config.retries)
    retry_backoff_ms = property(lambda self: self.config.retry_backoff_ms)
    delivery_timeout_ms = property(lambda self: self.config.delivery_timeout_ms)
    request_timeout_ms = property(lambda self: self.config.request_timeout_ms)
    max_request_size = property(lambda self: self.config.max_request_size)
    buffer_memory = property(lambda self: self.config.buffer_memory)
    max_block_ms = property(lambda self: self.config.max_block_ms)
    client_id = property(lambda self: self.config.client_id)
    _pipelined = property(lambda self: self._sender.pipelined)

    @property
    def ack_latencies(self) -> Optional[List[Tuple[int, int]]]:
        """(records, ns from batch open to ack) per acknowledged batch, once set to a list
        (the bench does); None: not recorded."""
        return self._sender.ack_latencies

    @ack_latencies.setter
    def ack_latencies(self, value: Optional[List[Tuple[int, int]]]) -> None:
        self._sender.ack_latencies = value

    # ================================================================== send
    def send(self, topic: str, value: Any, key: Any = None, headers: Optional[Sequence[Tuple[str, Any]]] = None,
             partition: Optional[int] = None, timestamp: Optional[int] = None) -> FutureRecordMetadata:
        """Queue a record; returns a future of its :class:`RecordMetadata`.

        ``value``/``key`` are bytes (or None), unless serializers were given;
        ``headers`` a list of (str, bytes) pairs; ``partition`` chooses the partition
        explicitly; ``timestamp`` is ms since the epoch (default: when the record's
        batch was opened, at most linger.ms before the send).

        Raises (at once) ProducerClosed, UnknownTopicOrPartition, InvalidArgument,
        RecordTooLarge (over max.request.size or buffer.memory).  When buffer.memory is
        used up it blocks until completed batches free room: BufferExhausted after
        max.block.ms, ProducerClosed if the producer is closed meanwhile.  Errors from
        the broker arrive through the future.

        (A producer's ``send`` attribute is the C twin of this method,
        ``SendPath.send`` from csrc/pysend.c: it takes the common records itself and
        calls this one's Python path for the rest, with the same results and errors;
        with serializers, ``send`` is this method.)
        """
        return self._send_python(topic, value, key, headers, partition, timestamp)

    def _send_python(self, topic: str, value: Any, key: Any = None, headers: Any = None,
                     partition: Optional[int] = None, timestamp: Optional[int] = None) -> FutureRecordMetadata:
        # send() in Python: every record when the C send path is off (serializers, or
        # futures C cannot build), else the records C hands back (see csrc/pysend.c).
        if self._acc.closed:
            raise ProducerClosed("send() after the producer was closed")
        if self._key_ser is not None and key is not None:
            key = self._key_ser(key)
        if self._value_ser is not None and value is not None:
            value = self._value_ser(value)
        vt = type(value)
        if vt is bytes:
            size = len(value)
        elif value is None:
            size = 0
        elif vt in _BYTES:
            value = bytes(value)
            size = len(value)
        else:
            raise InvalidArgument(f"value must be bytes or None (or give value_serializer), got {vt.__name__}")
        if key is not None:
            if type(key) is not bytes:
                if not isinstance(key, _BYTES):
                    raise InvalidArgument(f"key must be bytes or None (or give key_serializer), got "
                                          f"{type(key).__name__}")
                key = bytes(key)
            size += len(key)
        tps = self._tps.get(topic)
        if tps is None:
            tps = self._learn_topic(topic)
        n = len(tps)
        if headers:
            pairs = self._check_headers(headers)
            size += sum(len(k) + (len(v) if v is not None else 0) + 4 for k, v in pairs)
            headers = encode_headers(pairs)
        else:
            headers = None
        if timestamp is not None:
            check_int("timestamp (ms)", timestamp, min=0, max=_INT64_MAX)
            if type(timestamp) is not int:  # (an int subclass: the record path takes ints)
                timestamp = int(timestamp)
        size += _RECORD_OVERHEAD
        if partition is None:
            if key is None:
                sp = self._send_path
                if self._acc.seal_if_full(tps[sp.sticky(topic, False)], size):
                    sp.sticky(topic, True)  # the full batch's partition is left (KIP-480)
                partition = sp.keyless_partition(topic, size)
            else:
                partition = self._key_partition(key, n)
        else:
            check_int(f"partition of topic {topic!r} (it has {n})", partition, min=0, max=n - 1,
                      error=UnknownTopicOrPartition)
        return self._acc.append(tps[partition], value, key, headers, timestamp, size)

    # ============================================================ send_batch
    def send_batch(self, topic: str, values: Any, *, lengths: Any = None, offsets: Any = None,
                   positions: Any = None, keys: Any = None, key_lengths: Any = None, key_offsets: Any = None,
                   key_positions: Any = None, timestamps: Any = None,
                   partition: Optional[int] = None) -> BatchFuture:
        """Queue columnar records (numpy arrays, no object per record); returns one
        :class:`BatchFuture` of their offsets.

        The columns are those of :meth:`Log.append_arrays <pylog.storage.Log.append_arrays>`:
        ``values`` one bytes-like buffer with exactly one of ``lengths=`` (-1 = null),
        ``offsets=`` (n + 1, Arrow style) or ``positions=`` + ``lengths=`` (the
        ``poll_arrays`` layout); ``keys`` likewise (None: no keys); ``timestamps`` n ints
        (ms), default the time of this call.  Serializers do not apply.

        Partitioning is send()'s: ``partition`` chooses it for all records; else a keyed
        record goes to its key's partition (murmur2 over all keys in one C call, or
        xxhash), and keyless records (null keys too) to the topic's sticky partition,
        which moves to another after each batch, as the uniform sticky partitioner does
        after batch.size bytes.  Each partition's records become batches of up to
        max.request.size (not batch.size: the records are all there, nothing lingers),
        each encoded by one C call in the calling thread as its room in buffer.memory
        is granted (while the sender ships the earlier ones; the sender then stamps the
        producer id and sequence numbers into it), in the order given; a batch of
        send() still open for the partition is sealed first, so records keep the order
        of the calls.  acks, retries, idempotence and compression are send()'s.

        Raises at once, queueing nothing, what the columns raise (InvalidArgument,
        InvalidTimestamp, RecordTooLarge: a record alone over max.request.size), and
        ProducerClosed, UnknownTopicOrPartition.  buffer.memory holds: batches are queued
        one by one as room frees, so a call larger than buffer.memory blocks until its
        first batches are acknowledged; BufferExhausted after max.block.ms (the batches
        queued before it are still sent).  Errors from the broker arrive through the
        future.
        """
        if self._acc.closed:
            raise ProducerClosed("send_batch() after the producer was closed")
        cols = prepare_columns(values, lengths=lengths, offsets=offsets, positions=positions, keys=keys,
                               key_lengths=key_lengths, key_offsets=key_offsets, key_positions=key_positions,
                               timestamps=timestamps)
        tps = self._tps.get(topic)
        if tps is None:
            tps = self._learn_topic(topic)
        n_parts = len(tps)
        n = cols.count
        limit = min(self.max_request_size, self.buffer_memory + _BATCH_HEADER)
        planned = self._plan_batches(topic, cols, n_parts, partition, limit)
        parts = np.empty(n, dtype=np.int32)
        for p, _, _, _, _, where in planned:
            parts[where] = p
        now = _now_ms()
        codec = self.config.codec
        out: List[Tuple[BatchResult, Any, int]] = []
        for p, gcols, start, end, bound, where in planned:
            with self._lock:
                if self._acc.closed:
                    raise ProducerClosed("send_batch() after the producer was closed")
                self._pool.reserve_locked(bound - _BATCH_HEADER)
            b = ArrayBatch(tps[p], now, self._lock, gcols, start, end, bound)
            # Encoded here, not under the lock: the sender ships earlier batches meanwhile
            # (the C build releases the GIL), and the batch waits for its room first.
            try:
                b.prebuild(codec)
            except BaseException:  # (not a PylogError: those wait for the sender) its room goes back
                with self._lock:
                    self._pool.release_locked([b])
                raise
            with self._lock:
                if self._acc.closed:  # closed while it was encoded: its room goes back
                    self._pool.release_locked([b])
                    raise ProducerClosed("send_batch(): the producer was closed meanwhile")
                self._acc.add_sealed_locked(b)
            out.append((b, where, end - start))
        return BatchFuture(topic, parts, out, n)

    def _plan_batches(self, topic: str, cols: Columns, n_parts: int, partition: Optional[int],
                      limit: int) -> List[Tuple[int, Columns, int, int, int, Any]]:
        """(partition, columns, start, end, size bound, input indices) of each batch to
        queue, in order; raises before anything is queued."""
        if partition is not None:
            check_int(f"partition of topic {topic!r} (it has {n_parts})", partition, min=0, max=n_parts - 1,
                      error=UnknownTopicOrPartition)
            return [(partition, cols, s, e, bound, slice(s, e)) for s, e, bound in cols.split(limit)]
        sticky = self._send_path.sticky
        if cols.keys is None:
            out = []
            for s, e, bound in cols.split(limit):
                out.append((sticky(topic, False), cols, s, e, bound, slice(s, e)))
                sticky(topic, True)
            return out
        keyed = self._key_partitions(cols, n_parts)
        keyed[keyed < 0] = sticky(topic, False)  # null keys: the sticky partition
        order = np.argsort(keyed, kind="stable")
        bounds = np.searchsorted(keyed[order], np.arange(n_parts + 1))
        out = []
        for p in range(n_parts):
            lo, hi = int(bounds[p]), int(bounds[p + 1])
            if lo == hi:
                continue
            idx = order[lo:hi]
            group = cols if hi - lo == cols.count else cols.take(idx)
            for s, e, bound in group.split(limit):
                out.append((p, group, s, e, bound, idx[s:e]))
        if cols.keys.has_null:
            sticky(topic, True)
        return out

    def _key_partitions(self, cols: Columns, n_parts: int) -> np.ndarray:
        """The partition of each record's key (int32), -1 for a null key."""
        kc = cols.keys
        if self._hash_partition.__name__ == "murmur2_partition":
            from pylog.client.partitioner import murmur2_partitions
            pos = kc.pos if kc.pos is not None else (None if kc.start == 0 else kc.positions())
            return murmur2_partitions(kc.buffer, kc.lens, n_parts, pos)
        data = bytes(memoryview(kc.buffer).cast("B"))  # xxhash: per key, in Python
        pos = kc.positions().tolist()
        return np.array([-1 if ln < 0 else self._hash_partition(data[p:p + ln], n_parts)
                         for p, ln in zip(pos, kc.lens.tolist())], dtype=np.int32)

    def _key_partition(self, key: bytes, n: int) -> int:
        part = self._hash_partition(key, n)
        cache = self._key_cache
        if len(cache) >= _KEY_CACHE_SIZE:
            cache.clear()
        cache[key] = part
        return part

    @staticmethod
    def _check_headers(headers: Any) -> List[Tuple[str, Optional[bytes]]]:
        out = []
        try:
            for k, v in headers:
                if not isinstance(k, str) or (v is not None and not isinstance(v, _BYTES)):
                    raise TypeError
                out.append((k, None if v is None else bytes(v)))
        except (TypeError, ValueError):
            raise InvalidArgument(f"headers must be a list of (str, bytes) pairs, got {headers!r:.80}") from None
        return out

    def _learn_topic(self, topic: str) -> List[Tuple[str, int]]:
        if not isinstance(topic, str):
            raise InvalidArgument(f"topic must be a str, got {type(topic).__name__}")
        n = self._broker.partitions_for(topic)
        tps = [(topic, p) for p in range(n)]
        self._send_path.add_topic(topic, n, self._random.randrange(n))
        if len({len(t) for t in self._tps.values()} | {n}) > 1:
            self._key_cache.clear()  # the cache is per partition count
        self._tps[topic] = tps
        return tps

    def partitions_for(self, topic: str) -> List[int]:
        """The partition numbers of ``topic``."""
        return list(range(len(self._learn_topic(topic))))

    # ============================================================== flushing
    def flush(self, timeout: Optional[float] = None) -> None:
        """Send every queued record now and wait until each is acknowledged or failed.

        Raises RequestTimedOut if ``timeout`` (s) passes first.
        """
        from pylog.errors import RequestTimedOut

        acc = self._acc
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            acc.flushing += 1
            try:
                acc.seal_all_locked()
                while acc.pending_locked():
                    acc.seal_all_locked()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise RequestTimedOut(f"flush did not finish within {timeout} s")
                    acc.wake.wait(left if left is None else min(left, 0.1))
            finally:
                acc.flushing -= 1

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking records, send and wait for those already taken (as flush), then
        stop the sender.  Sends from now on, and sends blocked waiting for buffer.memory,
        raise ProducerClosed (as Kafka's producer fails its blocked allocations at close).
        """
        with self._lock:
            if self._acc.closed:
                return
            self._acc.closed = True
            self._acc.take_all_locked()  # C takes no record after this
            self._pool.close_locked()
            self._acc.wake.notify_all()
        try:
            self.flush(timeout)
        finally:
            self._sender.join(timeout)
            if self._owns_broker:
                self._broker.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def metrics(self) -> Dict[str, Any]:
        """Queue state: open batches, batches waiting, in flight; and buffer.memory, by
        Kafka's producer metric names: ``buffer_total_bytes``, ``buffer_available_bytes``
        (not taken by records held until their batch completes), ``waiting_threads``
        (sends blocked for room now), ``bufferpool_wait_time_ns_total`` (time they spent
        blocked), ``buffer_exhausted_total`` (sends that raised BufferExhausted); and
        pylog's ``blocked_sends_total`` (sends that had to wait)."""
        with self._lock:
            out: Dict[str, Any] = {"open_batches": len(self._acc.open), "ready_batches": len(self._acc.ready),
                                   "in_flight_batches": self._acc.in_flight,
                                   "producer_id": self._sender.producer_id}
            out.update(self._pool.metrics_locked())
            if self._acc.send_path is not None:  # lent to open batches, not yet used
                out["buffer_available_bytes"] += self._send_path.credit
            return out
