"""GroupService: the thread-safe, blocking driver of the group coordinator.

This module owns the one place where the sans-I/O :class:`~pylog.broker.group.GroupCoordinator`
meets threads, the clock and storage.  In-process consumers (and later the network server)
call its blocking methods from any thread; a daemon ticker thread reports the passage of
time so that a member that stops heartbeating is evicted even when no call arrives.

Durability: every offset commit becomes one batch appended through the ``append`` callable
the broker provides (``append(partition, [(key, value), ...])`` writes to
``__consumer_offsets-<partition>`` and raises on failure).  Offsets become visible to
:meth:`GroupService.fetch_offsets` only after ``append`` returned; if it raises, the commit
raises the same exception and nothing changes.  So does each completed rebalance: the
group's members and assignments are appended as its metadata record before the members
hear their assignments.  At startup the broker replays the topic through
:meth:`GroupService.load`: committed offsets and groups (Stable groups keep their members,
who carry on if they heartbeat within their session timeout).

In a cluster of broker processes a service coordinates only the groups of the
``__consumer_offsets`` partitions its broker leads (``owned_partitions=()`` at
construction): the broker calls :meth:`GroupService.load_partition` when it becomes a
partition's leader (the partition's records are replayed from its own log, without this
service's lock held, while the partition's groups answer CoordinatorLoadInProgress) and
:meth:`GroupService.unload_partition` when it stops leading one (its groups' members get
NotCoordinator and find the new coordinator).

Concurrency: one lock guards the coordinator, and ``append`` runs under it, so appends to a
partition happen in the order the coordinator asked for them (keeping the log and the
in-memory offsets identical).  Blocking calls (a JoinGroup waiting for the rebalance, a
follower's SyncGroup waiting for the leader's) wait outside the lock.

A broker whose appends wait for other brokers (acks=all over the network) passes
``append_async(partition, records, done)`` instead: it starts the append and returns,
and ``done(error_or_None)`` is called once it is acknowledged or failed, from any thread
and possibly under the broker's own locks.  The service then keeps at most one append
per partition in flight (the next starts when the previous is done, so the order holds)
and completes them on a thread of its own, so nothing waits for the followers under its
lock: a network server's event loop, which also serves the followers' fetches, never
blocks on a commit.
"""
from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import uuid
from collections import deque
from typing import (Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple)

from pylog.broker.group import (Action, AppendOffsets, GroupConfig, GroupCoordinator,
                                GroupDescription, GroupListing, JoinGroupResult, Respond,
                                RequestTimedOut)
from pylog.broker.offsets_topic import (GroupMetadataKey, OffsetKey, decode_group_metadata_value,
                                        decode_key, decode_offset_value)
from pylog.errors import CoordinatorNotAvailable, InvalidArgument, InvalidConfig, NotCoordinator
from pylog.util import check_int, now_ms

__all__ = ["GroupService", "JoinGroupResult", "DEFAULT_SYNC_TIMEOUT_S"]

log = logging.getLogger(__name__)

TopicPartition = Tuple[str, int]
AppendFn = Callable[[int, List[Tuple[bytes, Optional[bytes]]]], None]
#: ``append_async(partition, records, done)``: ``done(error or None)`` once acknowledged.
AsyncAppendFn = Callable[[int, List[Tuple[bytes, Optional[bytes]]], Callable[[Optional[BaseException]], None]], None]

#: How long sync_group waits for the leader's assignment by default (request.timeout.ms).
DEFAULT_SYNC_TIMEOUT_S = 30.0
#: Extra time a JoinGroup waits beyond the rebalance timeout (as Kafka's consumer does).
JOIN_TIMEOUT_SLACK_S = 5.0


def _uuid_member_id(client_id: str) -> str:
    return f"{client_id or 'member'}-{uuid.uuid4()}"


#: ``callback(result, error)`` of a non-blocking call (see :meth:`GroupService.submit`).
Callback = Callable[[Any, Optional[BaseException]], None]


class _Waiter:
    __slots__ = ("event", "response", "callback")

    def __init__(self, callback: Optional[Callback] = None) -> None:
        self.event = threading.Event()
        self.response: Optional[Respond] = None
        self.callback = callback

    def answer(self, response: Respond) -> None:
        self.response = response
        if self.callback is None:
            self.event.set()
            return
        try:
            self.callback(response.result, response.error)
        except Exception:  # the coordinator must go on
            log.exception("group request callback raised")


def _fresh(error: BaseException) -> BaseException:
    """A copy of ``error`` to raise in this thread (one instance may answer several)."""
    try:
        return copy.copy(error)
    except Exception:  # an exception type copy cannot rebuild: raise the original
        return error


class GroupService:
    """Consumer groups of one broker: blocking, thread-safe calls over a GroupCoordinator.

    ``append`` persists offset records (see the module docstring); ``num_partitions`` is
    offsets.topic.num.partitions; ``clock`` returns ms since the epoch; the ticker thread
    runs every ``tick_interval_ms`` (0 starts no thread: the caller then calls
    :meth:`tick` itself, which deterministic tests do with a fake clock).
    ``owned_partitions`` None coordinates every group; ``()`` none until
    :meth:`load_partition` (see the module docstring).  Group settings
    are keyword arguments with Kafka's names in snake_case (see
    :class:`~pylog.broker.group.GroupConfig`): ``group_min_session_timeout_ms=6000``,
    ``group_max_session_timeout_ms=1800000``, ``group_initial_rebalance_delay_ms=0``
    (Kafka: 3000), ``offsets_retention_ms=604800000``,
    ``offsets_retention_check_interval_ms=600000``, ``offset_metadata_max_bytes=4096``.

    Every error is an exception from :mod:`pylog.errors` (or the exception ``append``
    raised); a call on a closed service raises CoordinatorNotAvailable.  Exactly one of
    ``append`` and ``append_async`` is given (see the module docstring).
    """

    def __init__(self, *, append: Optional[AppendFn] = None, num_partitions: int,
                 clock: Callable[[], int] = now_ms, tick_interval_ms: int = 100,
                 member_id_factory: Optional[Callable[[str], str]] = None,
                 owned_partitions: Optional[Iterable[int]] = None,
                 append_async: Optional[AsyncAppendFn] = None,
                 **config: Any) -> None:
        if (append is None) == (append_async is None):
            raise InvalidArgument("give one of append(partition, records) and "
                                  "append_async(partition, records, done)")
        if not callable(append if append_async is None else append_async):
            raise InvalidArgument("append must be callable(partition, records)")
        if not callable(clock):
            raise InvalidArgument("clock must be a callable returning ms")
        check_int("tick_interval_ms", tick_interval_ms, min=0, error=InvalidConfig)
        unknown = set(config) - set(GroupConfig.__dataclass_fields__)
        if unknown:
            raise InvalidConfig(f"unknown group configuration {sorted(unknown)}")
        self._append = append
        self._append_async = append_async
        #: async appends: per partition, those not started yet, and the one in flight
        self._queued: Dict[int, Deque[AppendOffsets]] = {}
        self._in_flight: Dict[int, int] = {}
        self._completions: "queue.SimpleQueue[Optional[Tuple[int, int, Optional[BaseException]]]]" = \
            queue.SimpleQueue()
        self._completer: Optional[threading.Thread] = None
        self._clock = clock
        self._lock = threading.Lock()
        self._coord = GroupCoordinator(GroupConfig(**config), num_partitions=num_partitions,
                                       member_id_factory=member_id_factory or _uuid_member_id,
                                       now=self._now(), owned_partitions=owned_partitions)
        self._waiters: Dict[int, _Waiter] = {}
        self._tokens = itertools.count(1)
        self._closed = False
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        if tick_interval_ms > 0:
            self._ticker = threading.Thread(target=self._tick_loop, args=(tick_interval_ms,),
                                            name="pylog-group-ticker", daemon=True)
            self._ticker.start()
        if append_async is not None:
            self._completer = threading.Thread(target=self._complete_loop, name="pylog-group-appends",
                                               daemon=True)
            self._completer.start()

    # ------------------------------------------------------------------ plumbing

    @property
    def config(self) -> GroupConfig:
        return self._coord.config

    @property
    def num_partitions(self) -> int:
        return self._coord.num_partitions

    def _now(self) -> int:
        now = self._clock()
        return check_int("the clock's value (ms)", now)

    def _check_open(self) -> None:
        if self._closed:
            raise CoordinatorNotAvailable("the group service is closed")

    def _drive(self, actions: List[Action]) -> None:
        """Perform ``actions`` (lock held): appends in order, answers to their waiters."""
        todo = deque(actions)
        while todo:
            action = todo.popleft()
            if isinstance(action, AppendOffsets) and self._append_async is not None:
                self._queued.setdefault(action.partition, deque()).append(action)
                todo.extend(self._start_append(action.partition))
            elif isinstance(action, AppendOffsets):
                error: Optional[BaseException] = None
                try:
                    self._append(action.partition, list(action.records))
                except BaseException as e:  # noqa: B902 - the coordinator must hear of it
                    error = e
                todo.extend(self._coord.append_done(action.append_id, self._now(), error))
                if error is not None and not isinstance(error, Exception):
                    raise error  # KeyboardInterrupt & co: recorded, then propagated
            else:
                waiter = self._waiters.pop(action.token, None)
                if waiter is not None:  # None: the caller gave up waiting
                    waiter.answer(action)

    def _start_append(self, partition: int) -> List[Action]:
        """(Lock held.)  Start the next queued append of ``partition`` unless one is in
        flight; one that fails to start is done at once (its actions are returned)."""
        actions: List[Action] = []
        pending = self._queued.get(partition)
        while pending and partition not in self._in_flight:
            action = pending.popleft()
            self._in_flight[partition] = action.append_id

            def done(error: Optional[BaseException], p: int = partition, aid: int = action.append_id) -> None:
                self._completions.put((p, aid, error))

            try:
                assert self._append_async is not None
                self._append_async(partition, list(action.records), done)
            except Exception as exc:  # noqa: B902 - the coordinator must hear of it
                del self._in_flight[partition]
                actions += self._coord.append_done(action.append_id, self._now(), exc)
        if not pending:
            self._queued.pop(partition, None)
        return actions

    def _complete_loop(self) -> None:
        """The thread that reports finished async appends to the coordinator."""
        while True:
            item = self._completions.get()
            if item is None:
                return
            partition, append_id, error = item
            try:
                with self._lock:
                    if self._closed or self._in_flight.get(partition) != append_id:
                        continue
                    del self._in_flight[partition]
                    actions = self._coord.append_done(append_id, self._now(), error)
                    self._drive(actions + self._start_append(partition))
            except Exception:  # a bug: keep completing the others, but say so
                log.exception("completing an append to partition %d failed", partition)

    def _call(self, submit: Callable[[int, int], List[Action]],
              timeout_s: Optional[float] = None, what: str = "request",
              callback: Optional[Callback] = None) -> Any:
        """Submit a request to the coordinator; block for its answer, or with
        ``callback`` return None at once and deliver ``callback(result, error)`` when the
        answer comes (errors of the submission included)."""
        token = next(self._tokens)
        waiter = _Waiter(callback)
        with self._lock:
            try:
                self._check_open()
                self._waiters[token] = waiter
                self._drive(submit(token, self._now()))
            except Exception as exc:
                self._waiters.pop(token, None)
                if callback is None:
                    raise
                waiter.answer(Respond(token, error=exc))
                return None
            except BaseException:
                self._waiters.pop(token, None)
                raise
        if callback is not None:
            return None
        if not waiter.event.wait(timeout_s):
            with self._lock:
                gave_up = self._waiters.pop(token, None) is not None
            if gave_up:
                raise RequestTimedOut(f"{what} got no answer within {timeout_s} s")
        response = waiter.response
        assert response is not None
        if response.error is not None:
            raise _fresh(response.error)
        return response.result

    def _tick_loop(self, interval_ms: int) -> None:
        while not self._stop.wait(interval_ms / 1000.0):
            try:
                self.tick()
            except CoordinatorNotAvailable:
                return
            except Exception:  # a bug: keep the groups alive, but say so
                log.exception("group coordinator tick failed")

    # ------------------------------------------------------------------ startup

    def load(self, records: Iterable[Tuple[bytes, Optional[bytes]]]) -> int:
        """Replay ``__consumer_offsets`` records (key, value-or-None) in log order: the last
        record per key wins and a null value deletes.  Committed offsets and group
        metadata (members, generation, assignments) are both restored.  Returns the number
        of records applied; a record that does not decode raises CorruptRecordError naming
        the problem."""
        with self._lock:
            self._check_open()
            return self._apply(records, self._now())

    def _apply(self, records: Iterable[Tuple[bytes, Optional[bytes]]], now: int,
               partition: Optional[int] = None) -> int:
        """Replay ``records`` (lock held); with ``partition``, only the groups of that
        partition of __consumer_offsets (a record of another group is not its own)."""
        n = 0
        for key, value in records:
            if key is None:
                raise InvalidArgument("a __consumer_offsets record must have a key")
            k = decode_key(key)
            if partition is not None and self._coord.partition_for(k.group) != partition:
                continue
            if isinstance(k, GroupMetadataKey):
                g = None if value is None else decode_group_metadata_value(value)
                self._coord.load_group(k.group, g, now)
            else:
                assert isinstance(k, OffsetKey)
                v = None if value is None else decode_offset_value(value)
                self._coord.load_offset(k.group, (k.topic, k.partition), v, now)
            n += 1
        return n

    # ------------------------------------------------------------------ leadership

    @property
    def owned_partitions(self) -> frozenset:
        """Partitions of ``__consumer_offsets`` whose groups this service serves now."""
        with self._lock:
            return self._coord.owned_partitions

    @property
    def loading_partitions(self) -> frozenset:
        """Partitions being loaded by :meth:`load_partition` right now."""
        with self._lock:
            return self._coord.loading_partitions

    def partition_for(self, group_id: str) -> int:
        """The partition of ``__consumer_offsets`` that holds ``group_id``."""
        return self._coord.partition_for(group_id)

    def load_partition(self, partition: int, leader_epoch: int,
                       records: Iterable[Tuple[bytes, Optional[bytes]]], *,
                       chunk: int = 1000) -> Optional[int]:
        """This broker leads ``partition`` of ``__consumer_offsets`` at ``leader_epoch``:
        replay ``records`` (key, value-or-None, in log order: the partition's log from its
        start) and then serve its groups.  Meanwhile their requests fail with
        CoordinatorLoadInProgress.

        ``records`` is consumed without this service's lock held (reading the log may
        take the broker's locks; other groups are served meanwhile) and applied
        ``chunk`` records at a time under it.  Returns the number of records
        applied, or None when there was nothing to do (already owned at this or an older
        epoch, or unloaded meanwhile).  If reading or decoding raises, the partition is
        unloaded again and the exception propagates (the caller may try again)."""
        check_int("chunk", chunk, min=1)
        with self._lock:
            self._check_open()
            if not self._coord.begin_load(partition, leader_epoch):
                return None
        n = 0
        try:
            it = iter(records)
            while True:
                batch: List[Tuple[bytes, Optional[bytes]]] = []
                for rec in it:
                    batch.append(rec)
                    if len(batch) >= chunk:
                        break
                with self._lock:
                    self._check_open()
                    if partition not in self._coord.loading_partitions:
                        return None  # unloaded meanwhile
                    n += self._apply(batch, self._now(), partition)
                    if len(batch) < chunk:
                        return n if self._coord.finish_load(partition) else None
        except BaseException:
            with self._lock:
                if not self._closed and partition in self._coord.loading_partitions:
                    self._unload(partition)
            raise

    def unload_partition(self, partition: int, leader_epoch: Optional[int] = None) -> None:
        """This broker stopped leading ``partition`` (``leader_epoch``: the epoch it now
        follows; None: unconditionally): forget its groups; their waiting JoinGroup and
        SyncGroup calls, and later calls, fail with NotCoordinator."""
        with self._lock:
            if not self._closed:
                self._unload(partition, leader_epoch)

    def _unload(self, partition: int, leader_epoch: Optional[int] = None) -> None:
        """(Lock held.)  Unload ``partition``; its appends not started yet fail."""
        now = self._now()
        actions = self._coord.unload(partition, now, leader_epoch)
        if partition not in self._coord.owned_partitions | self._coord.loading_partitions:
            for action in self._queued.pop(partition, ()):  # never started: nothing was written
                actions += self._coord.append_done(action.append_id, now, NotCoordinator(
                    f"partition {partition} of __consumer_offsets moved before the append started"))
        self._drive(actions)

    # ------------------------------------------------------------------ membership

    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[Tuple[str, bytes]], session_timeout_ms: int,
                   rebalance_timeout_ms: int, group_instance_id: Optional[str] = None, *,
                   client_id: str = "", timeout_s: Optional[float] = None,
                   callback: Optional[Callback] = None) -> JoinGroupResult:
        """Join (``member_id`` "") or rejoin the group; blocks until the rebalance completes
        and returns the member's place in the new generation (the leader also gets every
        member's metadata).  ``timeout_s`` defaults to the rebalance timeout + 5 s.
        Static membership is not supported: ``group_instance_id`` must be None.

        Every blocking call of this class also takes ``callback``: then it returns None at
        once and ``callback(result, error)`` gets the answer later, from whichever thread
        produces it (while the service's lock is held: be quick, never call back in)."""
        if group_instance_id is not None:
            error = InvalidArgument("static membership (group.instance.id) is not supported")
            if callback is None:
                raise error
            callback(None, error)
            return None  # type: ignore[return-value]
        if timeout_s is None and isinstance(rebalance_timeout_ms, int) and rebalance_timeout_ms > 0:
            timeout_s = rebalance_timeout_ms / 1000.0 + JOIN_TIMEOUT_SLACK_S
        return self._call(
            lambda tok, now: self._coord.join_group(
                tok, group_id, member_id, protocol_type, protocols, session_timeout_ms,
                rebalance_timeout_ms, now, client_id=client_id),
            timeout_s, "JoinGroup", callback)

    def sync_group(self, group_id: str, generation_id: int, member_id: str,
                   assignments: Optional[Mapping[str, bytes]] = None, *,
                   timeout_s: Optional[float] = DEFAULT_SYNC_TIMEOUT_S,
                   callback: Optional[Callback] = None) -> bytes:
        """Return the member's assignment of ``generation_id``; the leader passes every
        member's assignment.  Followers block until the leader's sync arrives."""
        return self._call(
            lambda tok, now: self._coord.sync_group(tok, group_id, generation_id, member_id,
                                                    assignments, now),
            timeout_s, "SyncGroup", callback)

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, *,
                  callback: Optional[Callback] = None) -> None:
        """Keep the member's session alive; raises RebalanceInProgress when it must rejoin,
        IllegalGeneration / UnknownMemberId when it is out of the group."""
        self._call(lambda tok, now: self._coord.heartbeat(tok, group_id, generation_id,
                                                          member_id, now), callback=callback)

    def leave_group(self, group_id: str, member_id: str, *, callback: Optional[Callback] = None) -> None:
        """Leave the group at once (no wait for the session timeout)."""
        self._call(lambda tok, now: self._coord.leave_group(tok, group_id, member_id, now),
                   callback=callback)

    # ------------------------------------------------------------------ offsets

    def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                       offsets: Mapping[TopicPartition, Tuple[Any, ...]], *,
                       callback: Optional[Callback] = None) -> None:
        """Durably commit (topic, partition) -> (offset, metadata) for the group; returns
        once ``append`` has written them.  Use generation -1 and member id "" for a group
        without members (manual assignment)."""
        self._call(lambda tok, now: self._coord.commit_offsets(
            tok, group_id, generation_id, member_id, offsets, now), callback=callback)

    def fetch_offsets(self, group_id: str,
                      partitions: Optional[Iterable[TopicPartition]] = None
                      ) -> Dict[TopicPartition, Tuple[int, str]]:
        """Committed (offset, metadata) per partition; partitions without a commit are
        absent."""
        with self._lock:
            self._check_open()
            return self._coord.fetch_offsets(group_id, partitions)

    # ------------------------------------------------------------------ admin

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, generation, protocol, leader and members (Dead if unknown)."""
        with self._lock:
            self._check_open()
            return self._coord.describe_group(group_id)

    def list_groups(self) -> List[GroupListing]:
        """Every group this service knows."""
        with self._lock:
            self._check_open()
            return self._coord.list_groups()

    def delete_group(self, group_id: str, *, callback: Optional[Callback] = None) -> None:
        """Delete a group without members and its offsets (GroupIdNotFound, NonEmptyGroup)."""
        self._call(lambda tok, now: self._coord.delete_group(tok, group_id, now), callback=callback)

    def delete_offsets(self, group_id: str, partitions: Iterable[TopicPartition], *,
                       callback: Optional[Callback] = None) -> Dict[TopicPartition, Optional[BaseException]]:
        """Kafka's OffsetDelete: per partition None (deleted, or nothing to delete) or
        GroupSubscribedToTopic; GroupIdNotFound for an unknown group."""
        parts = list(partitions)
        return self._call(lambda tok, now: self._coord.delete_offsets(tok, group_id, parts, now),
                          callback=callback)

    def tick(self) -> None:
        """Report the clock to the coordinator now (the ticker thread calls this)."""
        with self._lock:
            self._check_open()
            self._drive(self._coord.tick(self._now()))

    def close(self) -> None:
        """Stop the ticker; waiting calls and later calls raise CoordinatorNotAvailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiters, self._waiters = self._waiters, {}
            for w in waiters.values():
                w.answer(Respond(None, error=CoordinatorNotAvailable("the group service was closed")))
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        if self._completer is not None:
            self._completions.put(None)
            if self._completer is not threading.current_thread():
                self._completer.join()

    def __enter__(self) -> "GroupService":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
