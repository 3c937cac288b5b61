"""GroupMember: the consumer's side of Kafka's group protocol (Kafka's ConsumerCoordinator).

This module owns one consumer's membership in one group: subscribing, joining and syncing
(the leader runs the partition assignor), heartbeating, noticing rebalances and eviction,
leaving, and committing/fetching offsets with the right generation.  It talks to a
:class:`~pylog.broker.group_service.GroupService` in-process.

Threads: a background thread (like Kafka's heartbeat thread) sends heartbeats every
``heartbeat_interval_ms`` and performs the blocking JoinGroup/SyncGroup round trips, so a
consumer that is slow between polls is not evicted before ``max_poll_interval_ms``; when
that passes without a poll, the thread leaves the group (as Kafka does) and the next poll
reports the partitions as lost and rejoins.  The consumer's thread calls :meth:`poll`,
which starts rebalances and reports their outcome; it never blocks longer than its
timeout.

Rebalance protocol (KIP-429): COOPERATIVE when every configured assignor supports it
(``assignors=("cooperative-sticky",)``), otherwise EAGER - Kafka's rule, so the default
``("range", "cooperative-sticky")`` is EAGER.  EAGER: before rejoining, :meth:`poll` returns
a :class:`Rebalance` revoking every partition (commit their positions then), and a later
poll the new assignment.  COOPERATIVE: the member keeps its partitions while rejoining;
after the sync, poll returns what was revoked and what was added, and if something was
revoked it rejoins once more so the group can hand those partitions on.

Use from a consumer's poll loop::

    while (rb := member.poll(0)) is not None:     # at most one step per call
        stop_fetching(rb.revoked); commit_positions(rb.revoked) unless rb.lost
        start_fetching(rb.assigned)
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import (Any, Callable, Dict, FrozenSet, Iterable, Mapping, Optional,
                    Sequence, Tuple, Union)

from pylog.errors import RequestTimedOut
from pylog.broker.group_service import GroupService
from pylog.client.assignors import (COOPERATIVE, Assignment, Subscription, decode_assignment,
                                    decode_subscription, encode_assignment,
                                    encode_subscription, get_assignor, rebalance_protocol)
from pylog.errors import (CommitFailed, CoordinatorNotAvailable, IllegalGeneration,
                          InvalidArgument, InvalidConfig, InvalidGroupId, PylogError,
                          RebalanceInProgress, UnknownMemberId)
from pylog.util import check_int, now_ms

__all__ = ["GroupMember", "Rebalance", "PROTOCOL_TYPE"]

log = logging.getLogger(__name__)

TopicPartition = Tuple[str, int]
#: The protocol type consumers use (Kafka's ConsumerProtocol.PROTOCOL_TYPE).
PROTOCOL_TYPE = "consumer"
_EMPTY: FrozenSet[TopicPartition] = frozenset()
#: Longest real time the background thread sleeps between looks at the clock.
_MAX_WAKE_S = 0.1


@dataclass(frozen=True)
class Rebalance:
    """What changed for this member: stop fetching ``revoked``, start fetching ``assigned``.
    ``lost`` means the member was already out of the group (evicted, or it left after
    max.poll.interval.ms): the revoked partitions may belong to others now and their
    offsets can no longer be committed."""

    revoked: FrozenSet[TopicPartition]
    assigned: FrozenSet[TopicPartition]
    lost: bool = False


@dataclass(frozen=True)
class _Outcome:
    generation_id: int
    member_id: str
    partitions: FrozenSet[TopicPartition]
    topics: Tuple[str, ...]
    partition_counts: Dict[str, int]


class GroupMember:
    """One consumer's membership in ``group_id`` (see the module docstring).

    ``partitions_for(topic)`` returns the topic's partition count (0 or None, or raising
    LookupError, when it does not exist).  Settings have Kafka's consumer names and
    defaults.  Static membership (``group_instance_id``) is not supported.
    """

    def __init__(self, service: GroupService, group_id: str, *,
                 partitions_for: Callable[[str], Optional[int]],
                 assignors: Sequence[str] = ("range", "cooperative-sticky"),
                 session_timeout_ms: int = 45_000, max_poll_interval_ms: int = 300_000,
                 heartbeat_interval_ms: int = 3_000, group_instance_id: Optional[str] = None,
                 client_id: str = "pylog-consumer",
                 clock: Callable[[], int] = now_ms) -> None:
        if not isinstance(group_id, str) or not group_id:
            raise InvalidGroupId(f"group id must be a non-empty str, got {group_id!r}")
        if not callable(partitions_for):
            raise InvalidArgument("partitions_for must be callable(topic) -> partition count")
        if isinstance(assignors, str):
            assignors = (assignors,)
        assignors = tuple(assignors)
        for name in assignors:
            try:
                get_assignor(name)
            except InvalidArgument as e:
                raise InvalidConfig(f"partition.assignment.strategy: {e}") from None
        for name, value, lo in (("session.timeout.ms", session_timeout_ms, 1),
                                ("max.poll.interval.ms", max_poll_interval_ms, 1),
                                ("heartbeat.interval.ms", heartbeat_interval_ms, 1)):
            check_int(name, value, min=lo, error=InvalidConfig)
        if heartbeat_interval_ms >= session_timeout_ms:
            raise InvalidConfig(
                f"heartbeat.interval.ms ({heartbeat_interval_ms}) must be lower than "
                f"session.timeout.ms ({session_timeout_ms})")
        if group_instance_id is not None:
            raise InvalidConfig("group.instance.id (static membership) is not supported")
        if not isinstance(client_id, str):
            raise InvalidConfig(f"client.id must be a str, got {client_id!r}")
        self._service = service
        self.group_id = group_id
        self._partitions_for = partitions_for
        self._assignors = assignors
        self.rebalance_protocol = rebalance_protocol(assignors)
        self._cooperative = self.rebalance_protocol == COOPERATIVE
        self._session_timeout_ms = session_timeout_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._client_id = client_id
        self._clock = clock

        self._cond = threading.Condition()
        # Everything below is guarded by _cond.
        self._topics: Tuple[str, ...] = ()
        self._member_id = ""
        self._generation = -1
        self._owned: FrozenSet[TopicPartition] = _EMPTY
        self._joined_topics: Tuple[str, ...] = ()
        self._joined_counts: Dict[str, int] = {}
        self._need_rejoin = False
        self._join_requested = False
        self._joining = False  # consumer side: a join was requested, outcome not applied
        self._in_flight = False  # thread side: JoinGroup/SyncGroup under way
        self._leave_requested = False
        self._outcome: Optional[_Outcome] = None
        self._lost = False
        self._fatal: Optional[BaseException] = None
        self._last_poll_ms = clock()
        self._next_heartbeat_ms = 0
        self._closing = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ properties

    @property
    def assignment(self) -> FrozenSet[TopicPartition]:
        """The partitions this member owns now (as last reported by :meth:`poll`)."""
        with self._cond:
            return self._owned

    @property
    def generation(self) -> int:
        """The generation this member belongs to, -1 when none."""
        with self._cond:
            return self._generation

    @property
    def member_id(self) -> str:
        """The id the coordinator gave this member ("" before the first join)."""
        with self._cond:
            return self._member_id

    @property
    def subscription(self) -> Tuple[str, ...]:
        with self._cond:
            return self._topics

    # ------------------------------------------------------------------ subscribe / poll

    def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe to exactly ``topics`` (an empty list unsubscribes: the next poll
        revokes everything and leaves the group).  Takes effect at the next poll."""
        if isinstance(topics, str):
            raise InvalidArgument("subscribe takes a list of topic names, not a str")
        names = []
        for t in topics:
            if not isinstance(t, str) or not t:
                raise InvalidArgument(f"a topic name must be a non-empty str, got {t!r}")
            if t not in names:
                names.append(t)
        with self._cond:
            self._check_open()
            new = tuple(sorted(names))
            if new != self._topics:
                self._topics = new
                self._need_rejoin = bool(new)
            if new and self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"pylog-group-member-{self.group_id}")
                self._thread.start()

    def unsubscribe(self) -> None:
        """Same as ``subscribe([])``."""
        self.subscribe([])

    def poll(self, timeout_s: float = 0.0) -> Optional[Rebalance]:
        """Advance the membership: report a pending change, or start a rebalance when one
        is needed and wait up to ``timeout_s`` for it.  Returns the next
        :class:`Rebalance` step or None when there is nothing to report.  Raises the
        coordinator's error when the membership cannot go on (e.g.
        InconsistentGroupProtocol, InvalidSessionTimeout, CoordinatorNotAvailable)."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s < 0:
            raise InvalidArgument(f"timeout_s must be a number >= 0, got {timeout_s!r}")
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._check_open()
            self._last_poll_ms = self._clock()
            step = self._next_step()
            if step is not None or not self._joining:
                return step
            while self._joining and self._outcome is None and self._fatal is None \
                    and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self._check_open()
            return self._next_step()

    def _next_step(self) -> Optional[Rebalance]:
        """Under the lock: the next thing to tell the consumer, starting a join if due."""
        if self._fatal is not None:
            err, self._fatal = self._fatal, None
            self._joining = False
            raise err
        if self._lost:
            self._lost = False
            if self._owned:
                step = Rebalance(self._owned, _EMPTY, lost=True)
                self._owned = _EMPTY
                return step
        if self._outcome is not None:
            step = self._apply_outcome(self._outcome)
            self._outcome = None
            if step is not None:
                return step
        if not self._topics:
            if self._owned or self._member_id:
                step = Rebalance(self._owned, _EMPTY) if self._owned else None
                self._owned = _EMPTY
                self._leave_requested = True
                self._cond.notify_all()
                return step
            return None
        if not self._joining and not self._need_rejoin and self._metadata_changed():
            self._need_rejoin = True
        if self._need_rejoin and not self._joining:
            if not self._cooperative and self._owned:
                step = Rebalance(self._owned, _EMPTY)  # EAGER: revoke all, then rejoin
                self._owned = _EMPTY
                return step
            self._need_rejoin = False
            self._join_requested = True
            self._joining = True
            self._cond.notify_all()
        return None

    def _apply_outcome(self, out: _Outcome) -> Optional[Rebalance]:
        self._joining = False
        if self._generation != out.generation_id or not self._topics:
            # Left or evicted since (or unsubscribed): this generation is gone already.
            self._need_rejoin = bool(self._topics)
            return None
        self._joined_topics = out.topics
        self._joined_counts = out.partition_counts
        # Partitions of topics unsubscribed meanwhile are not started.
        revoked = self._owned - out.partitions
        added = out.partitions - self._owned
        self._owned = out.partitions
        if out.topics != self._topics:
            self._need_rejoin = True
        if revoked and self._cooperative:
            self._need_rejoin = True  # KIP-429: rejoin so the group can reassign them
        if revoked or added:
            return Rebalance(frozenset(revoked), frozenset(added))
        return None

    def _count(self, topic: str) -> int:
        try:
            n = self._partitions_for(topic)
        except LookupError:
            return 0
        return int(n or 0)

    def _metadata_changed(self) -> bool:
        if self._generation < 0:
            return False
        return any(self._count(t) != n for t, n in self._joined_counts.items())

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise InvalidArgument(f"the member of group {self.group_id!r} is closed")

    # ------------------------------------------------------------------ offsets

    def commit(self, offsets: Mapping[TopicPartition, Union[int, Tuple[int, str]]]) -> None:
        """Durably commit ``offsets`` (the next offset to consume per partition, optionally
        with a metadata string).  A member that has not subscribed commits as a "simple"
        consumer (generation -1).  Raises :class:`CommitFailed` naming the reason when the
        member is no longer in the group's current generation, RebalanceInProgress while
        the group completes a rebalance (retry after the next poll)."""
        if not isinstance(offsets, Mapping):
            raise InvalidArgument("offsets must map (topic, partition) to an offset")
        values: Dict[TopicPartition, Tuple[int, str]] = {}
        for tp, v in offsets.items():
            values[tp] = (v, "") if isinstance(v, int) and not isinstance(v, bool) else v
        with self._cond:
            if self._closed:
                raise InvalidArgument(f"the member of group {self.group_id!r} is closed")
            simple = not self._topics and not self._member_id
            generation, member_id = (-1, "") if simple else (self._generation, self._member_id)
        if not simple and generation < 0:
            raise CommitFailed(
                f"commit to group {self.group_id!r} cannot be completed: this member is not "
                "part of an active generation (it is rejoining); poll to rejoin first")
        try:
            self._service.commit_offsets(self.group_id, generation, member_id, values)
        except (IllegalGeneration, UnknownMemberId) as e:
            raise CommitFailed(
                f"commit to group {self.group_id!r} cannot be completed: the group has "
                f"rebalanced and the partitions may belong to another member now "
                f"({e.kafka_name}: {e})") from e

    def committed(self, partitions: Iterable[TopicPartition]) -> Dict[TopicPartition, Optional[int]]:
        """The group's committed offset per partition (None where there is none)."""
        parts = list(partitions)
        found = self._service.fetch_offsets(self.group_id, parts)
        return {tp: (found[tp][0] if tp in found else None) for tp in parts}

    # ------------------------------------------------------------------ background thread

    def _wake_s(self) -> float:
        return min(self._heartbeat_interval_ms / 1000.0, _MAX_WAKE_S)

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._closing:
                        return
                    now = self._clock()
                    if self._leave_requested:
                        self._leave_requested = False
                        job = "leave"
                    elif self._join_requested:
                        self._join_requested = False
                        self._in_flight = True
                        job = "join"
                    elif self._generation >= 0 and not self._in_flight:
                        if now - self._last_poll_ms > self._max_poll_interval_ms:
                            job = "poll-timeout"
                        elif now >= self._next_heartbeat_ms:
                            job = "heartbeat"
                    if job is None:
                        self._cond.wait(self._wake_s())
            try:
                if job == "join":
                    try:
                        self._join()
                    finally:
                        with self._cond:
                            self._in_flight = False
                elif job == "heartbeat":
                    self._heartbeat()
                else:
                    self._leave(job)
            except BaseException as e:  # hand it to the consumer's thread
                with self._cond:
                    self._fatal = e
                    if job == "join":
                        self._need_rejoin = True  # the next poll tries again
                    self._cond.notify_all()
                if not isinstance(e, PylogError):
                    log.exception("group member of %r failed", self.group_id)

    def _heartbeat(self) -> None:
        with self._cond:
            generation, member_id = self._generation, self._member_id
            self._next_heartbeat_ms = self._clock() + self._heartbeat_interval_ms
        try:
            self._service.heartbeat(self.group_id, generation, member_id)
        except RebalanceInProgress:
            with self._cond:
                self._need_rejoin = True
        except (UnknownMemberId, IllegalGeneration) as e:
            with self._cond:
                if self._generation != generation:
                    return  # a join finished meanwhile; this answer is old news
                log.info("member %s of group %r is out of the group (%s); will rejoin",
                         member_id, self.group_id, e.kafka_name)
                if isinstance(e, UnknownMemberId):
                    self._member_id = ""
                self._generation = -1
                self._lost = True
                self._need_rejoin = True
                self._cond.notify_all()
        except PylogError as e:
            if not e.retriable:
                raise
            # The coordinator is moving or unreachable for now (over the network): the
            # next heartbeat tries again; the session timeout decides if it was too long.
            log.warning("heartbeat of group %r failed (%s: %s); will retry", self.group_id,
                        type(e).__name__, e)

    def _leave(self, why: str) -> None:
        with self._cond:
            member_id = self._member_id
            if why == "poll-timeout":
                log.warning(
                    "consumer of group %r did not poll for more than max.poll.interval.ms "
                    "(%d ms); leaving the group", self.group_id, self._max_poll_interval_ms)
                self._lost = True
                self._need_rejoin = True
            self._member_id = ""
            self._generation = -1
        if member_id:
            try:
                self._service.leave_group(self.group_id, member_id)
            except (UnknownMemberId, CoordinatorNotAvailable):
                pass

    def _join(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                topics = self._topics
                if not topics:
                    self._joining = False
                    self._cond.notify_all()
                    return
                member_id = self._member_id
                owned = self._owned if self._cooperative else _EMPTY
                sub = Subscription(topics, None, tuple(sorted(owned)), self._generation)
            meta = encode_subscription(sub)
            try:
                result = self._service.join_group(
                    self.group_id, member_id, PROTOCOL_TYPE,
                    [(name, meta) for name in self._assignors], self._session_timeout_ms,
                    self._max_poll_interval_ms, client_id=self._client_id)
            except UnknownMemberId:
                with self._cond:
                    self._member_id = ""
                continue
            except (RebalanceInProgress, RequestTimedOut):
                continue
            with self._cond:
                self._member_id = result.member_id
                closing = self._closing
            if closing:  # close() may have stopped waiting for this thread: leave here
                self._leave_now(True)
                return
            counts: Dict[str, int] = {t: self._count(t) for t in topics}
            assignments = None
            if result.is_leader:
                assignments, group_counts = self._assign(result.protocol_name, result.members)
                counts.update(group_counts)
            sent_ms = self._clock()  # the next heartbeat is due one interval after this
            try:
                data = self._service.sync_group(self.group_id, result.generation_id,
                                                result.member_id, assignments)
            except (RebalanceInProgress, IllegalGeneration, RequestTimedOut):
                continue
            except UnknownMemberId:
                with self._cond:
                    self._member_id = ""
                continue
            assignment = decode_assignment(data)
            with self._cond:
                self._generation = result.generation_id
                self._next_heartbeat_ms = sent_ms + self._heartbeat_interval_ms
                self._last_poll_ms = max(self._last_poll_ms, self._clock())
                self._outcome = _Outcome(result.generation_id, result.member_id,
                                         frozenset(assignment.partitions), topics, counts)
                self._cond.notify_all()
            return

    def _assign(self, protocol: Optional[str], members: Sequence[Tuple[str, bytes]]
                ) -> Tuple[Dict[str, bytes], Dict[str, int]]:
        """Run the selected assignor for the group (this member is the leader)."""
        fn = get_assignor(protocol or "")
        subs = {mid: decode_subscription(meta) for mid, meta in members}
        topics = sorted({t for s in subs.values() for t in s.topics})
        counts = {t: self._count(t) for t in topics}
        result = fn(subs, counts)
        return ({mid: encode_assignment(Assignment(tuple(tps))) for mid, tps in result.items()},
                counts)

    # ------------------------------------------------------------------ close

    def close(self, leave: bool = True, timeout_s: float = 30.0) -> None:
        """Stop the background thread (waiting for it up to ``timeout_s``); with ``leave``
        leave the group at once (otherwise the coordinator evicts the member after
        session.timeout.ms).  A poll waiting in another thread raises."""
        with self._cond:
            if self._closed or self._closing:
                return
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            # A leave makes a JoinGroup waiting in the thread return at once.  A first
            # JoinGroup (no member id yet) cannot be cut short: if it outlasts timeout_s,
            # the thread leaves the group itself when it returns.
            self._leave_now(leave)
            thread.join(timeout_s)
        if leave:
            self._leave_now(leave)
        with self._cond:
            self._closed = True
            self._owned = _EMPTY
            self._generation = -1

    def _leave_now(self, leave: bool) -> None:
        with self._cond:
            member_id = self._member_id
            if leave:
                self._member_id = ""
        if leave and member_id:
            try:
                self._service.leave_group(self.group_id, member_id)
            except (UnknownMemberId, CoordinatorNotAvailable):
                pass

    def __enter__(self) -> "GroupMember":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
