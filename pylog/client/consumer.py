"""The Consumer: pull records by offset, alone (assign) or in a group (subscribe).

As Kafka's consumer: a consumer keeps a *position* per assigned partition, fetches
from it, and (in a group) commits positions to the group coordinator.  Consuming
deletes nothing: consumers in different groups each see every record, and any
consumer can seek back and re-read what retention kept.

Two ways to read:

* :meth:`Consumer.poll` returns :class:`ConsumerRecord` tuples;
* :meth:`Consumer.poll_arrays` returns :class:`ConsumerArrays`: numpy columns
  (offsets, timestamps, key/value positions and lengths, partition), with no Python
  object per record and, in process, no copy of uncompressed payload: the records stay
  in the segment mappings they were fetched from — the fast path.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pylog.errors import (
    CommitFailed,
    ConsumerClosed,
    CorruptRecordError,
    IllegalState,
    InvalidArgument,
    InvalidConfig,
    NoOffsetForPartition,
    OffsetOutOfRange,
    PylogError,
    RebalanceInProgress,
    UnknownTopicOrPartition,
)
from pylog.records import decode_batches, decode_records, join_views
from pylog.records.batch import RecordArrays
from pylog.util import check_int, now_ms as _now_ms

__all__ = ["Consumer", "ConsumerRecord", "ConsumerArrays", "TopicPartition"]

log = logging.getLogger("pylog.consumer")

EARLIEST = -2
LATEST = -1
#: Membership steps one poll applies at most (a rebalance takes two or three).
_MAX_REBALANCE_STEPS = 8
#: Fetches in a row that may return only empty (compacted) batches before poll gives up.
_MAX_EMPTY_FETCHES = 64


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class ConsumerRecord(NamedTuple):
    """One record as :meth:`Consumer.poll` returns it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Tuple[str, Optional[bytes]], ...]


class ConsumerArrays:
    """Records of one poll as numpy columns.

    Record *i*'s value is ``buffer[value_pos[i]:value_pos[i] + value_len[i]]`` (length
    -1: null); ``partition_index[i]`` indexes :attr:`partitions` (a list of
    TopicPartition).

    Zero copy.  The records of one poll come from several fetches (one per partition and
    round), each with its own buffer: for uncompressed batches read by the embedded
    consumer, a view of the partition's segment mapping; for compressed batches, the one
    buffer they were decompressed into.  Those buffers are :attr:`buffers`, in order,
    and are never copied by poll_arrays.  The positions columns count from the start of
    their concatenation, which :attr:`buffer` is: a single bytes-like object that is
    joined (one copy) only when it is first asked for, and not at all when the poll
    had one buffer.  :meth:`values`, :meth:`keys`, :meth:`records` and
    :meth:`value_view` read the buffers in place; :meth:`parts` gives each fetch's
    records as :class:`~pylog.records.RecordArrays` over its own buffer.  As with
    ``Log.read`` views, the buffers keep their bytes after the log changes (Invariant 3),
    and holding them keeps that memory.
    """

    __slots__ = ("_buf", "_parts", "buffer_starts", "partitions", "partition_index", "offsets", "timestamps",
                 "key_pos", "key_len", "value_pos", "value_len", "headers_pos", "headers_count")

    _COLS = ("offsets", "timestamps", "key_pos", "key_len", "value_pos", "value_len", "headers_pos",
             "headers_count")

    def __init__(self, buffer: Any, partitions: List[TopicPartition], partition_index: np.ndarray,
                 cols: Dict[str, np.ndarray], parts: Optional[List[Tuple[int, RecordArrays]]] = None) -> None:
        """``parts``: (index into ``partitions``, that fetch's RecordArrays) in order, their
        positions counted from their own buffer; ``buffer`` may then be None (joined on
        demand)."""
        self.partitions = partitions
        self.partition_index = partition_index
        for name in self._COLS:
            setattr(self, name, cols[name])
        if parts is None:
            parts = [(0, RecordArrays(buffer, cols))]
        self._parts = parts
        self._buf = buffer
        sizes = [_nbytes(a.buffer) for _, a in parts]
        self.buffer_starts = np.cumsum([0] + sizes[:-1], dtype=np.int64)

    @property
    def buffer(self) -> Any:
        """All records' bytes as one bytes-like object (joined on first use when the poll
        had several buffers: a copy; see :attr:`buffers` for the zero-copy pieces)."""
        if self._buf is None:
            self._buf = b"".join([a.buffer for _, a in self._parts])
        return self._buf

    @property
    def buffers(self) -> List[Any]:
        """The records' bytes as the fetches left them (zero copy), in order; piece *j*
        starts at ``buffer_starts[j]`` of :attr:`buffer`."""
        return [a.buffer for _, a in self._parts]

    def parts(self) -> List[Tuple[TopicPartition, RecordArrays]]:
        """Each fetch's records, in order: (partition, RecordArrays over its own buffer)."""
        return [(self.partitions[i], a) for i, a in self._parts]

    def __len__(self) -> int:
        return len(self.offsets)

    def value_view(self, i: int) -> Optional[memoryview]:
        """Record ``i``'s value as a zero-copy memoryview (None for a null value)."""
        return self._view(i, self.value_pos, self.value_len)

    def key_view(self, i: int) -> Optional[memoryview]:
        """Record ``i``'s key as a zero-copy memoryview (None for a null key)."""
        return self._view(i, self.key_pos, self.key_len)

    def _view(self, i: int, pos: np.ndarray, lens: np.ndarray) -> Optional[memoryview]:
        n = int(lens[i])
        if n < 0:
            return None
        p = int(pos[i])
        j = int(np.searchsorted(self.buffer_starts, p, side="right")) - 1
        buf = self._parts[j][1].buffer
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        local = p - int(self.buffer_starts[j])
        return mv.cast("B")[local:local + n] if mv.format != "B" else mv[local:local + n]

    def values(self) -> List[Optional[bytes]]:
        """Values as bytes objects (builds one object per record)."""
        return [v for _, a in self._parts for v in a.values()]

    def keys(self) -> List[Optional[bytes]]:
        return [k for _, a in self._parts for k in a.keys()]

    def records(self) -> List[ConsumerRecord]:
        """Materialise as ConsumerRecord tuples."""
        tps = self.partitions
        return [ConsumerRecord(tps[i].topic, tps[i].partition, r.offset, r.timestamp, r.key, r.value, r.headers)
                for i, a in self._parts for r in a.records()]

    @property
    def partition(self) -> np.ndarray:
        """Partition number of each record."""
        nums = np.array([tp.partition for tp in self.partitions] or [0], dtype=np.int32)
        return nums[self.partition_index]

    def __repr__(self) -> str:
        return f"ConsumerArrays({len(self)} records from {len(self.partitions)} partitions)"


def _nbytes(buf: Any) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


_EMPTY_COLS = {n: np.empty(0, dtype=t) for n, t in (
    ("offsets", np.int64), ("timestamps", np.int64), ("key_pos", np.int64), ("key_len", np.int32),
    ("value_pos", np.int64), ("value_len", np.int32), ("headers_pos", np.int64), ("headers_count", np.int32))}


def _tp(x: Any) -> TopicPartition:
    try:
        topic, partition = x
    except (TypeError, ValueError):
        raise InvalidArgument(f"expected a (topic, partition) pair, got {x!r}") from None
    if not isinstance(topic, str) or isinstance(partition, bool) or not isinstance(partition, int):
        raise InvalidArgument(f"expected a (str topic, int partition) pair, got {x!r}")
    return TopicPartition(topic, partition)


class Consumer:
    """Read records from topics; see the module docstring.

    Settings are Kafka's consumer configs as snake_case keywords (or ``config=`` with
    Kafka names): ``group_id`` (None: no group; assign() only, no commits),
    ``auto_offset_reset`` ("latest" as Kafka, "earliest", "none"),
    ``enable_auto_commit`` (True), ``auto_commit_interval_ms`` (5000),
    ``max_poll_records`` (500), ``max_partition_fetch_bytes`` (1 MiB),
    ``fetch_max_bytes`` (50 MiB), ``fetch_max_wait_ms`` (500),
    ``session_timeout_ms`` (45000), ``heartbeat_interval_ms`` (3000),
    ``max_poll_interval_ms`` (300000), ``partition_assignment_strategy``
    (["range", "cooperative-sticky"]), ``key_deserializer``/``value_deserializer``.

    ``bootstrap`` is a broker object (an embedded :class:`~pylog.Broker`, a
    :class:`~pylog.LocalCluster`), or a string ``"host:port[,host:port...]"``: then the
    consumer speaks Kafka's protocol to that cluster (``pylog serve`` or any Kafka
    broker) through a :class:`~pylog.client.network.NetworkClient` it owns, with the
    same API.  Over the network it fetches every partition of a broker in one Fetch
    request that long-polls (``fetch_min_bytes`` (1), ``fetch_max_wait_ms``),
    prefetches while the application works, and gives up on a request after
    ``request_timeout_ms`` (30000); topics are never auto-created by a consumer.

    ``check_crcs`` (Kafka's check.crcs, True): every fetched batch's CRC32C is checked
    before its records are handed out, by poll() and poll_arrays(), embedded or over
    the network (a broker's fetch serves its log's bytes without re-checking them); a
    damaged batch raises CorruptRecordError naming the partition and offset.
    """

    def __init__(self, bootstrap: Any, config: Optional[Mapping[str, Any]] = None, *,
                 group_id: Optional[str] = None, auto_offset_reset: str = "latest",
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 max_poll_records: int = 500, max_partition_fetch_bytes: int = 1 << 20,
                 fetch_max_bytes: int = 50 << 20, fetch_max_wait_ms: int = 500,
                 session_timeout_ms: int = 45_000, heartbeat_interval_ms: int = 3_000,
                 max_poll_interval_ms: int = 300_000,
                 partition_assignment_strategy: Sequence[str] = ("range", "cooperative-sticky"),
                 group_instance_id: Optional[str] = None,
                 key_deserializer: Optional[Callable[[bytes], Any]] = None,
                 value_deserializer: Optional[Callable[[bytes], Any]] = None,
                 client_id: str = "", fetch_min_bytes: int = 1, request_timeout_ms: int = 30_000,
                 check_crcs: bool = True, retry_backoff_ms: int = 100) -> None:
        s = dict(fetch_min_bytes=fetch_min_bytes, request_timeout_ms=request_timeout_ms, check_crcs=check_crcs,
                 retry_backoff_ms=retry_backoff_ms, group_id=group_id, auto_offset_reset=auto_offset_reset, enable_auto_commit=enable_auto_commit,
                 auto_commit_interval_ms=auto_commit_interval_ms, max_poll_records=max_poll_records,
                 max_partition_fetch_bytes=max_partition_fetch_bytes, fetch_max_bytes=fetch_max_bytes,
                 fetch_max_wait_ms=fetch_max_wait_ms, session_timeout_ms=session_timeout_ms,
                 heartbeat_interval_ms=heartbeat_interval_ms, max_poll_interval_ms=max_poll_interval_ms,
                 partition_assignment_strategy=partition_assignment_strategy,
                 group_instance_id=group_instance_id, client_id=client_id)
        for key, value in (config or {}).items():
            name = key.replace(".", "_")
            if name not in s:
                raise InvalidConfig(f"unknown consumer configuration {key!r}")
            s[name] = value
        if s["group_id"] is not None and (not isinstance(s["group_id"], str) or not s["group_id"]):
            raise InvalidConfig(f"group.id must be a non-empty string or None, got {s['group_id']!r}")
        if s["auto_offset_reset"] not in ("earliest", "latest", "none"):
            raise InvalidConfig(f"auto.offset.reset must be 'earliest', 'latest' or 'none', got "
                                f"{s['auto_offset_reset']!r}")
        for name in ("auto_commit_interval_ms", "max_poll_records", "max_partition_fetch_bytes",
                     "fetch_max_bytes", "fetch_max_wait_ms", "session_timeout_ms", "heartbeat_interval_ms",
                     "max_poll_interval_ms", "fetch_min_bytes", "request_timeout_ms", "retry_backoff_ms"):
            v = s[name]
            check_int(name.replace("_", "."), v,
                      min=0 if name in ("fetch_max_wait_ms", "fetch_min_bytes", "retry_backoff_ms") else 1,
                      error=InvalidConfig)
        if not isinstance(s["check_crcs"], bool):
            raise InvalidConfig(f"check.crcs must be a boolean, got {s['check_crcs']!r}")
        if not isinstance(s["enable_auto_commit"], bool):
            raise InvalidConfig(f"enable.auto.commit must be a boolean, got {s['enable_auto_commit']!r}")
        strategies = s["partition_assignment_strategy"]
        if isinstance(strategies, str):
            strategies = [x.strip() for x in strategies.split(",") if x.strip()]
        self.group_id: Optional[str] = s["group_id"]
        self.auto_offset_reset: str = s["auto_offset_reset"]
        self.enable_auto_commit: bool = s["enable_auto_commit"] and self.group_id is not None
        self.auto_commit_interval_ms: int = s["auto_commit_interval_ms"]
        self.max_poll_records: int = s["max_poll_records"]
        self.max_partition_fetch_bytes: int = s["max_partition_fetch_bytes"]
        self.fetch_max_bytes: int = s["fetch_max_bytes"]
        self.fetch_max_wait_ms: int = s["fetch_max_wait_ms"]
        self._session_timeout_ms = s["session_timeout_ms"]
        self._heartbeat_interval_ms = s["heartbeat_interval_ms"]
        self._max_poll_interval_ms = s["max_poll_interval_ms"]
        self._strategies = list(strategies)
        self._group_instance_id = s["group_instance_id"]
        self._key_de = key_deserializer
        self._value_de = value_deserializer
        #: A string bootstrap means a Kafka cluster over the network: the consumer owns
        #: that client (topics are not auto-created by consumers) and closes it.
        self._owns_broker = isinstance(bootstrap, str)
        if self._owns_broker:
            from pylog.client.network import NetworkClient

            bootstrap = NetworkClient(bootstrap, client_id=s["client_id"] or "pylog-consumer",
                                      allow_auto_topic_creation=False,
                                      request_timeout_ms=s["request_timeout_ms"],
                                      retry_backoff_ms=s["retry_backoff_ms"])
        self._broker = bootstrap
        #: A broker reached by Fetch requests (send_fetches): batched long-polls with
        #: prefetch (see pylog.client.fetcher); in-process brokers are read directly.
        self._fetcher: Any = None
        if hasattr(bootstrap, "send_fetches"):
            from pylog.client.fetcher import Fetcher

            self._fetcher = Fetcher(bootstrap, max_wait_ms=self.fetch_max_wait_ms, min_bytes=s["fetch_min_bytes"],
                                    max_bytes=self.fetch_max_bytes, max_partition_bytes=self.max_partition_fetch_bytes,
                                    check_crcs=s["check_crcs"], retry_backoff_ms=s["retry_backoff_ms"])
        self._client_id = s["client_id"]
        self._check_crcs: bool = s["check_crcs"]
        self._assigned: List[TopicPartition] = []
        self._positions: Dict[TopicPartition, Optional[int]] = {}
        self._paused: set = set()
        self._subscription: Optional[List[str]] = None
        self._member: Any = None
        self._closed = False
        self._next = 0
        self._last_commit_ms = _now_ms()
        self._on_assign: Optional[Callable[[List[TopicPartition]], Any]] = None
        self._on_revoke: Optional[Callable[[List[TopicPartition]], Any]] = None

    # ============================================================ assignment
    def _check_open(self) -> None:
        if self._closed:
            raise ConsumerClosed("the consumer is closed")

    def assign(self, partitions: Iterable[Any]) -> None:
        """Consume exactly these (topic, partition) pairs (no group rebalancing).

        Raises IllegalState if subscribed, UnknownTopicOrPartition for a partition that
        does not exist.
        """
        self._check_open()
        if self._subscription is not None:
            raise IllegalState("assign() after subscribe(): call unsubscribe() first")
        tps = [_tp(x) for x in partitions]
        for tp in tps:
            n = self._broker.partitions_for(tp.topic)  # raises if the topic is unknown
            check_int(f"partition of topic {tp.topic!r} (it has {n})", tp.partition, min=0, max=n - 1,
                      error=UnknownTopicOrPartition)
        keep = {tp: self._positions.get(tp) for tp in tps}
        self._assigned = list(dict.fromkeys(tps))
        self._positions = keep

    def assignment(self) -> List[TopicPartition]:
        """The partitions currently assigned."""
        return list(self._assigned)

    def subscribe(self, topics: Iterable[str], *, on_assign: Optional[Callable[[List[TopicPartition]], Any]] = None,
                  on_revoke: Optional[Callable[[List[TopicPartition]], Any]] = None) -> None:
        """Join ``group_id`` and consume the partitions of ``topics`` the group assigns.

        ``on_assign``/``on_revoke`` are called (inside poll) with the partitions gained
        or lost at a rebalance.  Raises IllegalState without a group_id or after assign().
        """
        self._check_open()
        if self.group_id is None:
            raise IllegalState("subscribe() needs a group_id; use assign() without a group")
        if isinstance(topics, str):
            topics = [topics]
        topics = list(topics)
        if not topics or not all(isinstance(t, str) for t in topics):
            raise InvalidArgument(f"topics must be a non-empty list of names, got {topics!r}")
        if self._subscription is None and self._assigned:
            raise IllegalState("subscribe() after assign(): call unsubscribe() first")
        for t in topics:
            self._broker.partitions_for(t)  # raises UnknownTopicOrPartition
        self._subscription = topics
        self._on_assign, self._on_revoke = on_assign, on_revoke
        if self._member is None:
            from pylog.client.group_member import GroupMember
            self._member = GroupMember(
                self._broker.groups, self.group_id, partitions_for=self._broker.partitions_for,
                assignors=self._strategies, session_timeout_ms=self._session_timeout_ms,
                max_poll_interval_ms=self._max_poll_interval_ms,
                heartbeat_interval_ms=self._heartbeat_interval_ms,
                group_instance_id=self._group_instance_id, client_id=self._client_id or "pylog-consumer")
        self._member.subscribe(topics)

    def subscription(self) -> Optional[List[str]]:
        return None if self._subscription is None else list(self._subscription)

    def unsubscribe(self) -> None:
        """Leave the group (committing first with auto-commit) and drop the assignment."""
        self._check_open()
        if self._member is not None:
            if self.enable_auto_commit and self._assigned:
                self._commit_positions()
            self._member.close(leave=True)
            self._member = None
        self._subscription = None
        self._assigned = []
        self._positions = {}

    def _apply_rebalance(self, change: Any) -> None:
        revoked = [TopicPartition(*tp) for tp in sorted(change.revoked)]
        assigned = [TopicPartition(*tp) for tp in sorted(change.assigned)]
        if revoked:
            if self.enable_auto_commit and not getattr(change, "lost", False):
                self._commit_positions(only=revoked)
            if self._on_revoke is not None:
                self._on_revoke(revoked)
            for tp in revoked:
                self._positions.pop(tp, None)
            self._assigned = [tp for tp in self._assigned if tp not in set(revoked)]
        for tp in assigned:
            if tp not in self._positions:
                self._assigned.append(tp)
                self._positions[tp] = None
        if assigned and self._on_assign is not None:
            self._on_assign(assigned)

    # ============================================================= positions
    def _resolve_positions(self) -> None:
        missing = [tp for tp in self._assigned if self._positions.get(tp) is None]
        if not missing:
            return
        committed = self.committed(missing) if self.group_id is not None else {}
        for tp in missing:
            off = committed.get(tp)
            if off is not None:
                self._positions[tp] = off
                continue
            try:
                self._positions[tp] = self._reset_offset(tp)
            except PylogError as exc:
                if not exc.retriable:  # e.g. no leader during an election: try next poll
                    raise

    def _reset_offset(self, tp: TopicPartition) -> int:
        if self.auto_offset_reset == "none":
            raise NoOffsetForPartition(f"no committed offset for {tp.topic}-{tp.partition} and "
                                       "auto.offset.reset is 'none'")
        ts = EARLIEST if self.auto_offset_reset == "earliest" else LATEST
        off, _ = self._broker.list_offsets(tp.topic, tp.partition, ts)
        return int(off)

    def position(self, partition: Any) -> int:
        """The offset of the next record poll will return for this partition."""
        self._check_open()
        tp = _tp(partition)
        if tp not in self._positions:
            raise IllegalState(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        if self._positions[tp] is None:
            self._resolve_positions()
        pos = self._positions[tp]
        if pos is None:
            from pylog.errors import NotLeaderOrFollower

            raise NotLeaderOrFollower(f"{tp.topic}-{tp.partition} has no leader to ask for a starting offset "
                                      "right now; retry")
        return int(pos)

    def seek(self, partition: Any, offset: int) -> None:
        """Make the next poll of ``partition`` start at ``offset``."""
        self._check_open()
        tp = _tp(partition)
        if tp not in self._positions:
            raise IllegalState(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        check_int("offset", offset, min=0)
        self._positions[tp] = offset

    def seek_to_beginning(self, partitions: Optional[Iterable[Any]] = None) -> None:
        """Seek to the log start offset (all assigned partitions if none given)."""
        self._seek_to(partitions, EARLIEST)

    def seek_to_end(self, partitions: Optional[Iterable[Any]] = None) -> None:
        """Seek to the high watermark (all assigned partitions if none given)."""
        self._seek_to(partitions, LATEST)

    def _seek_to(self, partitions: Optional[Iterable[Any]], ts: int) -> None:
        self._check_open()
        tps = self._assigned if partitions is None else [_tp(x) for x in partitions]
        for tp in tps:
            if tp not in self._positions:
                raise IllegalState(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
            off, _ = self._broker.list_offsets(tp.topic, tp.partition, ts)
            self._positions[tp] = int(off)

    def beginning_offsets(self, partitions: Iterable[Any]) -> Dict[TopicPartition, int]:
        return {tp: int(self._broker.list_offsets(tp.topic, tp.partition, EARLIEST)[0])
                for tp in map(_tp, partitions)}

    def end_offsets(self, partitions: Iterable[Any]) -> Dict[TopicPartition, int]:
        """High watermarks: the offset the next produced record will get, as consumers see it."""
        return {tp: int(self._broker.list_offsets(tp.topic, tp.partition, LATEST)[0])
                for tp in map(_tp, partitions)}

    def offsets_for_times(self, timestamps: Mapping[Any, int]) -> Dict[TopicPartition, Optional[Tuple[int, int]]]:
        """For each partition, (offset, timestamp) of the first record at or after the
        timestamp (ms), or None if there is none."""
        self._check_open()
        out: Dict[TopicPartition, Optional[Tuple[int, int]]] = {}
        for x, ts in timestamps.items():
            tp = _tp(x)
            check_int(f"timestamp (ms) for {tp}", ts, min=0)
            off, rts = self._broker.list_offsets(tp.topic, tp.partition, ts)
            out[tp] = None if off is None else (int(off), int(rts))
        return out

    def pause(self, partitions: Iterable[Any]) -> None:
        self._paused.update(_tp(x) for x in partitions)

    def resume(self, partitions: Iterable[Any]) -> None:
        self._paused.difference_update(_tp(x) for x in partitions)

    # ================================================================ commits
    def commit(self, offsets: Optional[Mapping[Any, int]] = None) -> None:
        """Commit ``offsets`` (default: the current positions) for the group.

        Raises IllegalState without a group_id; CommitFailed if the group rebalanced
        and this consumer's generation is stale.
        """
        self._check_open()
        if self.group_id is None:
            raise IllegalState("commit() needs a group_id")
        if offsets is None:
            self._commit_positions()
            return
        clean: Dict[TopicPartition, int] = {}
        for x, off in offsets.items():
            check_int(f"offset for {x!r}", off, min=0)
            clean[_tp(x)] = off
        self._commit(clean)

    def _commit_positions(self, only: Optional[List[TopicPartition]] = None) -> None:
        tps = self._assigned if only is None else only
        offs = {tp: self._positions[tp] for tp in tps if self._positions.get(tp) is not None}
        if offs:
            self._commit(offs)  # type: ignore[arg-type]
        self._last_commit_ms = _now_ms()

    def _commit(self, offsets: Dict[TopicPartition, int]) -> None:
        if self._member is not None:
            self._member.commit({(tp.topic, tp.partition): off for tp, off in offsets.items()})
        else:
            self._broker.groups.commit_offsets(self.group_id, -1, "",
                                               {(tp.topic, tp.partition): (off, "") for tp, off in offsets.items()})

    def committed(self, partitions: Iterable[Any]) -> Dict[TopicPartition, Optional[int]]:
        """The group's committed offsets for these partitions (None where there is none)."""
        self._check_open()
        if self.group_id is None:
            raise IllegalState("committed() needs a group_id")
        tps = [_tp(x) for x in partitions]
        got = self._broker.groups.fetch_offsets(self.group_id, [(tp.topic, tp.partition) for tp in tps])
        out: Dict[TopicPartition, Optional[int]] = {}
        for tp in tps:
            v = got.get((tp.topic, tp.partition))
            out[tp] = None if v is None else int(v[0] if isinstance(v, tuple) else v)
        return out

    # ================================================================== poll
    def _prepare_poll(self, timeout_s: float) -> None:
        self._check_open()
        if self._member is not None:
            # One membership step per member.poll: eager revoke-all, then the new
            # assignment; cooperative revoke/assign pairs.  Loop until nothing is pending.
            deadline = time.monotonic() + timeout_s
            change = self._member.poll(timeout_s)
            for _ in range(_MAX_REBALANCE_STEPS):
                if change is None:
                    break
                self._apply_rebalance(change)
                change = self._member.poll(max(0.0, deadline - time.monotonic()))
        elif self._subscription is None and not self._assigned:
            raise IllegalState("poll() with no assignment: call subscribe() or assign() first")
        if self.enable_auto_commit and _now_ms() - self._last_commit_ms >= self.auto_commit_interval_ms:
            try:
                self._commit_positions()
            except (CommitFailed, RebalanceInProgress) as exc:  # as Kafka: logged, retried later
                log.warning("auto-commit of group %s failed: %s", self.group_id, exc)
                self._last_commit_ms = _now_ms()
        self._resolve_positions()

    def _fetch_one(self, tp: TopicPartition, max_records: int, max_bytes: int) -> Optional[RecordArrays]:
        """Records of one partition from its position (at most ``max_records``), or None.

        Batches that hold no record at or after the position (compaction leaves empty
        batches, and the first batch may start below it) are skipped, fetching on.
        """
        for _ in range(_MAX_EMPTY_FETCHES):
            pos = self._positions[tp]
            arrays = self._fetch_once(tp, max_records, max_bytes)
            if arrays is not None or self._positions[tp] == pos:
                return arrays
        return None

    def _fetch_once(self, tp: TopicPartition, max_records: int, max_bytes: int) -> Optional[RecordArrays]:
        for attempt in (0, 1):
            pos = self._positions[tp]
            assert pos is not None
            try:
                res = self._broker.fetch(tp.topic, tp.partition, pos, max_bytes=max_bytes)
                break
            except PylogError as exc:
                if not isinstance(exc, OffsetOutOfRange):
                    if exc.retriable:  # leadership moving: nothing from this partition now
                        return None
                    raise
                if self.auto_offset_reset == "none" or attempt:
                    raise
                new = self._reset_offset(tp)
                log.warning("offset %d of %s-%d is out of range; reset to %d (auto.offset.reset=%s)", pos,
                            tp.topic, tp.partition, new, self.auto_offset_reset)
                self._positions[tp] = new
        batches = res.batches
        if not batches:
            return None
        try:
            if batches[0].compression:  # into one buffer, each batch decompressed once
                arrays = decode_batches(batches, pos, check_crcs=self._check_crcs)
            else:  # a log's batches are adjacent views of its segment: decoded in place
                arrays = decode_records(join_views([b.buffer for b in batches]), pos,
                                        check_crcs=self._check_crcs)
        except CorruptRecordError as exc:  # check.crcs: the broker's fetch does not re-check
            raise CorruptRecordError(f"{tp.topic}-{tp.partition} at offset {pos}: {exc}") from None
        n = len(arrays)
        if n > max_records:
            arrays = arrays.head(max_records)
            self._positions[tp] = int(arrays.offsets[-1]) + 1
        else:
            # Past the whole fetch, including offsets compaction removed.
            self._positions[tp] = batches[-1].next_offset
        return arrays if n else None

    def _round(self, max_records: int) -> List[Tuple[TopicPartition, RecordArrays]]:
        out: List[Tuple[TopicPartition, RecordArrays]] = []
        tps = [tp for tp in self._assigned if tp not in self._paused and self._positions.get(tp) is not None]
        if self._fetcher is not None:
            out = self._fetcher.collect(tps, self._positions, max_records, self._out_of_range)
            self._fetcher.send(tps, self._positions)  # prefetch what was drained
            return out
        if not tps:
            return out
        left = max_records
        budget = self.fetch_max_bytes
        start = self._next % len(tps)
        self._next += 1
        for k in range(len(tps)):
            if left <= 0 or budget <= 0:
                break
            tp = tps[(start + k) % len(tps)]
            arrays = self._fetch_one(tp, left, min(self.max_partition_fetch_bytes, budget))
            if arrays is not None:
                out.append((tp, arrays))
                left -= len(arrays)
                budget -= self.max_partition_fetch_bytes
        return out

    def _out_of_range(self, tp: TopicPartition, error: PylogError) -> None:
        """A Fetch answered OFFSET_OUT_OF_RANGE: reset by auto.offset.reset, or raise."""
        if self.auto_offset_reset == "none":
            raise error
        pos = self._positions.get(tp)
        new = self._reset_offset(tp)
        log.warning("offset %s of %s-%d is out of range; reset to %d (auto.offset.reset=%s)", pos,
                    tp.topic, tp.partition, new, self.auto_offset_reset)
        self._positions[tp] = new

    def _poll_rounds(self, max_records: int, timeout: float) -> List[Tuple[TopicPartition, RecordArrays]]:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidArgument(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        deadline = time.monotonic() + timeout
        self._prepare_poll(timeout)
        if self._fetcher is not None:  # over the network: the Fetch long-polls
            while True:
                got = self._round(max_records)
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return []
                self._fetcher.wait(min(left, self.fetch_max_wait_ms / 1000.0 + 0.1))
                if self._member is not None:
                    self._prepare_poll(0)
        while True:
            version = self._broker.data_version
            got = self._round(max_records)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return []
            self._broker.wait_for_data(version, min(left, self.fetch_max_wait_ms / 1000.0))
            if self._member is not None:
                self._prepare_poll(0)

    def poll(self, timeout: float = 0.0, max_records: Optional[int] = None) -> List[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout`` s for some.

        Returns at most ``max_records`` (default max.poll.records), in offset order per
        partition.  In a group, poll also takes part in rebalances and auto-commits.
        Raises ConsumerClosed, IllegalState (nothing assigned or subscribed),
        NoOffsetForPartition / OffsetOutOfRange with auto.offset.reset "none".
        """
        limit = self.max_poll_records if max_records is None else max_records
        check_int("max_records", limit, min=1)
        out: List[ConsumerRecord] = []
        kd, vd = self._key_de, self._value_de
        for tp, arrays in self._poll_rounds(limit, timeout):
            topic, part = tp
            for r in arrays.records():
                key, value = r.key, r.value
                if kd is not None and key is not None:
                    key = kd(key)
                if vd is not None and value is not None:
                    value = vd(value)
                out.append(ConsumerRecord(topic, part, r.offset, r.timestamp, key, value, r.headers))
        return out

    def poll_arrays(self, max_records: int = 100_000, timeout: float = 0.0) -> ConsumerArrays:
        """Like :meth:`poll`, as :class:`ConsumerArrays` (numpy; no object per record).

        Fetches until ``max_records`` records or nothing more is available now; waits
        up to ``timeout`` s only if nothing is available at all.
        """
        check_int("max_records", max_records, min=1)
        parts = self._poll_rounds(max_records, timeout)
        left = max_records - sum(len(a) for _, a in parts)
        while parts and left > 0:
            more = self._round(left)
            if not more:
                break
            parts.extend(more)
            left -= sum(len(a) for _, a in more)
        return self._concat(parts)

    @staticmethod
    def _concat(parts: List[Tuple[TopicPartition, RecordArrays]]) -> ConsumerArrays:
        """One ConsumerArrays over the fetches' own buffers (no copy of their bytes; the
        position columns are shifted to count from the start of their concatenation)."""
        if not parts:
            return ConsumerArrays(b"", [], np.empty(0, dtype=np.int32), dict(_EMPTY_COLS))
        tps: List[TopicPartition] = []
        index_of: Dict[TopicPartition, int] = {}
        for tp, _ in parts:
            if tp not in index_of:
                index_of[tp] = len(tps)
                tps.append(tp)
        indexed = [(index_of[tp], a) for tp, a in parts]
        if len(parts) == 1:
            a = parts[0][1]
            cols = {n: getattr(a, n) for n in ConsumerArrays._COLS}
            return ConsumerArrays(a.buffer, tps, np.zeros(len(a), dtype=np.int32), cols, indexed)
        sizes = [_nbytes(a.buffer) for _, a in parts]
        shifts = np.cumsum([0] + sizes[:-1])
        cols = {}
        for name in ConsumerArrays._COLS:
            arrs = [getattr(a, name) for _, a in parts]
            if name in ("key_pos", "value_pos", "headers_pos"):
                arrs = [x + int(s) if s else x for x, s in zip(arrs, shifts)]
            cols[name] = np.concatenate(arrs)
        pidx = np.repeat(np.array([i for i, _ in indexed], dtype=np.int32), [len(a) for _, a in parts])
        return ConsumerArrays(None, tps, pidx, cols, indexed)

    # ================================================================= close
    def close(self, autocommit: bool = True) -> None:
        """Commit (with enable.auto.commit), leave the group, and stop."""
        if self._closed:
            return
        try:
            if self._member is not None:
                if autocommit and self.enable_auto_commit and self._assigned:
                    try:
                        self._commit_positions()
                    except Exception as exc:
                        log.warning("final auto-commit of group %s failed: %s", self.group_id, exc)
                self._member.close(leave=True)
        finally:
            self._member = None
            self._closed = True
            if self._fetcher is not None:
                self._fetcher.clear()
            if self._owns_broker:
                self._broker.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self):
        """Iterate records forever (poll with a 1 s timeout), as Kafka clients allow."""
        while not self._closed:
            yield from self.poll(timeout=1.0)
