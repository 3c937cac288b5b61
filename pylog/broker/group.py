"""The group coordinator: Kafka's classic consumer-group protocol as a sans-I/O state machine.

This module owns group membership (join, sync, heartbeat, leave, generations, leader,
protocol selection, session and rebalance timeouts) and the committed offsets of every
group that lives on one coordinator.  It owns no thread, lock, clock, socket or file:

* **Events in** are method calls.  Each request carries a caller-chosen ``token`` and the
  current time ``now`` in ms; :meth:`GroupCoordinator.tick` reports the passage of time.
* **Actions out** are the returned lists: :class:`Respond` answers the request with that
  token (possibly much later: a JoinGroup is answered when the rebalance completes, a
  follower's SyncGroup when the leader's assignments are stored), :class:`AppendOffsets`
  asks the driver to append records to ``__consumer_offsets`` and then report
  :meth:`append_done` (:class:`StoreGroup`, the group metadata record, is one of them).

The driver (:class:`pylog.broker.group_service.GroupService`, the simulator, later the
network server) performs the actions.  AppendOffsets actions of one partition must be
performed, and their ``append_done`` reported, in the order they were returned.

Group states (Kafka's names) and transitions::

    Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup, assignments stored--> Stable
    Stable / CompletingRebalance --join of a new or changed member, leave, eviction-->
        PreparingRebalance
    PreparingRebalance --every member gone--> Empty          (generation still advances)
    Empty --delete_group--> Dead (removed once the tombstones are written)

Invariants kept (and asserted by the tests):

* The generation only grows; every completed rebalance advances it by one.
* Join responses of a generation go only to the members of that generation; the leader is
  one of them and alone receives the member list.
* A SyncGroup is answered with an assignment only for the current generation.
* An offset commit succeeds only from a member of the current generation, outside the
  CompletingRebalance state, or with generation -1 to a group that has no members
  (manual assignment, "simple" consumers).
* Committed offsets change only after their records are durably appended.
* Members learn their assignment only once it is durably appended in the group's metadata
  record, and a group that becomes Empty is recorded as such: a coordinator that replays
  ``__consumer_offsets`` (after a restart, or on another broker when leadership of its
  partition moves) carries on with the same members, generation and assignments, so a
  moving coordinator costs the consumers no rebalance (Kafka's behaviour).

Kafka's defaults apply except ``group.initial.rebalance.delay.ms``, which is 0 here (Kafka's
is 3000): an embedded consumer should not wait three seconds for its first assignment.
A coordinator serves the groups of the ``__consumer_offsets`` partitions it owns: every
partition by default (one broker, or an in-process cluster), or, in a cluster of broker
processes, those its broker leads, loaded and unloaded as leadership moves (see
:class:`GroupCoordinator`).

Not implemented: static membership (group.instance.id), KIP-394's MEMBER_ID_REQUIRED
round trip, group.max.size.
"""
from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from pylog.records.wire import WireReader
from pylog.broker.offsets_topic import (OFFSETS_TOPIC_NUM_PARTITIONS, GroupMetadataValue,
                                        MemberMetadata, OffsetValue, group_metadata_record,
                                        group_metadata_tombstone, offset_commit_record,
                                        offset_tombstone, partition_for_group)
from pylog.errors import (CoordinatorLoadInProgress, CoordinatorNotAvailable, GroupIdNotFound,
                          GroupSubscribedToTopic, IllegalGeneration, InconsistentGroupProtocol,
                          InvalidArgument, InvalidConfig, InvalidGroupId, InvalidSessionTimeout,
                          NonEmptyGroup, NotCoordinator, OffsetMetadataTooLarge, PylogError,
                          RebalanceInProgress, RequestTimedOut, UnknownMemberId)
from pylog.util import check_int

log = logging.getLogger(__name__)

__all__ = [
    "GroupState",
    "GroupConfig",
    "GroupCoordinator",
    "Respond",
    "AppendOffsets",
    "StoreGroup",
    "Action",
    "JoinGroupResult",
    "MemberDescription",
    "GroupDescription",
    "GroupListing",
    "OffsetMetadataTooLarge",
    "NonEmptyGroup",
    "RequestTimedOut",
]

TopicPartition = Tuple[str, int]
_DAY_MS = 24 * 3600 * 1000


# --- errors this module raises that pylog.errors does not (yet) define ------------------


# --- public value types -------------------------------------------------------------------


class GroupState(str, enum.Enum):
    """A group's state, with Kafka's names."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True)
class GroupConfig:
    """Broker-side group settings (Kafka's names in snake_case; Kafka's defaults except
    ``group_initial_rebalance_delay_ms``, 0 here and 3000 in Kafka)."""

    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 0
    offsets_retention_ms: int = 7 * _DAY_MS
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096

    def __post_init__(self) -> None:
        for f in ("group_min_session_timeout_ms", "group_max_session_timeout_ms",
                  "group_initial_rebalance_delay_ms", "offsets_retention_ms",
                  "offsets_retention_check_interval_ms", "offset_metadata_max_bytes"):
            v = getattr(self, f)
            kafka = f.replace("_", ".")
            lo = 1 if f in ("offsets_retention_ms", "offsets_retention_check_interval_ms") else 0
            check_int(kafka, v, min=lo, error=InvalidConfig)
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise InvalidConfig(
                "group.min.session.timeout.ms must not exceed group.max.session.timeout.ms "
                f"({self.group_min_session_timeout_ms} > {self.group_max_session_timeout_ms})")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> "GroupConfig":
        """Build from Kafka-style dotted names (``"group.min.session.timeout.ms"``) or
        snake_case names; an unknown name raises :class:`InvalidConfig`."""
        known = set(cls.__dataclass_fields__)
        kwargs = {}
        for name, value in settings.items():
            key = str(name).replace(".", "_")
            if key not in known:
                raise InvalidConfig(f"unknown group configuration {name!r}")
            kwargs[key] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class JoinGroupResult:
    """The answer to a JoinGroup: the generation the member is now part of.  ``members``
    (member id, protocol metadata) is filled for the leader only."""

    generation_id: int
    protocol_name: Optional[str]
    leader_id: str
    member_id: str
    members: Tuple[Tuple[str, bytes], ...] = ()

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.member_id


@dataclass(frozen=True)
class MemberDescription:
    """One member as DescribeGroups shows it."""

    member_id: str
    client_id: str
    metadata: bytes  #: its metadata for the group's selected protocol (b"" when none yet)
    assignment: bytes  #: its assignment of the current generation (b"" until synced)


@dataclass(frozen=True)
class GroupDescription:
    """A group as DescribeGroups shows it; an unknown group is reported as Dead."""

    group_id: str
    state: GroupState
    protocol_type: str
    protocol_name: str
    generation_id: int
    leader_id: str
    members: Tuple[MemberDescription, ...]


@dataclass(frozen=True)
class GroupListing:
    """One entry of ListGroups."""

    group_id: str
    protocol_type: str
    state: GroupState


@dataclass(frozen=True)
class Respond:
    """Answer the request that carried ``token``: ``error`` is the exception to raise
    (or send as its code), otherwise ``result`` is the answer (JoinGroupResult for joins,
    the assignment bytes for syncs, None for the others)."""

    token: Any
    result: Any = None
    error: Optional[BaseException] = None


@dataclass(frozen=True)
class AppendOffsets:
    """Append ``records`` (key, value-or-None) to ``__consumer_offsets-<partition>`` as one
    batch, then call :meth:`GroupCoordinator.append_done` with ``append_id``."""

    append_id: int
    partition: int
    records: Tuple[Tuple[bytes, Optional[bytes]], ...]


@dataclass(frozen=True)
class StoreGroup(AppendOffsets):
    """An :class:`AppendOffsets` whose one record is a group's metadata (its members and
    assignments, or that it is empty).  Drivers perform it like any other append; it is
    a class of its own so that tests can tell the two apart."""


Action = Union[Respond, AppendOffsets]


# --- internal state ----------------------------------------------------------------------


class _Member:
    __slots__ = ("member_id", "client_id", "protocols", "session_timeout_ms",
                 "rebalance_timeout_ms", "join_token", "sync_token", "assignment",
                 "heartbeat_deadline_ms", "awaiting_join", "awaiting_sync")

    def __init__(self, member_id: str, client_id: str, protocols: List[Tuple[str, bytes]],
                 session_timeout_ms: int, rebalance_timeout_ms: int) -> None:
        self.member_id = member_id
        self.client_id = client_id
        self.protocols = protocols  #: (name, metadata) in the member's preference order
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.join_token: Any = None
        self.sync_token: Any = None
        self.awaiting_join = False  #: a JoinGroup of this member waits for the rebalance
        self.awaiting_sync = False  #: a SyncGroup of this member waits for the leader's
        self.assignment = b""
        self.heartbeat_deadline_ms = 0

    def metadata_for(self, protocol: Optional[str]) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def protocol_names(self) -> List[str]:
        return [name for name, _ in self.protocols]


class _Group:
    __slots__ = ("group_id", "state", "generation_id", "protocol_type", "protocol_name",
                 "leader_id", "members", "offsets", "pending_commits", "pending_expiry",
                 "state_timestamp_ms", "join_deadline_ms", "initial_delay", "new_member_added",
                 "sync_deadline_ms", "pending_sync", "storing")

    def __init__(self, group_id: str, now: int) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.generation_id = 0
        self.protocol_type: Optional[str] = None
        self.protocol_name: Optional[str] = None
        self.leader_id: Optional[str] = None
        self.members: Dict[str, _Member] = {}  # insertion order = join order
        self.offsets: Dict[TopicPartition, OffsetValue] = {}
        self.pending_commits: Dict[TopicPartition, int] = {}
        self.pending_expiry: Set[TopicPartition] = set()
        self.state_timestamp_ms = now
        self.join_deadline_ms: Optional[int] = None
        #: (delay_ms, remaining_ms) while the initial rebalance delay is running
        self.initial_delay: Optional[Tuple[int, int]] = None
        self.new_member_added = False
        self.sync_deadline_ms: Optional[int] = None
        self.pending_sync: Set[str] = set()
        #: the append id of the StoreGroup whose success makes this generation Stable
        self.storing: Optional[int] = None

    def transition(self, state: GroupState, now: int) -> None:
        self.state = state
        self.state_timestamp_ms = now

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def all_members_joined(self) -> bool:
        return all(m.awaiting_join for m in self.members.values())

    def candidate_protocols(self) -> List[str]:
        """Protocols every member supports, in no particular order."""
        common: Optional[Set[str]] = None
        for m in self.members.values():
            names = set(m.protocol_names())
            common = names if common is None else common & names
        return sorted(common or ())

    def supports(self, protocol_type: str, protocols: List[Tuple[str, bytes]],
                 exclude: Optional[str] = None) -> bool:
        others = [m for mid, m in self.members.items() if mid != exclude]
        if not others:
            return True
        if self.protocol_type != protocol_type:
            return False
        names = {n for n, _ in protocols}
        for m in others:
            names &= set(m.protocol_names())
        return bool(names)


@dataclass
class _PendingAppend:
    kind: str  # "commit" | "expire" | "delete" | "delete_offsets" | "store"
    group_id: str
    token: Any = None
    offsets: Dict[TopicPartition, OffsetValue] = field(default_factory=dict)
    partition: int = 0  #: of __consumer_offsets
    incarnation: int = 0  #: the partition's incarnation when the append was asked for


def _default_member_ids() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda client_id: f"{client_id or 'member'}-{next(counter)}"


def _subscribed_topics(group: _Group) -> Set[str]:
    """Topics the members of a consumer group subscribe to, read from the first fields
    of their ConsumerProtocol subscription (version int16, topics [string]); metadata
    that does not parse counts as no subscription."""
    if group.protocol_type != "consumer":
        return set()
    topics: Set[str] = set()
    for m in group.members.values():
        meta = m.metadata_for(group.protocol_name) or (m.protocols[0][1] if m.protocols else b"")
        try:
            r = WireReader(meta, "consumer subscription")
            r.i16("version")
            for _ in range(r.count("topics", 2)):
                topics.add(r.string("topic") or "")
        except PylogError:
            continue
    return topics


# --- argument checks ----------------------------------------------------------------------


def _check_group_id(group_id: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(group_id, str):
        raise InvalidGroupId(f"group id must be a str, got {type(group_id).__name__}")
    if not group_id and not allow_empty:
        raise InvalidGroupId("group id must not be empty")
    return group_id


def _check_member_id(member_id: Any) -> str:
    if not isinstance(member_id, str):
        raise InvalidArgument(f"member id must be a str, got {type(member_id).__name__}")
    return member_id


def _check_protocols(protocol_type: Any, protocols: Any) -> List[Tuple[str, bytes]]:
    if not isinstance(protocol_type, str):
        raise InvalidArgument(f"protocol type must be a str, got {type(protocol_type).__name__}")
    if isinstance(protocols, (str, bytes)) or not isinstance(protocols, Iterable):
        raise InvalidArgument("protocols must be a list of (name, metadata bytes) pairs")
    out: List[Tuple[str, bytes]] = []
    seen: Set[str] = set()
    for item in protocols:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (bytes, bytearray, memoryview))):
            raise InvalidArgument(f"a protocol must be a (str, bytes) pair, got {item!r}")
        if item[0] not in seen:  # a repeated name adds nothing; the first one counts
            seen.add(item[0])
            out.append((item[0], bytes(item[1])))
    if not protocol_type or not out:
        raise InconsistentGroupProtocol(
            "a member must name a protocol type and at least one protocol "
            f"(protocol type {protocol_type!r}, {len(out)} protocols)")
    return out


# --- the coordinator ----------------------------------------------------------------------


class GroupCoordinator:
    """Every group of one coordinator: membership state machines and committed offsets.

    ``num_partitions`` is the partition count of ``__consumer_offsets``
    (offsets.topic.num.partitions); ``member_id_factory(client_id)`` makes a new member's
    id (the default counts, which is deterministic; a driver that outlives restarts should
    pass one that cannot repeat, e.g. client id + UUID, as Kafka does).

    **Which groups it coordinates.**  A group belongs to partition
    :func:`~pylog.broker.offsets_topic.partition_for_group` of ``__consumer_offsets``.
    With ``owned_partitions`` None (the default) this coordinator owns every partition
    from the start: one coordinator for the whole broker or in-process cluster.  In a
    cluster of processes each broker coordinates the groups of the partitions it leads
    (Kafka's rule): the driver passes ``owned_partitions=()`` and reports leadership:

    * :meth:`begin_load` (this broker now leads the partition at a leader epoch): the
      partition is *loading*; its groups' requests fail with CoordinatorLoadInProgress
      while the driver replays the partition's records with :meth:`load_offset`;
    * :meth:`finish_load`: the partition is *owned*; its groups are served;
    * :meth:`unload` (it stopped leading): its groups are forgotten, their waiting
      requests fail with NotCoordinator, and so do later requests for them.

    A request for a group of a partition neither loading nor owned fails with
    NotCoordinator, which sends a Kafka client back to FindCoordinator.
    """

    def __init__(self, config: Optional[GroupConfig] = None, *,
                 num_partitions: int = OFFSETS_TOPIC_NUM_PARTITIONS,
                 member_id_factory: Optional[Callable[[str], str]] = None,
                 now: int = 0, owned_partitions: Optional[Iterable[int]] = None) -> None:
        if config is None:
            config = GroupConfig()
        if not isinstance(config, GroupConfig):
            raise InvalidArgument(f"config must be a GroupConfig, got {type(config).__name__}")
        check_int("offsets.topic.num.partitions", num_partitions, min=1, error=InvalidConfig)
        self.config = config
        self.num_partitions = num_partitions
        if owned_partitions is None:
            owned: Set[int] = set(range(num_partitions))
        else:
            owned = {self._check_partition(p) for p in owned_partitions}
        #: partitions of __consumer_offsets whose groups this coordinator serves
        self._owned = owned
        #: partitions being replayed (their groups answer CoordinatorLoadInProgress)
        self._loading: Set[int] = set()
        #: the newest leader epoch heard of per partition (older reports are stale)
        self._epochs: Dict[int, int] = {}
        #: bumped when a partition is unloaded: appends asked for before are stale
        self._incarnations: Dict[int, int] = {}
        self._new_member_id = member_id_factory or _default_member_ids()
        self._groups: Dict[str, _Group] = {}
        self._appends: Dict[int, _PendingAppend] = {}
        #: per pending OffsetDelete append: its per-partition answer
        self._offset_delete_results: Dict[int, Dict[TopicPartition, Optional[BaseException]]] = {}
        self._append_ids = itertools.count(1)
        self._next_expiry_check_ms = now + config.offsets_retention_check_interval_ms

    # ---------------------------------------------------------------- ownership

    def _check_partition(self, partition: Any) -> int:
        return check_int(f"partition of __consumer_offsets (it has {self.num_partitions})", partition,
                         min=0, max=self.num_partitions - 1)

    def partition_for(self, group_id: str) -> int:
        """The partition of ``__consumer_offsets`` that holds ``group_id``."""
        return partition_for_group(group_id, self.num_partitions)

    def _check_coordinator(self, group_id: str) -> None:
        """Raise unless this coordinator serves ``group_id`` now: NotCoordinator (its
        partition is not ours), CoordinatorLoadInProgress (we are replaying it)."""
        p = partition_for_group(group_id, self.num_partitions)
        if p in self._owned:
            return
        if p in self._loading:
            raise CoordinatorLoadInProgress(
                f"group {group_id!r}: partition {p} of __consumer_offsets is still being loaded")
        raise NotCoordinator(f"this broker is not the coordinator of group {group_id!r} "
                             f"(it does not lead partition {p} of __consumer_offsets)")

    @property
    def owned_partitions(self) -> frozenset:
        """Partitions of ``__consumer_offsets`` whose groups are served now."""
        return frozenset(self._owned)

    @property
    def loading_partitions(self) -> frozenset:
        """Partitions being loaded (between :meth:`begin_load` and :meth:`finish_load`)."""
        return frozenset(self._loading)

    def begin_load(self, partition: int, leader_epoch: int) -> bool:
        """This broker leads ``partition`` at ``leader_epoch``: start loading it.

        Returns True when the driver must now replay the partition (then
        :meth:`finish_load`); False when there is nothing to do: the partition is
        already owned or loading (a new epoch of the same leadership: its state is this
        coordinator's own, as Kafka keeps it), or ``leader_epoch`` is older than one
        already reported."""
        partition = self._check_partition(partition)
        leader_epoch = check_int("leader epoch", leader_epoch, min=0)
        if leader_epoch < self._epochs.get(partition, -1):
            return False
        self._epochs[partition] = leader_epoch
        if partition in self._owned or partition in self._loading:
            return False
        self._loading.add(partition)
        log.info("loading the groups of partition %d of __consumer_offsets (leader epoch %d)",
                 partition, leader_epoch)
        return True

    def finish_load(self, partition: int) -> bool:
        """The replay of ``partition`` is complete: serve its groups.  Returns False if
        it was not loading (it was unloaded meanwhile)."""
        partition = self._check_partition(partition)
        if partition not in self._loading:
            return False
        self._loading.discard(partition)
        self._owned.add(partition)
        n = sum(1 for g in self._groups if partition_for_group(g, self.num_partitions) == partition)
        log.info("partition %d of __consumer_offsets loaded: coordinating its %d groups", partition, n)
        return True

    def unload(self, partition: int, now: int, leader_epoch: Optional[int] = None) -> List[Action]:
        """This broker no longer leads ``partition`` (``leader_epoch``: the epoch of the
        new leadership; None: unconditionally, e.g. the replica went offline).  Its groups
        are forgotten: waiting JoinGroup and SyncGroup requests fail with NotCoordinator
        (their members find the new coordinator and rejoin there), later requests too.
        An append asked for before and finished after is answered, but changes nothing
        here.  A report older than the newest epoch heard of is ignored."""
        partition = self._check_partition(partition)
        if leader_epoch is not None:
            leader_epoch = check_int("leader epoch", leader_epoch)
            if leader_epoch < self._epochs.get(partition, -1):
                return []
            self._epochs[partition] = leader_epoch
        was = partition in self._owned or partition in self._loading
        self._owned.discard(partition)
        self._loading.discard(partition)
        if not was:
            return []
        self._incarnations[partition] = self._incarnations.get(partition, 0) + 1
        actions: List[Action] = []
        gone = [g for g in self._groups.values()
                if partition_for_group(g.group_id, self.num_partitions) == partition]
        for g in gone:
            why = (f"this broker is no longer the coordinator of group {g.group_id!r} "
                   f"(partition {partition} of __consumer_offsets moved)")
            for m in g.members.values():
                if m.awaiting_join:
                    actions.append(Respond(m.join_token, error=NotCoordinator(why)))
                    m.awaiting_join = False
                if m.awaiting_sync:
                    actions.append(Respond(m.sync_token, error=NotCoordinator(why)))
                    m.awaiting_sync = False
            del self._groups[g.group_id]
        log.info("partition %d of __consumer_offsets unloaded: %d groups are coordinated elsewhere now",
                 partition, len(gone))
        return actions

    def _pending(self, kind: str, group_id: str, token: Any,
                 offsets: Dict[TopicPartition, OffsetValue]) -> _PendingAppend:
        p = partition_for_group(group_id, self.num_partitions)
        return _PendingAppend(kind, group_id, token, offsets, p, self._incarnations.get(p, 0))

    # ---------------------------------------------------------------- replay at startup

    def load_offset(self, group_id: str, tp: TopicPartition, value: Optional[OffsetValue],
                    now: int) -> None:
        """Replay one ``__consumer_offsets`` record (last write wins; None deletes)."""
        group = self._groups.get(group_id)
        if value is None:
            if group is not None:
                group.offsets.pop(tp, None)
                if not group.offsets and not group.members:
                    del self._groups[group_id]
            return
        if group is None:
            group = self._groups[group_id] = _Group(group_id, now)
        group.offsets[tp] = value

    def load_group(self, group_id: str, value: Optional[GroupMetadataValue], now: int) -> None:
        """Replay one group metadata record (None: the group was deleted).  The group
        takes the record's generation, protocol, leader, members and assignments: Stable
        with members (each must heartbeat within its session timeout from ``now``),
        Empty without."""
        if value is None:
            group = self._groups.get(group_id)
            if group is not None:
                group.members.clear()
                group.leader_id = group.protocol_name = group.protocol_type = None
                group.transition(GroupState.EMPTY, now)
                if not group.offsets:
                    del self._groups[group_id]
            return
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group(group_id, now)
        group.generation_id = value.generation
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol
        group.members = {}
        for m in value.members:
            protos = [(value.protocol, m.subscription)] if value.protocol is not None else []
            rebalance = m.rebalance_timeout_ms if m.rebalance_timeout_ms > 0 else m.session_timeout_ms
            member = _Member(m.member_id, m.client_id, protos, m.session_timeout_ms, rebalance)
            member.assignment = m.assignment
            member.heartbeat_deadline_ms = now + m.session_timeout_ms
            group.members[m.member_id] = member
        group.leader_id = value.leader if value.leader in group.members else next(iter(group.members), None)
        group.join_deadline_ms = group.sync_deadline_ms = None
        group.initial_delay = None
        group.pending_sync.clear()
        group.storing = None
        if group.members:
            group.transition(GroupState.STABLE, now)
        else:
            group.protocol_name = group.leader_id = None
            group.transition(GroupState.EMPTY, now)
            if value.current_state_timestamp >= 0:  # offsets expire counting from then
                group.state_timestamp_ms = value.current_state_timestamp

    def _store(self, group: _Group, now: int, token: Any = None) -> StoreGroup:
        """The append of ``group``'s metadata record as it is now."""
        members = tuple(MemberMetadata(m.member_id, m.client_id, "", m.rebalance_timeout_ms,
                                       m.session_timeout_ms, m.metadata_for(group.protocol_name),
                                       m.assignment)
                        for m in group.members.values())
        value = GroupMetadataValue(group.protocol_type or "", group.generation_id,
                                   group.protocol_name, group.leader_id, now, members)
        append_id = next(self._append_ids)
        self._appends[append_id] = self._pending("store", group.group_id, token, {})
        return StoreGroup(append_id, partition_for_group(group.group_id, self.num_partitions),
                          (group_metadata_record(group.group_id, value),))

    # ---------------------------------------------------------------- JoinGroup

    def join_group(self, token: Any, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[Tuple[str, bytes]], session_timeout_ms: int,
                   rebalance_timeout_ms: int, now: int, *, client_id: str = "") -> List[Action]:
        """A member joins (``member_id`` "" for a new member) or rejoins the group.

        The answer (a :class:`JoinGroupResult`) comes when the rebalance completes: when
        every known member has rejoined, or the group's rebalance timeout passes (members
        that did not rejoin are removed).  A known member rejoining a Stable group with
        unchanged protocols (and not the leader) is answered at once with the current
        generation.  Errors: InvalidGroupId, InvalidSessionTimeout,
        InconsistentGroupProtocol, UnknownMemberId, CoordinatorNotAvailable.
        """
        try:
            group_id = _check_group_id(group_id)
            self._check_coordinator(group_id)
            member_id = _check_member_id(member_id)
            protos = _check_protocols(protocol_type, protocols)
            session_timeout_ms = check_int("session timeout", session_timeout_ms)
            rebalance_timeout_ms = check_int("rebalance timeout", rebalance_timeout_ms)
            if not isinstance(client_id, str):
                raise InvalidArgument(f"client id must be a str, got {client_id!r}")
            cfg = self.config
            if not cfg.group_min_session_timeout_ms <= session_timeout_ms \
                    <= cfg.group_max_session_timeout_ms:
                raise InvalidSessionTimeout(
                    f"session.timeout.ms {session_timeout_ms} is outside the broker's range "
                    f"[{cfg.group_min_session_timeout_ms}, {cfg.group_max_session_timeout_ms}] "
                    "(group.min/max.session.timeout.ms)")
            if rebalance_timeout_ms == -1:  # JoinGroup v0: the session timeout serves
                rebalance_timeout_ms = session_timeout_ms
            if rebalance_timeout_ms <= 0:
                raise InvalidArgument(
                    f"rebalance timeout must be positive (or -1), got {rebalance_timeout_ms}")
        except PylogError as e:
            return [Respond(token, error=e)]

        group = self._groups.get(group_id)
        if member_id == "":
            if group is None:
                group = self._groups[group_id] = _Group(group_id, now)
            return self._join_new(token, group, client_id, protocol_type, protos,
                                  session_timeout_ms, rebalance_timeout_ms, now)
        if group is not None and group.state is GroupState.DEAD:
            return [Respond(token, error=CoordinatorNotAvailable(
                f"group {group_id!r} is being deleted"))]
        if group is None or member_id not in group.members:
            return [Respond(token, error=UnknownMemberId(
                f"member {member_id!r} is not in group {group_id!r}; rejoin with an empty "
                "member id"))]
        return self._join_known(token, group, group.members[member_id], protocol_type, protos,
                                session_timeout_ms, rebalance_timeout_ms, now)

    def _join_new(self, token: Any, group: _Group, client_id: str, protocol_type: str,
                  protos: List[Tuple[str, bytes]], session_timeout_ms: int,
                  rebalance_timeout_ms: int, now: int) -> List[Action]:
        if group.state is GroupState.DEAD:
            return [Respond(token, error=CoordinatorNotAvailable(
                f"group {group.group_id!r} is being deleted"))]
        if not group.supports(protocol_type, protos):
            return [Respond(token, error=InconsistentGroupProtocol(
                f"group {group.group_id!r} uses protocol type {group.protocol_type!r} with "
                f"protocols {group.candidate_protocols()}; the member offers "
                f"{protocol_type!r} {[n for n, _ in protos]}"))]
        mid = self._new_member_id(client_id)
        if not isinstance(mid, str) or not mid or mid in group.members:
            raise AssertionError(f"member_id_factory returned a bad or repeated id {mid!r}")
        member = _Member(mid, client_id, protos, session_timeout_ms, rebalance_timeout_ms)
        group.members[mid] = member
        if group.leader_id is None:
            group.leader_id = mid
        group.protocol_type = protocol_type
        group.new_member_added = True
        member.join_token = token
        member.awaiting_join = True
        member.heartbeat_deadline_ms = now + session_timeout_ms
        actions: List[Action] = []
        if group.state is not GroupState.PREPARING_REBALANCE:
            actions += self._prepare_rebalance(group, now, f"member {mid!r} joined")
        actions += self._maybe_complete_join(group, now)
        return actions

    def _join_known(self, token: Any, group: _Group, member: _Member, protocol_type: str,
                    protos: List[Tuple[str, bytes]], session_timeout_ms: int,
                    rebalance_timeout_ms: int, now: int) -> List[Action]:
        if not group.supports(protocol_type, protos, exclude=member.member_id):
            return [Respond(token, error=InconsistentGroupProtocol(
                f"the member's protocols {[n for n, _ in protos]} (type {protocol_type!r}) "
                f"match none of group {group.group_id!r}'s other members"))]
        actions: List[Action] = []
        member.heartbeat_deadline_ms = now + session_timeout_ms
        unchanged = protos == member.protocols
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE) and unchanged \
                and not (group.state is GroupState.STABLE and member.member_id == group.leader_id):
            # A follower that lost its join response: give it the current generation.
            return [Respond(token, result=self._join_result(group, member))]
        if member.awaiting_join:  # a repeated JoinGroup replaces the waiting one
            actions.append(Respond(member.join_token, error=RebalanceInProgress(
                "superseded by a newer JoinGroup of the same member")))
        member.protocols = protos
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.join_token = token
        member.awaiting_join = True
        if group.state is not GroupState.PREPARING_REBALANCE:
            why = ("the leader rejoined" if member.member_id == group.leader_id and unchanged
                   else "it changed its protocols" if not unchanged else "it rejoined")
            actions += self._prepare_rebalance(group, now, f"member {member.member_id!r}: {why}")
        actions += self._maybe_complete_join(group, now)
        return actions

    def _join_result(self, group: _Group, member: _Member) -> JoinGroupResult:
        members: Tuple[Tuple[str, bytes], ...] = ()
        if member.member_id == group.leader_id:
            members = tuple((m.member_id, m.metadata_for(group.protocol_name))
                            for m in group.members.values())
        assert group.leader_id is not None
        return JoinGroupResult(group.generation_id, group.protocol_name, group.leader_id,
                               member.member_id, members)

    def _prepare_rebalance(self, group: _Group, now: int, reason: str) -> List[Action]:
        actions: List[Action] = []
        if group.state is GroupState.COMPLETING_REBALANCE:
            actions += self._fail_pending_syncs(group, now)
        group.sync_deadline_ms = None
        group.pending_sync.clear()
        group.storing = None  # a store in flight no longer makes anything Stable
        delay = self.config.group_initial_rebalance_delay_ms
        timeout = group.rebalance_timeout_ms()
        if group.state is GroupState.EMPTY and delay > 0:
            group.initial_delay = (delay, max(timeout - delay, 0))
            group.new_member_added = False
            group.join_deadline_ms = now + delay
        else:
            group.initial_delay = None
            group.join_deadline_ms = now + timeout
        log.info("group %r: preparing to rebalance (generation %d, %d members, was %s): %s", group.group_id,
                 group.generation_id, len(group.members), group.state.name, reason)
        group.transition(GroupState.PREPARING_REBALANCE, now)
        return actions

    def _fail_pending_syncs(self, group: _Group, now: int) -> List[Action]:
        actions: List[Action] = []
        for m in group.members.values():
            m.assignment = b""
            if m.awaiting_sync:
                # An answered member's session restarts now (it was kept alive while waiting).
                m.heartbeat_deadline_ms = now + m.session_timeout_ms
                actions.append(Respond(m.sync_token, error=RebalanceInProgress(
                    f"group {group.group_id!r} started another rebalance; rejoin")))
                m.awaiting_sync = False
                m.sync_token = None
        return actions

    def _maybe_complete_join(self, group: _Group, now: int) -> List[Action]:
        if group.state is not GroupState.PREPARING_REBALANCE or group.initial_delay is not None:
            return []
        if not group.all_members_joined():
            return []
        return self._complete_join(group, now)

    def _complete_join(self, group: _Group, now: int) -> List[Action]:
        """End PreparingRebalance: drop members that did not rejoin, start a generation."""
        assert group.state is GroupState.PREPARING_REBALANCE
        actions: List[Action] = []
        for m in [m for m in group.members.values() if not m.awaiting_join]:
            log.info("member %r of group %r did not rejoin within the rebalance timeout; removed",
                     m.member_id, group.group_id)
            actions += self._remove_member_quietly(group, m)
        group.join_deadline_ms = None
        group.initial_delay = None
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.protocol_type = None
            group.leader_id = None
            group.transition(GroupState.EMPTY, now)
            actions.append(self._store(group, now))  # recorded: no member to carry on
            return actions
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.protocol_name = self._select_protocol(group)
        group.transition(GroupState.COMPLETING_REBALANCE, now)
        group.sync_deadline_ms = now + group.rebalance_timeout_ms()
        group.pending_sync = set(group.members)
        for m in group.members.values():
            actions.append(Respond(m.join_token, result=self._join_result(group, m)))
            m.join_token = None
            m.awaiting_join = False
            m.assignment = b""
            m.heartbeat_deadline_ms = now + m.session_timeout_ms
        return actions

    def _select_protocol(self, group: _Group) -> str:
        """The protocol every member supports with the most first-choice votes among the
        candidates; ties go to the earlier protocol in the leader's preference order."""
        candidates = set(group.candidate_protocols())
        assert candidates, "members were admitted only with a common protocol"
        votes: Dict[str, int] = {}
        for m in group.members.values():
            vote = next(n for n in m.protocol_names() if n in candidates)
            votes[vote] = votes.get(vote, 0) + 1
        leader = group.members[group.leader_id]  # type: ignore[index]
        order = {n: i for i, n in enumerate(leader.protocol_names())}
        return min(votes, key=lambda n: (-votes[n], order.get(n, len(order)), n))

    # ---------------------------------------------------------------- SyncGroup

    def sync_group(self, token: Any, group_id: str, generation_id: int, member_id: str,
                   assignments: Optional[Mapping[str, bytes]], now: int) -> List[Action]:
        """A member asks for its assignment of ``generation_id``; the leader brings every
        member's assignment in ``assignments`` (member id -> bytes; other members send
        nothing).  Followers are answered when the leader's sync arrives.  Errors:
        UnknownMemberId, IllegalGeneration, RebalanceInProgress, CoordinatorNotAvailable.
        """
        try:
            group_id = _check_group_id(group_id)
            self._check_coordinator(group_id)
            member_id = _check_member_id(member_id)
            generation_id = check_int("generation id", generation_id)
            assigned: Dict[str, bytes] = {}
            if assignments is not None:
                if not isinstance(assignments, Mapping):
                    raise InvalidArgument("assignments must map member id to bytes")
                for k, v in assignments.items():
                    if not isinstance(k, str) or not isinstance(v, (bytes, bytearray, memoryview)):
                        raise InvalidArgument(
                            f"assignments must map member id (str) to bytes, got {k!r}: {v!r}")
                    assigned[k] = bytes(v)
            group, member = self._member_of(group_id, member_id, generation_id)
        except PylogError as e:
            return [Respond(token, error=e)]
        if group.state is GroupState.PREPARING_REBALANCE:
            return [Respond(token, error=RebalanceInProgress(
                f"group {group_id!r} is rebalancing; rejoin"))]
        member.heartbeat_deadline_ms = now + member.session_timeout_ms
        if group.state is GroupState.STABLE:
            return [Respond(token, result=member.assignment)]
        assert group.state is GroupState.COMPLETING_REBALANCE
        actions: List[Action] = []
        if member.awaiting_sync:
            actions.append(Respond(member.sync_token, error=RebalanceInProgress(
                "superseded by a newer SyncGroup of the same member")))
        member.sync_token = token
        member.awaiting_sync = True
        group.pending_sync.discard(member_id)
        if member_id != group.leader_id or group.storing is not None:
            return actions  # answered when the leader's assignments are stored
        for m in group.members.values():
            m.assignment = assigned.get(m.member_id, b"")
        group.sync_deadline_ms = None
        group.pending_sync.clear()
        store = self._store(group, now)
        group.storing = store.append_id
        actions.append(store)
        return actions

    def _stored(self, group: _Group, append_id: int, now: int,
                error: Optional[BaseException]) -> List[Action]:
        """The group metadata append ``append_id`` finished."""
        if group.storing != append_id:  # the group moved on meanwhile (or went Empty)
            if error is not None:
                log.warning("storing the metadata of group %r failed: %s", group.group_id, error)
            return []
        group.storing = None
        assert group.state is GroupState.COMPLETING_REBALANCE
        actions: List[Action] = []
        if error is not None:
            # Kafka: the members hear of it and rejoin; the assignments were never valid
            why: BaseException = error if isinstance(error, NotCoordinator) else \
                CoordinatorNotAvailable(f"storing the assignments of group {group.group_id!r} "
                                        f"(generation {group.generation_id}) failed: {error}")
            log.warning("%s", why)
            for m in group.members.values():
                m.assignment = b""
                if m.awaiting_sync:
                    actions.append(Respond(m.sync_token, error=why))
                    m.awaiting_sync = False
                    m.sync_token = None
            actions += self._prepare_rebalance(group, now, "storing the assignments failed")
            return actions
        group.transition(GroupState.STABLE, now)
        for m in group.members.values():
            if m.awaiting_sync:
                m.heartbeat_deadline_ms = now + m.session_timeout_ms
                actions.append(Respond(m.sync_token, result=m.assignment))
                m.awaiting_sync = False
                m.sync_token = None
        return actions

    def _member_of(self, group_id: str, member_id: str,
                   generation_id: int) -> Tuple[_Group, _Member]:
        group = self._groups.get(group_id)
        if group is not None and group.state is GroupState.DEAD:
            raise CoordinatorNotAvailable(f"group {group_id!r} is being deleted")
        if group is None or member_id not in group.members:
            raise UnknownMemberId(f"member {member_id!r} is not in group {group_id!r}")
        if generation_id != group.generation_id:
            raise IllegalGeneration(
                f"generation {generation_id} of group {group_id!r} is not the current one "
                f"({group.generation_id})")
        return group, group.members[member_id]

    # ---------------------------------------------------------------- Heartbeat / LeaveGroup

    def heartbeat(self, token: Any, group_id: str, generation_id: int, member_id: str,
                  now: int) -> List[Action]:
        """The member is alive.  RebalanceInProgress tells it to rejoin; UnknownMemberId or
        IllegalGeneration that it is no longer part of the group's current generation."""
        try:
            group_id = _check_group_id(group_id)
            self._check_coordinator(group_id)
            member_id = _check_member_id(member_id)
            generation_id = check_int("generation id", generation_id)
            group, member = self._member_of(group_id, member_id, generation_id)
        except PylogError as e:
            return [Respond(token, error=e)]
        member.heartbeat_deadline_ms = now + member.session_timeout_ms
        if group.state is GroupState.PREPARING_REBALANCE:
            return [Respond(token, error=RebalanceInProgress(
                f"group {group_id!r} is rebalancing; rejoin"))]
        return [Respond(token)]

    def leave_group(self, token: Any, group_id: str, member_id: str, now: int) -> List[Action]:
        """The member leaves; the group rebalances without it."""
        try:
            group_id = _check_group_id(group_id)
            self._check_coordinator(group_id)
            member_id = _check_member_id(member_id)
            group = self._groups.get(group_id)
            if group is not None and group.state is GroupState.DEAD:
                raise CoordinatorNotAvailable(f"group {group_id!r} is being deleted")
            if group is None or member_id not in group.members:
                raise UnknownMemberId(f"member {member_id!r} is not in group {group_id!r}")
        except PylogError as e:
            return [Respond(token, error=e)]
        actions = self._remove_member(group, group.members[member_id], now,
                                      f"member {member_id!r} left group {group_id!r}")
        actions.append(Respond(token))
        return actions

    def _remove_member_quietly(self, group: _Group, member: _Member) -> List[Action]:
        """Drop ``member``, failing its waiting requests; no state transition."""
        actions: List[Action] = []
        reason = (f"member {member.member_id!r} was removed from group {group.group_id!r} "
                  "(it did not rejoin or sync within the rebalance timeout)")
        if member.awaiting_join:
            actions.append(Respond(member.join_token, error=UnknownMemberId(reason)))
        if member.awaiting_sync:
            actions.append(Respond(member.sync_token, error=UnknownMemberId(reason)))
        del group.members[member.member_id]
        group.pending_sync.discard(member.member_id)
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)
        return actions

    def _remove_member(self, group: _Group, member: _Member, now: int,
                       reason: str) -> List[Action]:
        actions: List[Action] = []
        if member.awaiting_join:
            actions.append(Respond(member.join_token, error=UnknownMemberId(reason)))
            member.awaiting_join = False
        if member.awaiting_sync:
            actions.append(Respond(member.sync_token, error=UnknownMemberId(reason)))
            member.awaiting_sync = False
        log.info("%s", reason)
        actions += self._remove_member_quietly(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            actions += self._prepare_rebalance(group, now, reason)
        actions += self._maybe_complete_join(group, now)
        return actions

    # ---------------------------------------------------------------- time

    def tick(self, now: int) -> List[Action]:
        """Let time pass: evict members whose session expired, complete rebalances whose
        delay or timeout ran out, remove members that did not sync in time, and expire old
        offsets of groups without members (offsets.retention.ms)."""
        actions: List[Action] = []
        for group in list(self._groups.values()):
            actions += self._tick_group(group, now)
        if now >= self._next_expiry_check_ms:
            self._next_expiry_check_ms = now + self.config.offsets_retention_check_interval_ms
            actions += self._expire_offsets(now)
        return actions

    def _tick_group(self, group: _Group, now: int) -> List[Action]:
        actions: List[Action] = []
        if group.state is GroupState.PREPARING_REBALANCE and group.join_deadline_ms is not None \
                and now >= group.join_deadline_ms:
            if group.initial_delay is not None:
                delay, remaining = group.initial_delay
                if group.new_member_added and remaining > 0:
                    step = min(delay, remaining)
                    group.initial_delay = (delay, max(remaining - step, 0))
                    group.new_member_added = False
                    group.join_deadline_ms = now + step
                    return actions
                group.initial_delay = None
            actions += self._complete_join(group, now)
        if group.state is GroupState.COMPLETING_REBALANCE and group.sync_deadline_ms is not None \
                and now >= group.sync_deadline_ms:
            late = [group.members[mid] for mid in list(group.pending_sync)
                    if mid in group.members]
            group.pending_sync.clear()
            for m in late:
                log.info("member %r of group %r did not send SyncGroup within the rebalance timeout; "
                         "removed", m.member_id, group.group_id)
                actions += self._remove_member_quietly(group, m)
            actions += self._prepare_rebalance(group, now, f"{len(late)} member(s) sent no SyncGroup in time")
            actions += self._maybe_complete_join(group, now)
        for m in list(group.members.values()):
            if m.member_id not in group.members:
                continue
            if m.awaiting_join or m.awaiting_sync:
                continue  # bounded by the rebalance / sync timeout instead
            if now >= m.heartbeat_deadline_ms:
                actions += self._remove_member(
                    group, m, now, f"member {m.member_id!r} of group {group.group_id!r} "
                    f"missed its session timeout ({m.session_timeout_ms} ms)")
        return actions

    def next_deadline_ms(self) -> Optional[int]:
        """The earliest time at which :meth:`tick` has something to do, or None."""
        times: List[int] = [self._next_expiry_check_ms]
        for g in self._groups.values():
            if g.state is GroupState.PREPARING_REBALANCE and g.join_deadline_ms is not None:
                times.append(g.join_deadline_ms)
            if g.state is GroupState.COMPLETING_REBALANCE and g.sync_deadline_ms is not None:
                times.append(g.sync_deadline_ms)
            for m in g.members.values():
                if not (m.awaiting_join or m.awaiting_sync):
                    times.append(m.heartbeat_deadline_ms)
        return min(times)

    # ---------------------------------------------------------------- offsets

    def commit_offsets(self, token: Any, group_id: str, generation_id: int, member_id: str,
                       offsets: Mapping[TopicPartition, Tuple[Any, ...]],
                       now: int) -> List[Action]:
        """Commit ``offsets``: (topic, partition) -> (offset, metadata) or (offset,
        metadata, leader_epoch).  On success the answer is an :class:`AppendOffsets`; the
        request is answered (and the offsets become visible) in :meth:`append_done`.

        Accepted from a member of the current generation (also while the group prepares a
        rebalance, so a member can commit before it rejoins) and, whatever the member id,
        with a negative generation (-1) for a group without members (Kafka's rule for
        consumers that assign partitions themselves).  Errors: IllegalGeneration,
        UnknownMemberId, RebalanceInProgress (CompletingRebalance), OffsetMetadataTooLarge,
        InvalidArgument, CoordinatorNotAvailable.
        """
        try:
            group_id = _check_group_id(group_id, allow_empty=True)
            self._check_coordinator(group_id)
            member_id = _check_member_id(member_id)
            generation_id = check_int("generation id", generation_id)
            values = self._check_offsets(offsets, now)
            group = self._groups.get(group_id)
            if group is None:
                if generation_id >= 0:
                    raise IllegalGeneration(
                        f"group {group_id!r} has no generation {generation_id}; commit with "
                        "generation -1 when not using group management")
                group = self._groups[group_id] = _Group(group_id, now)
            self._check_commit(group, generation_id, member_id, now)
        except PylogError as e:
            return [Respond(token, error=e)]
        if not values:
            return [Respond(token)]
        for tp in values:
            group.pending_commits[tp] = group.pending_commits.get(tp, 0) + 1
        records = tuple(offset_commit_record(group_id, t, p, v) for (t, p), v in values.items())
        append_id = next(self._append_ids)
        self._appends[append_id] = self._pending("commit", group_id, token, values)
        return [AppendOffsets(append_id, partition_for_group(group_id, self.num_partitions),
                              records)]

    def _check_offsets(self, offsets: Any, now: int) -> Dict[TopicPartition, OffsetValue]:
        if not isinstance(offsets, Mapping):
            raise InvalidArgument("offsets must map (topic, partition) to (offset, metadata)")
        limit = self.config.offset_metadata_max_bytes
        out: Dict[TopicPartition, OffsetValue] = {}
        for tp, v in offsets.items():
            if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str) and tp[0]
                    and isinstance(tp[1], int) and not isinstance(tp[1], bool) and tp[1] >= 0):
                raise InvalidArgument(
                    f"an offsets key must be (topic, partition >= 0), got {tp!r}")
            if not (isinstance(v, tuple) and len(v) in (2, 3)):
                raise InvalidArgument(
                    f"offset of {tp} must be (offset, metadata[, leader_epoch]), got {v!r}")
            offset, metadata = v[0], v[1]
            epoch = v[2] if len(v) == 3 else -1
            check_int(f"offset of {tp}", offset, min=0, max=2**63 - 1)
            check_int(f"leader epoch of {tp}", epoch, min=-1, max=2**31 - 1)
            if metadata is None:
                metadata = ""
            if not isinstance(metadata, str):
                raise InvalidArgument(f"metadata of {tp} must be a str, got {metadata!r}")
            size = len(metadata.encode("utf-8"))
            if size > limit:
                raise OffsetMetadataTooLarge(
                    f"metadata of {tp} is {size} bytes; offset.metadata.max.bytes is {limit}")
            out[tp] = OffsetValue(offset, metadata, now, epoch)
        return out

    def _check_commit(self, group: _Group, generation_id: int, member_id: str,
                      now: int) -> None:
        if group.state is GroupState.DEAD:
            raise CoordinatorNotAvailable(f"group {group.group_id!r} is being deleted")
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return  # the group only stores offsets (manual assignment)
        if group.state is GroupState.COMPLETING_REBALANCE:
            raise RebalanceInProgress(
                f"group {group.group_id!r} is completing a rebalance; commit after it syncs")
        member = group.members.get(member_id)
        if member is None:
            raise UnknownMemberId(f"member {member_id!r} is not in group {group.group_id!r}")
        if generation_id != group.generation_id:
            raise IllegalGeneration(
                f"commit from generation {generation_id} of group {group.group_id!r}; the "
                f"current generation is {group.generation_id}")
        member.heartbeat_deadline_ms = now + member.session_timeout_ms

    def append_done(self, append_id: int, now: int,
                    error: Optional[BaseException] = None) -> List[Action]:
        """The driver finished the :class:`AppendOffsets` ``append_id``: ``error`` is what
        the append raised (then nothing changes and the request fails with it)."""
        pending = self._appends.pop(append_id, None)
        if pending is None:
            raise InvalidArgument(f"no append {append_id} is pending")
        if pending.incarnation != self._incarnations.get(pending.partition, 0):
            return self._stale_append_done(append_id, pending, error)
        group = self._groups.get(pending.group_id)
        if pending.kind == "store":
            if group is None:
                return []
            return self._stored(group, append_id, now, error)
        if pending.kind == "commit":
            if group is not None:
                for tp in pending.offsets:
                    n = group.pending_commits.get(tp, 0) - 1
                    if n > 0:
                        group.pending_commits[tp] = n
                    else:
                        group.pending_commits.pop(tp, None)
            if error is not None:
                return [Respond(pending.token, error=error)]
            if group is None:  # deleted meanwhile: the records are in the log, so keep them
                group = self._groups[pending.group_id] = _Group(pending.group_id, now)
            group.offsets.update(pending.offsets)
            return [Respond(pending.token)]
        if pending.kind == "delete_offsets":
            result = self._offset_delete_results.pop(append_id)
            if group is not None:
                for tp, v in pending.offsets.items():
                    group.pending_expiry.discard(tp)
                    if error is None and group.offsets.get(tp) is v:
                        del group.offsets[tp]
                self._maybe_drop(group)
            if error is not None:
                return [Respond(pending.token, error=error)]
            return [Respond(pending.token, result)]
        if pending.kind == "expire":
            if group is not None:
                for tp, v in pending.offsets.items():
                    group.pending_expiry.discard(tp)
                    if error is None and group.offsets.get(tp) is v:
                        del group.offsets[tp]
                self._maybe_drop(group)
            return []
        assert pending.kind == "delete"
        if group is None:
            return [Respond(pending.token)]
        if error is not None:
            group.transition(GroupState.EMPTY, now)
            return [Respond(pending.token, error=error)]
        for tp, v in pending.offsets.items():
            if group.offsets.get(tp) is v:
                del group.offsets[tp]
        if not group.offsets and not group.pending_commits:
            del self._groups[group.group_id]
        else:  # a commit slipped in between: the group lives on with it
            group.transition(GroupState.EMPTY, now)
        return [Respond(pending.token)]

    def _stale_append_done(self, append_id: int, pending: _PendingAppend,
                           error: Optional[BaseException]) -> List[Action]:
        """An append asked for before its partition was unloaded: answer its request
        (what was written is in the log, for the next coordinator), change nothing."""
        result = self._offset_delete_results.pop(append_id, None)
        if pending.token is None:
            return []
        if error is not None:
            return [Respond(pending.token, error=error)]
        return [Respond(pending.token, result if pending.kind == "delete_offsets" else None)]

    def _maybe_drop(self, group: _Group) -> None:
        if group.state is GroupState.EMPTY and not group.members and not group.offsets \
                and not group.pending_commits and not group.pending_expiry:
            self._groups.pop(group.group_id, None)

    def _expire_offsets(self, now: int) -> List[Action]:
        """Kafka's rules for groups without members: all offsets of a group that has been
        Empty for offsets.retention.ms; for groups that never used group management,
        offsets whose last commit is that old.  Offsets of groups with members are kept."""
        retention = self.config.offsets_retention_ms
        actions: List[Action] = []
        for group in list(self._groups.values()):
            if group.state is not GroupState.EMPTY:
                continue
            if partition_for_group(group.group_id, self.num_partitions) in self._loading:
                continue  # half replayed: a later record may renew it
            managed = group.generation_id > 0
            expired: Dict[TopicPartition, OffsetValue] = {}
            for tp, v in group.offsets.items():
                if tp in group.pending_commits or tp in group.pending_expiry:
                    continue
                base = group.state_timestamp_ms if managed else v.commit_timestamp
                if now - base >= retention:
                    expired[tp] = v
            if not expired:
                self._maybe_drop(group)
                continue
            group.pending_expiry.update(expired)
            append_id = next(self._append_ids)
            self._appends[append_id] = self._pending("expire", group.group_id, None, expired)
            records = [offset_tombstone(group.group_id, t, p) for t, p in expired]
            if managed and len(expired) == len(group.offsets) and not group.pending_commits:
                # the group goes with its last offsets (Kafka removes it): so does its record
                records.append(group_metadata_tombstone(group.group_id))
            actions.append(AppendOffsets(
                append_id, partition_for_group(group.group_id, self.num_partitions),
                tuple(records)))
        return actions

    def fetch_offsets(self, group_id: str,
                      partitions: Optional[Iterable[TopicPartition]] = None
                      ) -> Dict[TopicPartition, Tuple[int, str]]:
        """Committed offsets of the group: (topic, partition) -> (offset, metadata), for
        ``partitions`` (all when None).  Partitions without a committed offset, and groups
        the coordinator does not know, are simply absent."""
        group_id = _check_group_id(group_id, allow_empty=True)
        self._check_coordinator(group_id)
        group = self._groups.get(group_id)
        if group is None:
            return {}
        if partitions is None:
            return {tp: (v.offset, v.metadata) for tp, v in group.offsets.items()}
        out = {}
        for tp in partitions:
            if not (isinstance(tp, tuple) and len(tp) == 2):
                raise InvalidArgument(f"a partition must be (topic, partition), got {tp!r}")
            v = group.offsets.get(tp)
            if v is not None:
                out[tp] = (v.offset, v.metadata)
        return out

    def committed_value(self, group_id: str, tp: TopicPartition) -> Optional[OffsetValue]:
        """The full committed record (with leader epoch and commit time), or None."""
        group = self._groups.get(group_id)
        return None if group is None else group.offsets.get(tp)

    # ---------------------------------------------------------------- admin

    def describe_group(self, group_id: str) -> GroupDescription:
        """The group's state and members (state Dead and no members if unknown, as Kafka)."""
        group_id = _check_group_id(group_id, allow_empty=True)
        self._check_coordinator(group_id)
        g = self._groups.get(group_id)
        if g is None:
            return GroupDescription(group_id, GroupState.DEAD, "", "", -1, "", ())
        members = tuple(MemberDescription(m.member_id, m.client_id,
                                          m.metadata_for(g.protocol_name), m.assignment)
                        for m in g.members.values())
        return GroupDescription(g.group_id, g.state, g.protocol_type or "",
                                g.protocol_name or "", g.generation_id, g.leader_id or "",
                                members)

    def list_groups(self) -> List[GroupListing]:
        """Every group the coordinator serves (none of a partition still loading), in no
        particular order."""
        return [GroupListing(g.group_id, g.protocol_type or "", g.state)
                for g in self._groups.values()
                if not self._loading or partition_for_group(g.group_id, self.num_partitions) not in self._loading]

    def delete_group(self, token: Any, group_id: str, now: int) -> List[Action]:
        """Delete a group without members and its committed offsets (tombstones are
        appended first).  Errors: GroupIdNotFound, NonEmptyGroup."""
        try:
            group_id = _check_group_id(group_id, allow_empty=True)
            self._check_coordinator(group_id)
            group = self._groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                raise GroupIdNotFound(f"group {group_id!r} does not exist")
            if group.state is not GroupState.EMPTY:
                raise NonEmptyGroup(
                    f"group {group_id!r} has {len(group.members)} members ({group.state.value})")
        except PylogError as e:
            return [Respond(token, error=e)]
        doomed = dict(group.offsets)
        managed = group.generation_id > 0  # a group metadata record may exist
        if not doomed and not group.pending_commits and not managed:
            del self._groups[group_id]  # nothing durable to erase
            return [Respond(token)]
        group.transition(GroupState.DEAD, now)
        append_id = next(self._append_ids)
        self._appends[append_id] = self._pending("delete", group_id, token, doomed)
        records = [offset_tombstone(group_id, t, p) for t, p in doomed]
        if managed:
            records.append(group_metadata_tombstone(group_id))
        return [AppendOffsets(append_id, partition_for_group(group_id, self.num_partitions),
                              tuple(records))]

    def delete_offsets(self, token: Any, group_id: str, partitions: Iterable[TopicPartition],
                       now: int) -> List[Action]:
        """Kafka's OffsetDelete: remove the group's committed offsets of ``partitions``.

        Answers a dict (topic, partition) -> error (None when deleted or when there was
        nothing to delete).  A partition whose topic a member of a consumer group still
        subscribes to keeps its offset (GroupSubscribedToTopic).  Errors of the whole
        request: GroupIdNotFound (unknown group), NonEmptyGroup is never raised here.
        """
        try:
            group_id = _check_group_id(group_id)
            self._check_coordinator(group_id)
            group = self._groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                raise GroupIdNotFound(f"group {group_id!r} does not exist")
            wanted = []
            for tp in partitions:
                if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)):
                    raise InvalidArgument(f"a partition must be (topic, partition), got {tp!r}")
                wanted.append(tp)
        except PylogError as e:
            return [Respond(token, error=e)]
        subscribed = _subscribed_topics(group)
        result: Dict[TopicPartition, Optional[BaseException]] = {}
        doomed: Dict[TopicPartition, OffsetValue] = {}
        for tp in wanted:
            if tp[0] in subscribed:
                result[tp] = GroupSubscribedToTopic(
                    f"group {group_id!r} still consumes topic {tp[0]!r}")
                continue
            result[tp] = None
            v = group.offsets.get(tp)
            if v is not None and tp not in group.pending_expiry:
                doomed[tp] = v
        if not doomed:
            return [Respond(token, result)]
        group.pending_expiry.update(doomed)
        append_id = next(self._append_ids)
        self._appends[append_id] = self._pending("delete_offsets", group_id, token, doomed)
        self._offset_delete_results[append_id] = result
        return [AppendOffsets(append_id, partition_for_group(group_id, self.num_partitions),
                              tuple(offset_tombstone(group_id, t, p) for t, p in doomed))]

    def group_state(self, group_id: str) -> Optional[GroupState]:
        """The group's state, or None if the coordinator does not know it."""
        g = self._groups.get(group_id)
        return None if g is None else g.state

    def generation(self, group_id: str) -> Optional[int]:
        """The group's current generation id, or None if unknown."""
        g = self._groups.get(group_id)
        return None if g is None else g.generation_id
