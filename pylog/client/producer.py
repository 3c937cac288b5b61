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
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from pylog.errors import (
    BufferExhausted,
    InvalidArgument,
    InvalidConfig,
    PylogError,
    ProducerClosed,
    RecordTooLarge,
    RequestTimedOut,
    UnknownTopicOrPartition,
    UnsupportedCompressionType,
)
from pylog.records import build_batch
from pylog.records.columnar import Columns, prepare_columns
from pylog.records.compression import CODECS, compress
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["Producer", "RecordMetadata", "FutureRecordMetadata", "BatchFuture"]

log = logging.getLogger("pylog.producer")

_RECORD_OVERHEAD = 14  #: bytes a record adds to a batch beyond key and value (approx.)
_BATCH_HEADER = 61  #: bytes of a v2 RecordBatch header
_INT32_MAX = 0x7FFFFFFF
#: max.in.flight.requests.per.connection: batches of one partition in flight (the
#: broker remembers the last five per producer, so a retry is still found a duplicate).
_MAX_IN_FLIGHT = 5
#: The sender gives completed batches' bytes back to buffer.memory in chunks of at least
#: buffer.memory / this, and at the end of each round: waking a blocked send for every
#: batch passes the GIL back and forth per batch (measured: ~30% of producer throughput).
_RELEASE_CHUNKS = 16
#: Keys whose partition is remembered (hot keys repeat); cleared when full.
_KEY_CACHE_SIZE = 1 << 17


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written (offset -1 with acks=0)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class _BatchResult:
    """Completion of one batch, shared by the futures of its records."""

    __slots__ = ("event", "base_offset", "timestamps", "error", "callbacks", "log_append_time", "split")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.base_offset = -1
        self.timestamps: Optional[List[int]] = None
        self.log_append_time = -1
        self.error: Optional[BaseException] = None
        self.callbacks: Optional[List[Tuple["FutureRecordMetadata", Callable]]] = None
        #: (index, first half's result, second half's result) when the batch was split.
        self.split: Optional[Tuple[int, "_BatchResult", "_BatchResult"]] = None

    def done(self, base_offset: int, log_append_time: int, error: Optional[BaseException]) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.error = error
        self.event.set()
        cbs, self.callbacks = self.callbacks, None
        for fut, fn in cbs or ():
            try:
                fn(fut)
            except Exception:
                log.exception("producer callback raised")


class FutureRecordMetadata(tuple):
    """The result of :meth:`Producer.send`: ``result(timeout)`` gives RecordMetadata or
    raises the error the broker returned (after retries).

    (A tuple underneath — (batch result, index, (topic, partition), batch) — because
    one is made per record on the hot path and a tuple is the cheapest object.)
    """

    __slots__ = ()

    def done(self) -> bool:
        return self[0].event.is_set()

    def result(self, timeout: Optional[float] = None) -> RecordMetadata:
        r, i, tp, batch = self
        if not r.event.wait(timeout):
            raise RequestTimedOut(f"record to {tp[0]}-{tp[1]} not acknowledged within {timeout} s")
        while r.split is not None:  # the broker refused the batch as too large: it was halved
            half, first, second = r.split
            r, i = (first, i) if i < half else (second, i - half)
        if r.error is not None:
            raise r.error
        off = r.base_offset + i if r.base_offset >= 0 else -1
        ts = r.log_append_time if r.log_append_time >= 0 else batch.timestamp_of(self[1])
        return RecordMetadata(tp[0], tp[1], off, ts)

    get = result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            self.result(timeout)
        except RequestTimedOut:
            if not self[0].event.is_set():
                raise
            return self[0].error
        except PylogError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[["FutureRecordMetadata"], Any]) -> None:
        """Call ``fn(future)`` when the record is acknowledged or failed (in the sender
        thread; keep it short)."""
        r = self[0]
        if not r.event.is_set():
            with self[3].lock:
                if not r.event.is_set():
                    if r.callbacks is None:
                        r.callbacks = []
                    r.callbacks.append((self, fn))
                    return
        fn(self)

    def __repr__(self) -> str:
        return f"FutureRecordMetadata({self[2][0]}-{self[2][1]}, done={self.done()})"


_new_future = tuple.__new__


class _Batch:
    """An open batch of one partition, filled by send().

    ``keys`` is None until a record with a key arrives (then padded with None);
    headers and explicit timestamps are sparse: index -> value.
    """

    __slots__ = ("tp", "values", "keys", "headers", "timestamps", "size", "created_ms", "result",
                 "lock", "attempts", "sequence", "data", "first_send_ns", "released")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock) -> None:
        self.tp = tp
        self.values: List[Optional[bytes]] = []
        self.keys: Optional[List[Optional[bytes]]] = None
        self.headers: Optional[Dict[int, Any]] = None
        self.timestamps: Optional[Dict[int, int]] = None
        self.size = _BATCH_HEADER  #: bytes: header + records (approx.); the records count against buffer.memory
        self.created_ms = now_ms
        self.first_send_ns = time.perf_counter_ns()
        self.result = _BatchResult()
        self.lock = lock
        self.attempts = 0
        self.sequence = -1
        self.data: Optional[bytes] = None
        #: Its record bytes were given back to buffer.memory (it completed).
        self.released = False

    def timestamp_of(self, i: int) -> int:
        if self.timestamps is not None:
            return self.timestamps.get(i, self.created_ms)
        return self.created_ms

    def slice(self, lo: int, hi: int) -> "_Batch":
        part = _Batch(self.tp, self.created_ms, self.lock)
        part.values = self.values[lo:hi]
        part.keys = None if self.keys is None else self.keys[lo:hi]
        if self.headers is not None:
            part.headers = {i - lo: h for i, h in self.headers.items() if lo <= i < hi}
        if self.timestamps is not None:
            part.timestamps = {i - lo: t for i, t in self.timestamps.items() if lo <= i < hi}
        part.first_send_ns = self.first_send_ns
        return part

    def __len__(self) -> int:
        return len(self.values)


class _ArrayBatch(_Batch):
    """A sealed batch of records [start, end) of a :class:`Columns` (from send_batch):
    built by one C call when the sender ships it."""

    __slots__ = ("cols", "start", "end")

    def __init__(self, tp: Tuple[str, int], now_ms: int, lock: threading.Lock, cols: Any, start: int,
                 end: int, size: int) -> None:
        super().__init__(tp, now_ms, lock)
        self.cols = cols
        self.start = start
        self.end = end
        self.size = size

    def timestamp_of(self, i: int) -> int:
        ts = self.cols.timestamps
        return self.created_ms if ts is None else int(ts[self.start + i])

    def slice(self, lo: int, hi: int) -> "_ArrayBatch":
        part = _ArrayBatch(self.tp, self.created_ms, self.lock, self.cols, self.start + lo, self.start + hi,
                           self.size)
        part.first_send_ns = self.first_send_ns
        return part

    def __len__(self) -> int:
        return self.end - self.start


class BatchFuture:
    """The result of :meth:`Producer.send_batch`: ``result(timeout)`` gives the offsets of
    the records (int64 array aligned with the input; -1 with acks=0) once every batch is
    acknowledged, or raises the first error a batch got (the other batches may be written).
    ``partitions`` (int32 array aligned with the input) is known at once."""

    __slots__ = ("topic", "partitions", "_parts", "_n")

    def __init__(self, topic: str, partitions: np.ndarray, parts: List[Tuple[_BatchResult, Any, int]],
                 n: int) -> None:
        self.topic = topic
        self.partitions = partitions
        #: (batch result, indices of its records in the input (array or slice), count)
        self._parts = parts
        self._n = n

    def done(self) -> bool:
        return all(r.event.is_set() for r, _, _ in self._parts)

    def result(self, timeout: Optional[float] = None) -> np.ndarray:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = np.empty(self._n, dtype=np.int64)
        for r, where, count in self._parts:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not r.event.wait(left):
                raise RequestTimedOut(f"records to {self.topic} not acknowledged within {timeout} s")
            out[where] = _offsets_of(r, count)
        return out

    get = result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        try:
            self.result(timeout)
        except RequestTimedOut:
            raise
        except BaseException as exc:  # noqa: BLE001 - the future's own error
            return exc
        return None

    def __repr__(self) -> str:
        return f"BatchFuture({self.topic}, {self._n} records, done={self.done()})"


def _offsets_of(r: _BatchResult, count: int) -> np.ndarray:
    """Offsets of the ``count`` records of a completed batch (halves if it was split)."""
    if r.split is not None:
        half, first, second = r.split
        first.event.wait()
        second.event.wait()
        return np.concatenate([_offsets_of(first, half), _offsets_of(second, count - half)])
    if r.error is not None:
        raise r.error
    if r.base_offset < 0:
        return np.full(count, -1, dtype=np.int64)
    return np.arange(r.base_offset, r.base_offset + count, dtype=np.int64)


_BYTES = (bytes, bytearray, memoryview)


class _SpaceWaiter:
    """A send() blocked for room in buffer.memory.  Completed batches' bytes are granted
    to the oldest waiter first (so a large record is not starved by small ones); it is
    woken once it holds all it needs."""

    __slots__ = ("need", "granted", "cond")

    def __init__(self, need: int, lock: threading.Lock) -> None:
        self.need = need  #: bytes the record takes
        self.granted = 0  #: bytes reserved for it so far
        self.cond = threading.Condition(lock)


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
        settings = dict(acks=acks, linger_ms=linger_ms, batch_size=batch_size,
                        compression_type=compression_type, enable_idempotence=enable_idempotence,
                        retries=retries, retry_backoff_ms=retry_backoff_ms,
                        delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=request_timeout_ms,
                        max_request_size=max_request_size, partitioner=partitioner, client_id=client_id,
                        buffer_memory=buffer_memory, max_block_ms=max_block_ms)
        for key, value in (config or {}).items():
            name = key.replace(".", "_")
            if name not in settings:
                raise InvalidConfig(f"unknown producer configuration {key!r}; known: "
                                    f"{sorted(k.replace('_', '.') for k in settings)}")
            settings[name] = value
        from pylog.broker.broker import parse_acks  # the rule is the broker's
        try:
            self.acks = parse_acks(settings["acks"])
        except PylogError as exc:
            raise InvalidConfig(str(exc)) from None
        for name in ("linger_ms", "batch_size", "retries", "retry_backoff_ms", "delivery_timeout_ms",
                     "request_timeout_ms", "max_request_size", "buffer_memory", "max_block_ms"):
            v = settings[name]
            check_int(name.replace("_", "."), v, min=0, error=InvalidConfig)
        if settings["max_request_size"] < 1 or settings["batch_size"] < 0:
            raise InvalidConfig("max.request.size must be >= 1")
        if settings["buffer_memory"] < 1:
            raise InvalidConfig("buffer.memory must be >= 1 (bytes)")
        idem = settings["enable_idempotence"]
        if idem is None:
            idem = self.acks == -1  # Kafka: on by default, quietly off when acks != all
        elif idem and self.acks != -1:
            raise InvalidConfig(f"enable.idempotence=True needs acks='all', got acks={settings['acks']!r}")
        self.idempotent = bool(idem)
        ct = settings["compression_type"]
        if not isinstance(ct, str) or ct.lower() not in CODECS:
            raise InvalidConfig(f"compression.type must be one of {sorted(CODECS)}, got {ct!r}")
        self.compression_type = ct.lower()
        self._codec = CODECS[self.compression_type]
        if self._codec:
            try:
                compress(self._codec, b"probe")
            except UnsupportedCompressionType:
                raise
            except ImportError as exc:  # pragma: no cover - depends on installed packages
                raise UnsupportedCompressionType(f"compression.type={ct}: {exc}") from None
        self.linger_ms = settings["linger_ms"]
        self.batch_size = max(settings["batch_size"], 1)
        self.retries = settings["retries"]
        self.retry_backoff_ms = settings["retry_backoff_ms"]
        self.delivery_timeout_ms = settings["delivery_timeout_ms"]
        self.request_timeout_ms = settings["request_timeout_ms"]
        self.max_request_size = settings["max_request_size"]
        self.buffer_memory: int = settings["buffer_memory"]
        self.max_block_ms: int = settings["max_block_ms"]
        self.client_id = settings["client_id"]
        for name, fn in (("key_serializer", key_serializer), ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):
                raise InvalidConfig(f"{name} must be callable, got {fn!r}")
        self._key_ser = key_serializer
        self._value_ser = value_serializer
        if not isinstance(settings["partitioner"], str) or settings["partitioner"] not in ("murmur2", "xxhash"):
            raise InvalidConfig(f"partitioner must be 'murmur2' or 'xxhash', got {settings['partitioner']!r}")
        from pylog.client.partitioner import murmur2_partition, xxhash_partition
        self._hash_partition = murmur2_partition if settings["partitioner"] == "murmur2" else xxhash_partition
        self._plain = key_serializer is None and value_serializer is None
        self._random = random.Random()

        #: A string bootstrap ("host:port[,host:port]") means a Kafka cluster over the
        #: network: the producer owns that client and closes it in close().
        self._owns_broker = isinstance(bootstrap, str)
        if self._owns_broker:
            from pylog.client.network import NetworkClient

            bootstrap = NetworkClient(bootstrap, client_id=self.client_id or "pylog-producer",
                                      allow_auto_topic_creation=True,
                                      request_timeout_ms=self.request_timeout_ms,
                                      retry_backoff_ms=self.retry_backoff_ms)
        self._broker = bootstrap
        self._tps: Dict[str, List[Tuple[str, int]]] = {}
        self._sticky: Dict[str, List[int]] = {}
        self._key_cache: Dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._open: Dict[Tuple[str, int], _Batch] = {}
        self._ready: Deque[_Batch] = deque()
        self._in_flight = 0
        self._flushing = 0
        self._closed = False
        #: buffer.memory not taken by records held (open, ready, in flight); never < 0.
        self._available = self.buffer_memory
        self._space_waiters: Deque[_SpaceWaiter] = deque()
        self._release_chunk_bytes = max(1, self.buffer_memory // _RELEASE_CHUNKS)
        self._blocked_sends_total = 0  #: send() calls that had to wait for room
        self._bufferpool_wait_ns_total = 0  #: time send() calls spent blocked for room
        self._buffer_exhausted_total = 0  #: send() calls that gave up after max.block.ms
        self._sequences: Dict[Tuple[str, int], int] = {}
        self._producer_id, self._producer_epoch = (-1, -1)
        if self.idempotent:
            try:
                self._producer_id, self._producer_epoch = bootstrap.init_producer_id()
            except BaseException:
                if self._owns_broker:
                    bootstrap.close()
                raise
        #: (records, latency ns from batch open to ack) of each acknowledged batch.
        self.ack_latencies: Optional[List[Tuple[int, int]]] = None
        #: A bootstrap whose acknowledgements come later (a replicated cluster, a network
        #: node) gets pipelined batches: BrokerInterface.pipelined_produce says which.
        self._pipelined = bool(getattr(bootstrap, "pipelined_produce", False))
        self._sender = threading.Thread(target=self._run, name="pylog-producer-sender", daemon=True)
        self._sender.start()

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
        """
        # Fast path: bytes value, bytes or no key, nothing else, topic seen before.
        tps = self._tps.get(topic)
        if (tps is not None and type(value) is bytes and headers is None and partition is None
                and timestamp is None and self._plain):
            size = len(value) + _RECORD_OVERHEAD
            if key is None:
                st = self._sticky[topic]
                st[1] -= size
                part = st[0] if st[1] >= 0 else self._next_sticky(st, len(tps))
            elif type(key) is bytes:
                size += len(key)
                part = self._key_cache.get(key)
                if part is None or part >= len(tps):
                    part = self._key_partition(key, len(tps))
            else:
                return self._send_slow(topic, value, key, headers, partition, timestamp)
            tp = tps[part]
            with self._lock:
                b = self._open.get(tp)
                available = self._available - size  # buffer.memory left after this record
                if (b is not None and available >= 0 and b.size + size <= self.max_request_size
                        and not self._closed):
                    self._available = available
                    i = len(b.values)
                    b.values.append(value)
                    if key is not None:
                        ks = b.keys
                        if ks is None:
                            ks = b.keys = [None] * i
                        ks.append(key)
                    elif b.keys is not None:
                        b.keys.append(None)
                    b.size += size
                    if b.size >= self.batch_size:
                        self._seal_locked(tp, b)
                    return _new_future(FutureRecordMetadata, (b.result, i, tp, b))
            return self._append(tp, value, key, None, None, size)
        return self._send_slow(topic, value, key, headers, partition, timestamp)

    def _send_slow(self, topic: str, value: Any, key: Any, headers: Any, partition: Optional[int],
                   timestamp: Optional[int]) -> FutureRecordMetadata:
        if self._closed:
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
            headers = self._check_headers(headers)
            size += sum(len(k) + (len(v) if v is not None else 0) + 4 for k, v in headers)
        else:
            headers = None
        if timestamp is not None:
            check_int("timestamp (ms)", timestamp, min=0)
        size += _RECORD_OVERHEAD
        if partition is None:
            if key is None:
                st = self._sticky[topic]
                st[1] -= size
                partition = st[0] if st[1] >= 0 else self._next_sticky(st, n)
            else:
                partition = self._key_partition(key, n)
        else:
            check_int(f"partition of topic {topic!r} (it has {n})", partition, min=0, max=n - 1,
                      error=UnknownTopicOrPartition)
        return self._append(tps[partition], value, key, headers, timestamp, size)

    def _append(self, tp: Tuple[str, int], value: Optional[bytes], key: Optional[bytes], headers: Any,
                timestamp: Optional[int], size: int) -> FutureRecordMetadata:
        if size + _BATCH_HEADER > self.max_request_size:
            raise RecordTooLarge(f"a record of about {size} bytes is over max.request.size="
                                 f"{self.max_request_size}")
        if size > self.buffer_memory:
            raise RecordTooLarge(f"a record of about {size} bytes is larger than the total memory buffer "
                                 f"of the producer, buffer.memory={self.buffer_memory}")
        with self._lock:
            if self._closed:
                raise ProducerClosed("send() after the producer was closed")
            if self._available >= size:
                self._available -= size
            else:
                self._wait_for_space_locked(size)
            b = self._open.get(tp)
            if b is not None and b.size + size > self.max_request_size:
                self._seal_locked(tp, b)
                b = None
            if b is None:
                b = self._open[tp] = _Batch(tp, _now_ms(), self._lock)
                if len(self._open) == 1:
                    self._wake.notify_all()  # the sender's linger timer starts now
            i = len(b.values)
            b.values.append(value)
            if key is not None:
                if b.keys is None:
                    b.keys = [None] * i
                b.keys.append(key)
            elif b.keys is not None:
                b.keys.append(None)
            if headers is not None:
                if b.headers is None:
                    b.headers = {}
                b.headers[i] = headers
            if timestamp is not None:
                if b.timestamps is None:
                    b.timestamps = {}
                b.timestamps[i] = timestamp
            b.size += size
            if b.size >= self.batch_size:
                self._seal_locked(tp, b)
            elif self._space_waiters:  # this record's bytes may be what another send waits for
                self._ship_if_starved_locked()
        return _new_future(FutureRecordMetadata, (b.result, i, tp, b))

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
        built by one C call each in the sender thread, in the order given; a batch of
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
        if self._closed:
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
        out: List[Tuple[_BatchResult, Any, int]] = []
        with self._lock:
            for p, gcols, start, end, bound, where in planned:
                if self._closed:
                    raise ProducerClosed("send_batch() after the producer was closed")
                need = bound - _BATCH_HEADER
                if self._available >= need:
                    self._available -= need
                else:
                    self._wait_for_space_locked(need)
                tp = tps[p]
                ob = self._open.get(tp)
                if ob is not None:  # records of earlier send() calls go first
                    self._seal_locked(tp, ob)
                b = _ArrayBatch(tp, now, self._lock, gcols, start, end, bound)
                self._ready.append(b)
                self._wake.notify_all()
                out.append((b.result, where, end - start))
        return BatchFuture(topic, parts, out, n)

    def _plan_batches(self, topic: str, cols: Columns, n_parts: int, partition: Optional[int],
                      limit: int) -> List[Tuple[int, Columns, int, int, int, Any]]:
        """(partition, columns, start, end, size bound, input indices) of each batch to
        queue, in order; raises before anything is queued."""
        if partition is not None:
            check_int(f"partition of topic {topic!r} (it has {n_parts})", partition, min=0, max=n_parts - 1,
                      error=UnknownTopicOrPartition)
            return [(partition, cols, s, e, bound, slice(s, e)) for s, e, bound in cols.split(limit)]
        st = self._sticky[topic]
        if cols.keys is None:
            out = []
            for s, e, bound in cols.split(limit):
                out.append((st[0], cols, s, e, bound, slice(s, e)))
                self._next_sticky(st, n_parts)
            return out
        keyed = self._key_partitions(cols, n_parts)
        keyed[keyed < 0] = st[0]  # null keys: the sticky partition
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
            self._next_sticky(st, n_parts)
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

    # ========================================================= buffer.memory
    def _wait_for_space_locked(self, size: int) -> None:
        """Block (the lock released meanwhile) until ``size`` bytes of buffer.memory are
        reserved for the caller, after the sends that blocked before it.

        Raises BufferExhausted after max.block.ms (at once when called from the sender
        thread, i.e. a callback, which alone frees room), ProducerClosed if the producer
        is closed meanwhile; either way nothing stays reserved.
        """
        if threading.current_thread() is self._sender:
            self._buffer_exhausted_total += 1
            raise BufferExhausted(f"buffer.memory={self.buffer_memory} is full and send() was called from "
                                  f"a producer callback, which cannot wait for room (the sender thread "
                                  f"frees it)")
        self._blocked_sends_total += 1
        waiter = _SpaceWaiter(size, self._lock)
        self._space_waiters.append(waiter)
        self._grant_locked()
        start_ns = time.monotonic_ns()
        deadline_ns = start_ns + self.max_block_ms * 1_000_000
        reserved = False
        try:
            while waiter.granted < size and not self._closed:
                left_ns = deadline_ns - time.monotonic_ns()
                if left_ns <= 0:
                    break
                waiter.cond.wait(min(left_ns / 1e9, threading.TIMEOUT_MAX))
            reserved = waiter.granted == size and not self._closed
        finally:
            self._bufferpool_wait_ns_total += time.monotonic_ns() - start_ns
            if not reserved:  # give back what was granted; the next waiter may use it
                if waiter in self._space_waiters:
                    self._space_waiters.remove(waiter)
                self._available += waiter.granted
                waiter.granted = 0
                self._grant_locked()
        if reserved:
            return
        if self._closed:
            raise ProducerClosed("the producer was closed while send() waited for buffer.memory")
        self._buffer_exhausted_total += 1
        raise BufferExhausted(f"Failed to allocate {size} bytes for a record within max.block.ms="
                              f"{self.max_block_ms} (buffer.memory={self.buffer_memory}, "
                              f"{self._available} bytes available)")

    def _grant_locked(self) -> None:
        """Hand free buffer.memory to the blocked sends, oldest first; wake each one that
        now holds all it needs.  Afterwards either no send waits or no byte is free, and
        the sends still waiting have enough bytes on their way back."""
        waiters = self._space_waiters
        while waiters and self._available > 0:
            w = waiters[0]
            take = min(w.need - w.granted, self._available)
            w.granted += take
            self._available -= take
            if w.granted < w.need:
                break
            waiters.popleft()
            w.cond.notify()
        if waiters:
            self._ship_if_starved_locked()

    def _ship_if_starved_locked(self) -> None:
        """While sends wait for room, make sure their bytes are on the way: if the batches
        already sealed (ready or in flight, to be released when they complete) hold fewer
        bytes than the waiting sends still need, seal lingering batches, oldest first,
        instead of letting them wait out linger.ms.  (Kafka makes every batch ready while
        its buffer is exhausted; sealing only what is needed keeps batches full.)"""
        needed = granted = 0
        for w in self._space_waiters:
            needed += w.need - w.granted
            granted += w.granted
        open_bytes = sum(b.size for b in self._open.values()) - _BATCH_HEADER * len(self._open)
        # Over-counts the bytes of a woken send not yet appended; its append checks again.
        on_the_way = self.buffer_memory - self._available - granted - open_bytes
        if on_the_way >= needed:
            return
        for b in sorted(self._open.values(), key=lambda b: b.created_ms):
            self._seal_locked(b.tp, b)
            on_the_way += b.size - _BATCH_HEADER
            if on_the_way >= needed:
                return

    def _release_locked(self, batches: Sequence[_Batch]) -> None:
        """Give the record bytes of completed (acknowledged or failed) batches back to
        buffer.memory, each batch once, and pass them on to blocked sends."""
        freed = 0
        for b in batches:
            if not b.released:
                b.released = True
                freed += b.size - _BATCH_HEADER
        if freed:
            self._available += freed
            assert self._available <= self.buffer_memory, "buffer.memory released twice"
            self._grant_locked()

    def _next_sticky(self, st: List[int], n: int) -> int:
        """Uniform sticky partitioner (KIP-794): after about batch.size bytes to one
        partition, move to another chosen at random."""
        if n > 1:
            nxt = self._random.randrange(n - 1)
            st[0] = nxt + 1 if nxt >= st[0] else nxt
        else:
            st[0] = 0
        st[1] = self.batch_size
        return st[0]

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
        if topic not in self._sticky:
            self._sticky[topic] = [self._random.randrange(n), self.batch_size]
        if len({len(t) for t in self._tps.values()} | {n}) > 1:
            self._key_cache.clear()  # the cache is per partition count
        self._tps[topic] = tps
        return tps

    def partitions_for(self, topic: str) -> List[int]:
        """The partition numbers of ``topic``."""
        return list(range(len(self._learn_topic(topic))))

    def _seal_locked(self, tp: Tuple[str, int], b: _Batch) -> None:
        del self._open[tp]
        self._ready.append(b)
        # All: flush() waits on the same condition, and must not take the sender's wake-up.
        self._wake.notify_all()

    # ============================================================== flushing
    def flush(self, timeout: Optional[float] = None) -> None:
        """Send every queued record now and wait until each is acknowledged or failed.

        Raises RequestTimedOut if ``timeout`` (s) passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            try:
                for tp in list(self._open):
                    self._seal_locked(tp, self._open[tp])
                while self._ready or self._in_flight or self._open:
                    for tp in list(self._open):
                        self._seal_locked(tp, self._open[tp])
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise RequestTimedOut(f"flush did not finish within {timeout} s")
                    self._wake.wait(left if left is None else min(left, 0.1))
            finally:
                self._flushing -= 1

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop taking records, send and wait for those already taken (as flush), then
        stop the sender.  Sends from now on, and sends blocked waiting for buffer.memory,
        raise ProducerClosed (as Kafka's producer fails its blocked allocations at close).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for w in self._space_waiters:
                w.cond.notify()
            self._wake.notify_all()
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

    # ================================================================ sender
    def _run(self) -> None:
        while True:
            with self._lock:
                batches = self._drain_locked()
                if not batches:
                    if self._closed and not self._open:
                        return
                    self._wake.wait(self._linger_wait_locked())
                    continue
                self._in_flight += len(batches)
            try:
                if self._pipelined:
                    self._send_pipelined(batches)
                else:
                    done: List[_Batch] = []
                    done_bytes = 0
                    for b in batches:
                        self._send_batch(b)
                        done.append(b)
                        done_bytes += b.size - _BATCH_HEADER
                        if done_bytes >= self._release_chunk_bytes:
                            with self._lock:
                                self._release_locked(done)
                            done, done_bytes = [], 0
            except BaseException as exc:  # never leave a future hanging
                log.exception("sending batches failed")
                err = exc if isinstance(exc, Exception) else PylogError(str(exc))
                for b in batches:
                    if not b.result.event.is_set():
                        b.result.done(-1, -1, err)
            with self._lock:
                self._in_flight -= len(batches)
                self._release_locked(batches)  # the rest of the round (each batch once)
                self._wake.notify_all()

    def _linger_wait_locked(self) -> Optional[float]:
        if not self._open:
            return None
        oldest = min(b.created_ms for b in self._open.values())
        return max(0.0, (oldest + self.linger_ms - _now_ms()) / 1000.0) + 0.0005

    def _drain_locked(self) -> List[_Batch]:
        out = list(self._ready)
        self._ready.clear()
        if self._open:
            now = _now_ms()
            for tp, b in list(self._open.items()):
                if self._closed or self._flushing or now - b.created_ms >= self.linger_ms:
                    del self._open[tp]
                    out.append(b)
        return out

    def _build(self, b: _Batch) -> bytes:
        if b.data is None:
            if self.idempotent:
                seq = self._sequences.get(b.tp, 0)
                b.sequence = seq
                self._sequences[b.tp] = (seq + len(b)) % (_INT32_MAX + 1)
            if isinstance(b, _ArrayBatch):
                b.data = b.cols.build(b.start, b.end, base_timestamp=b.created_ms, producer_id=self._producer_id,
                                      producer_epoch=self._producer_epoch, base_sequence=b.sequence,
                                      codec=self._codec)
                return b.data
            n = len(b.values)
            hs = b.headers
            ts = b.timestamps
            b.data = build_batch(
                b.values, keys=b.keys,
                headers=None if hs is None else [hs.get(i) for i in range(n)],
                timestamps=None if ts is None else [ts.get(i, b.created_ms) for i in range(n)],
                base_timestamp=b.created_ms, producer_id=self._producer_id,
                producer_epoch=self._producer_epoch, base_sequence=b.sequence, compression=self._codec)
        return b.data

    def _send_batch(self, b: _Batch) -> None:
        topic, partition = b.tp
        deadline = b.created_ms + self.delivery_timeout_ms
        while True:
            try:
                data = self._build(b)
            except PylogError as exc:
                b.result.done(-1, -1, exc)
                return
            try:
                res = self._broker.produce(topic, partition, data, acks=self.acks,
                                           timeout_ms=self.request_timeout_ms)
            except RecordTooLarge as exc:
                if len(b) > 1:
                    self._split_and_send(b)
                    return
                self._rewind_sequence(b)
                b.result.done(-1, -1, exc)
                return
            except PylogError as exc:
                b.attempts += 1
                if not exc.retriable or b.attempts > self.retries or _now_ms() >= deadline:
                    if not exc.retriable:  # refused: the broker wrote none of it
                        self._rewind_sequence(b)
                    b.result.done(-1, -1, exc)
                    return
                log.warning("retrying batch of %d records to %s-%d after %s (attempt %d)", len(b), topic,
                            partition, exc.__class__.__name__, b.attempts)
                time.sleep(self.retry_backoff_ms / 1000.0)
                continue
            if self.ack_latencies is not None:
                self.ack_latencies.append((len(b), time.perf_counter_ns() - b.first_send_ns))
            if self.acks == 0:
                b.result.done(-1, -1, None)
            else:
                b.result.done(res.base_offset, res.log_append_time, None)
            return

    def _send_pipelined(self, batches: List[_Batch]) -> None:
        """Have up to max.in.flight (5) batches per partition in flight at once, for a
        bootstrap whose ``produce_async`` answers later (a replicated cluster waiting for
        its followers).  A partition whose batch fails stops sending in this round, so
        later batches never overtake it; failed retriable batches go round again."""
        pending = list(batches)
        while pending:
            answers: Dict[int, Tuple[Optional[PylogError], Any]] = {}
            sent: List[_Batch] = []
            held: List[_Batch] = []
            blocked: set = set()
            per_tp: Dict[Tuple[str, int], int] = {}
            for b in pending:
                if b.tp in blocked or per_tp.get(b.tp, 0) >= _MAX_IN_FLIGHT:
                    held.append(b)
                    continue
                try:
                    data = self._build(b)
                except PylogError as exc:
                    b.result.done(-1, -1, exc)
                    continue
                key = id(b)

                def cb(error: Optional[PylogError], result: Any, key: int = key) -> None:
                    answers[key] = (error, result)

                self._broker.produce_async(b.tp[0], b.tp[1], data, acks=self.acks, callback=cb)
                sent.append(b)
                per_tp[b.tp] = per_tp.get(b.tp, 0) + 1
                if key in answers and answers[key][0] is not None:
                    blocked.add(b.tp)  # refused at once: keep the partition's order
            self._broker.drive(lambda: len(answers) >= len(sent), self.request_timeout_ms / 1000.0)
            retry: List[_Batch] = []
            #: Partitions with a batch going round again: a later batch of the same
            #: partition failed because of it (an idempotent broker refuses it as out of
            #: order), so it goes round too, behind it.
            retrying: set = set()
            for b in sent:
                error, res = answers.get(id(b), (RequestTimedOut("no answer within request.timeout.ms"), None))
                if error is None:
                    if self.ack_latencies is not None:
                        self.ack_latencies.append((len(b), time.perf_counter_ns() - b.first_send_ns))
                    b.result.done(-1 if self.acks == 0 else res.base_offset,
                                  -1 if self.acks == 0 else res.log_append_time, None)
                elif isinstance(error, RecordTooLarge) and len(b) > 1:
                    self._split_and_send(b)
                else:
                    b.attempts += 1
                    if (error.retriable or b.tp in retrying) and b.attempts <= self.retries \
                            and _now_ms() < b.created_ms + self.delivery_timeout_ms:
                        retry.append(b)
                        retrying.add(b.tp)
                    else:
                        if not error.retriable and b.tp not in retrying:  # refused: nothing written
                            self._rewind_sequence(b)
                        b.result.done(-1, -1, error)
            done = [b for b in pending if b.result.event.is_set()]
            if done:
                with self._lock:
                    self._release_locked(done)
            if retry:
                log.warning("retrying %d batches after %s", len(retry), type(answers.get(id(retry[0]), (None,))[0]).__name__)
                time.sleep(self.retry_backoff_ms / 1000.0)
            # Retried batches keep their bytes and sequence numbers; held ones follow them.
            pending = sorted(retry + held, key=lambda b: (b.tp, b.sequence if b.sequence >= 0 else 0))

    def _rewind_sequence(self, b: _Batch) -> None:
        """A batch the broker refused (so it wrote none of it): if it was the last
        batch numbered for its partition, the next batch takes its sequence numbers (a
        gap would make an idempotent broker refuse every later batch as out of order)."""
        if self.idempotent and b.sequence >= 0 \
                and self._sequences.get(b.tp) == (b.sequence + len(b)) % (_INT32_MAX + 1):
            self._sequences[b.tp] = b.sequence

    def _split_and_send(self, b: _Batch) -> None:
        """The broker refused the batch as too large: send it as two halves (as Kafka)."""
        if self.idempotent and b.sequence >= 0:
            # The sequence numbers were not used (the broker wrote nothing): reuse them.
            self._sequences[b.tp] = b.sequence
        half = len(b) // 2
        results = []
        for lo, hi in ((0, half), (half, len(b))):
            part = b.slice(lo, hi)
            self._send_batch(part)
            results.append(part.result)
        first, second = results
        b.result.split = (half, first, second)
        b.result.done(-1, -1, first.error or second.error)

    def metrics(self) -> Dict[str, Any]:
        """Queue state: open batches, batches waiting, in flight; and buffer.memory, by
        Kafka's producer metric names: ``buffer_total_bytes``, ``buffer_available_bytes``
        (not taken by records held until their batch completes), ``waiting_threads``
        (sends blocked for room now), ``bufferpool_wait_time_ns_total`` (time they spent
        blocked), ``buffer_exhausted_total`` (sends that raised BufferExhausted); and
        pylog's ``blocked_sends_total`` (sends that had to wait)."""
        with self._lock:
            return {"open_batches": len(self._open), "ready_batches": len(self._ready),
                    "in_flight_batches": self._in_flight, "producer_id": self._producer_id,
                    "buffer_total_bytes": self.buffer_memory, "buffer_available_bytes": self._available,
                    "waiting_threads": len(self._space_waiters), "blocked_sends_total": self._blocked_sends_total,
                    "bufferpool_wait_time_ns_total": self._bufferpool_wait_ns_total,
                    "buffer_exhausted_total": self._buffer_exhausted_total}
