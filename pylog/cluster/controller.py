"""The cluster controller: one broker elects partition leaders, driven by the MetadataStore.

Sans-I/O: the controller reads and writes a :class:`~pylog.cluster.metadata.
InMemoryMetadataStore` (or any store with its contract) and nothing else; it reads no clock
(every call that needs the time takes ``now`` in ms), sleeps never and starts no thread.
The driver (the cluster kernel or the simulator) calls :meth:`Controller.try_elect_self`
when there is no controller, passes the store's watch events to
:meth:`Controller.on_events` and calls :meth:`Controller.tick` periodically.  One
Controller is not thread-safe: the driver serialises calls to it.

Data model in the store (the kernel reads and writes the same nodes; helpers below):

``/brokers/ids/<id>``
    ephemeral (the broker's session), ``{"rack": str | None}``.
``/controller``
    ephemeral (the controller's session), ``{"broker_id": id}``.
``/controller_epoch``
    persistent int, +1 each time a broker becomes controller (first controller: 1).
``/brokers/topics/<topic>``
    ``{"partitions": {"<p>": [replica ids]}, "config": {Kafka name: value}, "id": hex}``
    (the topic's configuration overrides, and its topic id: 32 hex digits, Kafka's
    topic UUID, absent on topics made by older versions).
``/brokers/topics/<topic>/partitions/<p>/state``
    ``{"leader": id or -1, "leader_epoch": int, "isr": [ids], "controller_epoch": int}``.
    The partition's leader changes "isr" by compare-and-set (shrink/expand); the
    controller changes "leader" and "leader_epoch" (and "isr" in elections and when a
    broker dies) by compare-and-set too.  A conflict means: re-read, decide again.
``/loss_ledger/entry-<10 digits>``
    persistent, one per loss: the controller writes one per unclean election
    (``{"topic", "partition", "new_leader", "leader_epoch", "at_ms", "reason": "unclean
    election", "previous_leader", "previous_leader_epoch", "previous_isr"}``); the kernel
    adds the exact offset ranges lost when replicas truncate.

Election rules (Kafka's):

- **Clean** (default): the new leader is the first replica, in replica order, that is
  alive and in the ISR; the ISR becomes its alive members.
- **Unclean** (topic config ``unclean.leader.election.enable``, else the controller's
  ``unclean_default``): when no ISR member is alive, the first alive replica leads with
  the ISR set to just itself; logged at ERROR and recorded in the loss ledger.
- **No candidate**: leader -1 (offline), the ISR left as it was, so that an ISR member
  that returns can lead.  An offline partition gets a leader as soon as an eligible
  replica is alive again.
- A dead broker is removed from the ISR of partitions it follows (never emptying it).
- Every leader change, including to and from -1, bumps ``leader_epoch``; an ISR-only
  change does not.
- **Preferred leader**: with ``auto_leader_rebalance_enable``, every
  ``leader_imbalance_check_interval_ms`` (and on demand,
  :meth:`Controller.elect_preferred_leaders`) leadership moves back to the first replica
  wherever it is alive, in the ISR and not leading.
- A broker whose registration was replaced by a new session (it restarted between two
  looks) is handled as a death followed by a return, as Kafka does with broker epochs.

Fencing: the controller re-reads ``/controller`` and ``/controller_epoch`` at each entry
point and resigns (becomes inactive) when either is no longer its own, or when it reads a
partition state written under a newer controller epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from pylog.broker.broker import check_topic_is_new, validate_topic_name
from pylog.broker.config import TOPIC_DEFAULTS, TopicConfig
from pylog.cluster.metadata import WatchEvent
from pylog.cluster.placement import MAX_PARTITIONS, assign_replicas
from pylog.errors import (
    BadVersion,
    IllegalState,
    InvalidArgument,
    InvalidPartitions,
    InvalidReplicaAssignment,
    NodeExists,
    NoNode,
    SessionExpired,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from pylog.util import check_int

__all__ = [
    "Controller",
    "PartitionState",
    "NotController",
    "BROKER_IDS_PATH",
    "TOPICS_PATH",
    "CONTROLLER_PATH",
    "CONTROLLER_EPOCH_PATH",
    "LOSS_LEDGER_PATH",
    "WATCH_PREFIXES",
    "NO_LEADER",
    "MAX_CAS_ATTEMPTS",
    "broker_path",
    "topic_path",
    "partition_state_path",
    "register_broker",
    "live_brokers",
    "check_replica_assignment",
    "read_partition_state",
    "read_loss_ledger",
    "append_loss_ledger",
]

BROKER_IDS_PATH = "/brokers/ids"
TOPICS_PATH = "/brokers/topics"
CONTROLLER_PATH = "/controller"
CONTROLLER_EPOCH_PATH = "/controller_epoch"
LOSS_LEDGER_PATH = "/loss_ledger"
#: The prefixes whose events :meth:`Controller.on_events` wants to see.
WATCH_PREFIXES = (BROKER_IDS_PATH, TOPICS_PATH, CONTROLLER_PATH)
#: ``leader`` of an offline partition.
NO_LEADER = -1
#: Compare-and-set attempts on one partition state before the controller leaves it to
#: the next tick (a conflict needs another writer between our read and our write).
MAX_CAS_ATTEMPTS = 16

_UNCLEAN = "unclean.leader.election.enable"
_MIN_ISR = "min.insync.replicas"


class NotController(IllegalState):
    """The call needs the active controller and this broker is not (or no longer) it."""

    code = 41
    kafka_name = "NOT_CONTROLLER"
    retriable = True


# ---------------------------------------------------------------------- data model
def broker_path(broker_id: int) -> str:
    """``/brokers/ids/<id>``."""
    return f"{BROKER_IDS_PATH}/{broker_id}"


def topic_path(topic: str) -> str:
    """``/brokers/topics/<topic>``."""
    return f"{TOPICS_PATH}/{topic}"


def partition_state_path(topic: str, partition: int) -> str:
    """``/brokers/topics/<topic>/partitions/<p>/state``."""
    return f"{TOPICS_PATH}/{topic}/partitions/{partition}/state"


def register_broker(store: Any, session_id: int, broker_id: int, rack: Optional[str] = None) -> None:
    """Create the broker's ephemeral registration (NodeExists if it is registered)."""
    check_int("broker id", broker_id, min=0)
    if rack is not None and not isinstance(rack, str):
        raise InvalidArgument(f"broker.rack must be a string or None, got {rack!r}")
    store.create(broker_path(broker_id), {"rack": rack}, ephemeral_session=session_id)


def _read_registrations(store: Any) -> Dict[int, Tuple[Optional[str], Optional[int]]]:
    """Live broker id -> (rack, owning session)."""
    out: Dict[int, Tuple[Optional[str], Optional[int]]] = {}
    try:
        names = store.children(BROKER_IDS_PATH)
    except NoNode:
        return out
    for name in names:
        if not name.isdigit():
            continue
        path = broker_path(int(name))
        try:
            data, _ = store.get(path)
            owner = store.stat(path).ephemeral_owner
        except NoNode:  # gone between children() and get()
            continue
        rack = data.get("rack") if isinstance(data, dict) else None
        out[int(name)] = (rack if isinstance(rack, str) else None, owner)
    return out


def check_replica_assignment(assignment: Sequence[Sequence[int]], partitions: int, replication_factor: int,
                             live: Iterable[int]) -> List[List[int]]:
    """A manual replica assignment (replica ids per partition, partition 0 first) as
    lists, checked: ``partitions`` partitions of ``replication_factor`` distinct replicas
    each, every one a live broker.  InvalidReplicaAssignment otherwise."""
    alive = set(live)
    out = [list(r) for r in assignment]
    if len(out) != partitions:
        raise InvalidReplicaAssignment(f"the assignment names {len(out)} partitions, not {partitions}")
    for p, replicas in enumerate(out):
        if len(replicas) != replication_factor:
            raise InvalidReplicaAssignment(f"partition {p} has {len(replicas)} replicas; every partition needs "
                                           f"{replication_factor} (the first partition's count)")
        if len(set(replicas)) != len(replicas):
            raise InvalidReplicaAssignment(f"partition {p} names a broker twice: {replicas}")
        dead = [b for b in replicas if b not in alive]
        if dead:
            raise InvalidReplicaAssignment(f"partition {p}: brokers {dead} are not live brokers {sorted(alive)}")
    return out


def live_brokers(store: Any) -> Dict[int, Optional[str]]:
    """Registered (live) broker id -> rack, sorted by id."""
    return {b: rack for b, (rack, _) in sorted(_read_registrations(store).items())}


@dataclass(frozen=True)
class PartitionState:
    """One partition's replicas and ``/brokers/topics/<t>/partitions/<p>/state`` node."""

    topic: str
    partition: int
    replicas: Tuple[int, ...]
    leader: int  #: broker id, or -1 (NO_LEADER) when offline
    leader_epoch: int
    isr: Tuple[int, ...]
    controller_epoch: int  #: epoch of the controller that last wrote leader/ISR
    version: int  #: the state node's version, for compare-and-set

    @property
    def offline(self) -> bool:
        return self.leader == NO_LEADER

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    def state_data(self) -> Dict[str, Any]:
        """The state node's data."""
        return {"leader": self.leader, "leader_epoch": self.leader_epoch,
                "isr": list(self.isr), "controller_epoch": self.controller_epoch}

    @classmethod
    def from_data(cls, topic: str, partition: int, replicas: Sequence[int], data: Mapping[str, Any],
                  version: int) -> "PartitionState":
        return cls(topic, partition, tuple(replicas), int(data["leader"]), int(data["leader_epoch"]),
                   tuple(int(b) for b in data["isr"]), int(data["controller_epoch"]), version)


def _topic_data(store: Any, topic: str) -> Dict[str, Any]:
    try:
        data, _ = store.get(topic_path(topic))
    except NoNode:
        raise UnknownTopicOrPartition(f"topic {topic!r} does not exist") from None
    return data


def read_partition_state(store: Any, topic: str, partition: int,
                         replicas: Optional[Sequence[int]] = None) -> PartitionState:
    """Read one partition's state (its replicas from the topic node unless given).
    Raises UnknownTopicOrPartition if the topic or partition does not exist."""
    if replicas is None:
        assignment = _topic_data(store, topic)["partitions"]
        if str(partition) not in assignment:
            raise UnknownTopicOrPartition(f"topic {topic!r} has no partition {partition}")
        replicas = assignment[str(partition)]
    try:
        data, version = store.get(partition_state_path(topic, partition))
    except NoNode:
        raise UnknownTopicOrPartition(f"{topic}-{partition} has no state node") from None
    return PartitionState.from_data(topic, partition, replicas, data, version)


def read_loss_ledger(store: Any) -> List[Dict[str, Any]]:
    """Every loss ledger entry, oldest first (each with its node name as "id")."""
    try:
        names = store.children(LOSS_LEDGER_PATH)
    except NoNode:
        return []
    out = []
    for name in names:
        data, _ = store.get(f"{LOSS_LEDGER_PATH}/{name}")
        out.append({**data, "id": name})
    return out


def append_loss_ledger(store: Any, entry: Mapping[str, Any]) -> str:
    """Add a loss ledger entry; returns its path (names increase with each entry)."""
    return store.create_sequential(f"{LOSS_LEDGER_PATH}/entry-", dict(entry))


# ---------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class _Decision:
    leader: int
    isr: Tuple[int, ...]
    reason: str
    unclean: bool = False


def _decide(s: PartitionState, live: Set[int], unclean_enabled: bool) -> Optional[_Decision]:
    """What the controller writes for a partition given the live brokers (None: nothing)."""
    live_isr = tuple(b for b in s.isr if b in live)
    if s.leader != NO_LEADER and s.leader in live:
        if live_isr and live_isr != s.isr:
            gone = [b for b in s.isr if b not in live]
            return _Decision(s.leader, live_isr, f"broker(s) {gone} offline")
        return None
    isr_set = set(s.isr)
    clean = [b for b in s.replicas if b in live and b in isr_set]
    why = (f"leader {s.leader} offline" if s.leader != NO_LEADER else "partition was offline")
    if clean:
        return _Decision(clean[0], live_isr, f"clean election: {why}")
    alive = [b for b in s.replicas if b in live]
    if unclean_enabled and alive:
        return _Decision(alive[0], (alive[0],), f"unclean election: {why}, no ISR member alive",
                         unclean=True)
    if s.leader == NO_LEADER:
        return None
    return _Decision(NO_LEADER, s.isr, f"{why}, no eligible replica alive")


def _decide_preferred(s: PartitionState, live: Set[int]) -> Optional[_Decision]:
    pref = s.preferred_leader
    if s.leader != pref and pref in live and pref in s.isr:
        return _Decision(pref, s.isr, "preferred leader election")
    return None


class Controller:
    """The controller state machine of one broker (see the module docstring).

    Inactive until :meth:`try_elect_self` succeeds; inactive again once it notices that
    ``/controller`` or ``/controller_epoch`` is no longer its own.

    With :attr:`allow_admin_writes`, the topic changes (:meth:`create_topic`,
    :meth:`create_partitions`, :meth:`alter_topic_config`, :meth:`delete_topic`) also
    work while inactive: a broker of a cluster of processes writes them to the store for
    an operator, as Kafka's AdminZkClient does, and the active controller reacts to the
    store's events (it reconciles a new or changed topic with the live brokers).
    """

    #: Let an inactive controller write topic changes (see the class docstring).
    allow_admin_writes = False

    def __init__(self, broker_id: int, store: Any, *, unclean_default: bool = False,
                 auto_leader_rebalance_enable: bool = True,
                 leader_imbalance_check_interval_ms: int = 300_000,
                 logger: logging.Logger = logging.getLogger("pylog.controller")) -> None:
        check_int("broker id", broker_id, min=0)
        for name, value in (("unclean_default", unclean_default),
                            ("auto_leader_rebalance_enable", auto_leader_rebalance_enable)):
            if not isinstance(value, bool):
                raise InvalidArgument(f"{name} must be a boolean, got {value!r}")
        check_int("leader_imbalance_check_interval_ms", leader_imbalance_check_interval_ms, min=1)
        self.broker_id = broker_id
        self.store = store
        self.unclean_default = unclean_default
        self.auto_leader_rebalance_enable = auto_leader_rebalance_enable
        self.leader_imbalance_check_interval_ms = leader_imbalance_check_interval_ms
        self.log = logger
        self._active = False
        self._epoch = 0  # the controller epoch this broker holds while active
        self._registrations: Dict[int, Tuple[Optional[str], Optional[int]]] = {}
        self._next_rebalance_ms = 0
        self._dirty = False  # a CAS gave up: reconcile everything at the next tick
        self._counters = {"leader_elections": 0, "unclean_leader_elections": 0,
                          "preferred_leader_elections": 0, "offline_transitions": 0,
                          "controller_isr_shrinks": 0}

    # ------------------------------------------------------------------ controllership
    @property
    def is_active(self) -> bool:
        """Whether this broker is the controller (as of the last call that checked)."""
        return self._active

    @property
    def epoch(self) -> int:
        """The controller epoch this broker holds (0 if it never was controller)."""
        return self._epoch

    def try_elect_self(self, session_id: int, now: int) -> bool:
        """Become the controller if nobody is: create ``/controller`` (ephemeral, on
        ``session_id``), bump ``/controller_epoch`` and reconcile every partition with the
        live brokers.  Returns whether this broker is the controller."""
        if self._active and self._check_still_controller():
            return True
        try:
            self.store.create(CONTROLLER_PATH, {"broker_id": self.broker_id},
                              ephemeral_session=session_id)
        except SessionExpired:
            return False
        except NodeExists:
            try:
                data, _ = self.store.get(CONTROLLER_PATH)
                owner = self.store.stat(CONTROLLER_PATH).ephemeral_owner
            except NoNode:
                return False  # it just went away: the driver will call again
            if not (isinstance(data, dict) and data.get("broker_id") == self.broker_id
                    and owner == session_id):
                return False
            # Our own registration (a Controller object recreated on the same session).
        epoch = self._bump_controller_epoch()
        if epoch is None:
            self.log.error("broker %d could not bump %s after %d conflicts; giving up the "
                           "controller registration", self.broker_id, CONTROLLER_EPOCH_PATH,
                           MAX_CAS_ATTEMPTS)
            try:
                self.store.delete(CONTROLLER_PATH)
            except NoNode:
                pass
            return False
        self._epoch = epoch
        self._active = True
        self._registrations = _read_registrations(self.store)
        self._next_rebalance_ms = now + self.leader_imbalance_check_interval_ms
        self.log.info("broker %d is the controller (epoch %d); live brokers %s", self.broker_id,
                      self._epoch, sorted(self._registrations))
        self._reconcile_all(set(self._registrations), now)
        return self._active

    def _bump_controller_epoch(self) -> Optional[int]:
        """+1 on /controller_epoch by compare-and-set (None after MAX_CAS_ATTEMPTS conflicts,
        which needs another writer of a node only the /controller holder writes)."""
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                value, version = self.store.get(CONTROLLER_EPOCH_PATH)
            except NoNode:
                try:
                    self.store.create(CONTROLLER_EPOCH_PATH, 1)
                    return 1
                except NodeExists:
                    continue
            try:
                self.store.set(CONTROLLER_EPOCH_PATH, int(value) + 1, version)
                return int(value) + 1
            except BadVersion:
                continue
        return None

    def _check_still_controller(self) -> bool:
        """Resign unless ``/controller`` is ours and ``/controller_epoch`` is our epoch."""
        if not self._active:
            return False
        try:
            data, _ = self.store.get(CONTROLLER_PATH)
        except NoNode:
            self._resign("/controller was deleted (session expired or closed)")
            return False
        holder = data.get("broker_id") if isinstance(data, dict) else None
        if holder != self.broker_id:
            self._resign(f"broker {holder} holds /controller")
            return False
        try:
            epoch, _ = self.store.get(CONTROLLER_EPOCH_PATH)
        except NoNode:
            epoch = None
        if epoch != self._epoch:
            self._resign(f"/controller_epoch is {epoch}, ours is {self._epoch}")
            return False
        return True

    def _resign(self, reason: str) -> None:
        if self._active:
            self.log.warning("broker %d is no longer the controller (epoch %d): %s",
                             self.broker_id, self._epoch, reason)
        self._active = False

    def _require_active(self) -> None:
        if not self._check_still_controller():
            raise NotController(f"broker {self.broker_id} is not the controller")

    def _require_writer(self) -> None:
        """Topic changes: the active controller, or any broker with allow_admin_writes."""
        if self.allow_admin_writes:
            self._check_still_controller()
            return
        self._require_active()

    # ------------------------------------------------------------------ events, time
    def on_events(self, events: Iterable[WatchEvent], now: int) -> None:
        """React to store changes (the events of a watch on :data:`WATCH_PREFIXES`): broker
        registrations appearing or disappearing, topics and partition states changing.
        Events are hints: the controller re-reads what they point at."""
        events = list(events)
        if not self._active or not events:
            return
        if not self._check_still_controller():
            return
        if any(e.path == BROKER_IDS_PATH or e.path.startswith(BROKER_IDS_PATH + "/") for e in events):
            if self._sync_brokers(now):
                return  # every topic was reconciled
        topics = sorted({e.path.split("/")[3] for e in events
                         if e.path.startswith(TOPICS_PATH + "/")})
        live = set(self._registrations)
        for topic in topics:
            if not self._active:
                return
            if self.store.exists(topic_path(topic)):
                self._reconcile_topic(topic, live, now)

    def tick(self, now: int) -> None:
        """Periodic work: notice broker changes missed by events, retry partitions left by
        CAS conflicts, and (with auto_leader_rebalance_enable) run the preferred leader
        election every leader_imbalance_check_interval_ms."""
        if not self._check_still_controller():
            return
        self._sync_brokers(now)
        if self._active and self._dirty:
            self._dirty = False
            self._reconcile_all(set(self._registrations), now)
        if self._active and self.auto_leader_rebalance_enable and now >= self._next_rebalance_ms:
            self._next_rebalance_ms = now + self.leader_imbalance_check_interval_ms
            self._elect_preferred(now, None)

    def handle_restarted(self, broker_ids: Sequence[int], now: int) -> None:
        """Brokers that restarted while no controller watched (so no bounce was seen):
        handled as offline, then online, so they lead again only at a new epoch, and
        another in-sync replica takes over where one is alive (as KIP-380's broker
        epochs make Kafka's controller do)."""
        if not self._active:
            raise NotController(f"broker {self.broker_id} is not the active controller")
        self._sync_brokers(now)
        live = set(self._registrations)
        bounced = live & set(broker_ids)
        if bounced:
            self.log.warning("broker(s) %s restarted unseen: handled as offline, then online", sorted(bounced))
            self._reconcile_all(live - bounced, now)
            self._reconcile_all(live, now)

    def mark_dirty(self) -> None:
        """Reconcile every partition at the next :meth:`tick`: the driver may have missed
        events (a store that lost its connection raises none for what changed meanwhile)."""
        self._dirty = True

    def _sync_brokers(self, now: int) -> bool:
        """Compare the registrations with the last ones seen; reconcile every topic if any
        changed (returns whether).  A registration owned by a new session is a broker that
        restarted in between."""
        old = self._registrations
        new = _read_registrations(self.store)
        bounced = {b for b in old.keys() & new.keys() if old[b][1] != new[b][1]}
        died = sorted(old.keys() - new.keys())
        returned = sorted(new.keys() - old.keys())
        self._registrations = new
        if not (died or returned or bounced):
            return False
        for b in died:
            self.log.warning("broker %d is offline (its registration is gone)", b)
        for b in returned:
            self.log.info("broker %d is online (rack %s)", b, new[b][0])
        for b in sorted(bounced):
            self.log.warning("broker %d restarted (new registration): handled as offline, then online", b)
        live = set(new)
        if bounced:
            self._reconcile_all(live - bounced, now)
        self._reconcile_all(live, now)
        return True

    # ------------------------------------------------------------------ reconciling
    def _topics(self) -> List[str]:
        try:
            return self.store.children(TOPICS_PATH)
        except NoNode:
            return []

    def _reconcile_all(self, live: Set[int], now: int) -> None:
        for topic in self._topics():
            if not self._active:
                return
            self._reconcile_topic(topic, live, now)

    def _reconcile_topic(self, topic: str, live: Set[int], now: int) -> None:
        try:
            data = _topic_data(self.store, topic)
        except UnknownTopicOrPartition:
            return
        unclean = self._unclean_enabled(data)
        for p, replicas in sorted(data["partitions"].items(), key=lambda kv: int(kv[0])):
            if not self._active:
                return
            self._update_partition(topic, int(p), replicas,
                                   lambda s: _decide(s, live, unclean), now)

    def _unclean_enabled(self, topic_data: Mapping[str, Any]) -> bool:
        value = (topic_data.get("config") or {}).get(_UNCLEAN)
        return self.unclean_default if value is None else bool(value)

    def _update_partition(self, topic: str, partition: int, replicas: Sequence[int],
                          decide: Callable[[PartitionState], Optional[_Decision]],
                          now: int) -> Optional[PartitionState]:
        """Read, decide, compare-and-set; on a conflict read and decide again.  Returns the
        state written, or None if nothing was (nothing to do, gone, or gave up)."""
        path = partition_state_path(topic, partition)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, version = self.store.get(path)
            except NoNode:
                return None
            s = PartitionState.from_data(topic, partition, replicas, data, version)
            if s.controller_epoch > self._epoch:
                self._resign(f"{topic}-{partition} was written by controller epoch "
                             f"{s.controller_epoch}")
                return None
            d = decide(s)
            if d is None:
                return None
            epoch = s.leader_epoch + 1 if d.leader != s.leader else s.leader_epoch
            new = replace(s, leader=d.leader, leader_epoch=epoch, isr=d.isr,
                          controller_epoch=self._epoch, version=version + 1)
            try:
                self.store.set(path, new.state_data(), version)
            except BadVersion:
                self.log.debug("%s-%d changed while deciding; reading it again", topic, partition)
                continue
            except NoNode:
                return None
            self._record(s, new, d, now)
            return new
        self.log.warning("%s-%d: gave up after %d compare-and-set conflicts; retrying at the "
                         "next tick", topic, partition, MAX_CAS_ATTEMPTS)
        self._dirty = True
        return None

    def _record(self, old: PartitionState, new: PartitionState, d: _Decision, now: int) -> None:
        """Log a change and count it; an unclean election also goes to the loss ledger."""
        tp = f"{new.topic}-{new.partition}"
        if new.leader == old.leader:
            self._counters["controller_isr_shrinks"] += 1
            self.log.warning("%s: ISR %s -> %s (%s)", tp, list(old.isr), list(new.isr), d.reason)
            return
        if new.leader == NO_LEADER:
            self._counters["offline_transitions"] += 1
            self.log.warning("%s is offline at leader epoch %d: %s; ISR kept as %s", tp,
                             new.leader_epoch, d.reason, list(new.isr))
            return
        self._counters["leader_elections"] += 1
        if d.unclean:
            self._counters["unclean_leader_elections"] += 1
            self.log.error("%s: UNCLEAN leader election: broker %d leads at epoch %d although it "
                           "was not in the ISR %s; records it does not have are lost (%s)",
                           tp, new.leader, new.leader_epoch, list(old.isr), d.reason)
            append_loss_ledger(self.store, {
                "topic": new.topic, "partition": new.partition, "new_leader": new.leader,
                "leader_epoch": new.leader_epoch, "at_ms": now, "reason": "unclean election",
                "previous_leader": old.leader, "previous_leader_epoch": old.leader_epoch,
                "previous_isr": list(old.isr)})
            return
        if d.reason == "preferred leader election":
            self._counters["preferred_leader_elections"] += 1
        # A failover (the leader died) is a WARNING; a return to service or to the
        # preferred leader is INFO.
        level = logging.INFO if old.leader == NO_LEADER or old.leader in self._registrations \
            else logging.WARNING
        self.log.log(level, "%s: leader %d -> %d at epoch %d, ISR %s -> %s (%s)", tp, old.leader,
                     new.leader, new.leader_epoch, list(old.isr), list(new.isr), d.reason)

    # ------------------------------------------------------------------ topics
    def create_topic(self, topic: str, partitions: int, replication_factor: int,
                     config: Optional[Mapping[str, Any]], now: int, *, topic_id: Optional[str] = None,
                     assignment: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Place a new topic's replicas over the live brokers (rack-aware) and write its
        topic node and every partition state: the leader is the first replica, the ISR all
        replicas, leader epoch 0.  ``topic_id`` (32 hex digits) goes into the topic node.
        ``assignment`` (replica ids per partition, partition 0 first) replaces the
        placement: ``partitions`` and ``replication_factor`` must match it.

        Raises NotController, InvalidTopic, InvalidConfig, TopicAlreadyExists (also for a
        name that collides after swapping '.' and '_'), InvalidPartitions,
        InvalidReplicationFactor (more than the live brokers), InvalidReplicaAssignment
        (a partition of another size, a duplicate or a broker that is not live).
        """
        self._require_writer()
        validate_topic_name(topic)
        overrides = dict(TopicConfig.build(config).overrides)
        check_topic_is_new(topic, self._topics())
        if assignment is None:
            assignment = self.plan_partitions(partitions, replication_factor)
        else:
            assignment = check_replica_assignment(assignment, partitions, replication_factor,
                                                  live_brokers(self.store))
        node: Dict[str, Any] = {"partitions": {str(p): r for p, r in enumerate(assignment)}, "config": overrides}
        if topic_id is not None:
            node["id"] = topic_id
        try:
            self.store.create(topic_path(topic), node)
        except NodeExists:
            raise TopicAlreadyExists(f"topic {topic!r} already exists") from None
        for p, replicas in enumerate(assignment):
            state = PartitionState(topic, p, tuple(replicas), replicas[0], 0, tuple(replicas),
                                   self._epoch, 0)
            self.store.create(partition_state_path(topic, p), state.state_data())
        self.log.info("created topic %s: %d partitions, replication factor %d, config %s",
                      topic, partitions, replication_factor, overrides)

    def plan_partitions(self, partitions: int, replication_factor: int) -> List[List[int]]:
        """Replicas for ``partitions`` new partitions over the live brokers (rack-aware,
        :func:`~pylog.cluster.placement.assign_replicas`), continuing the leader
        round-robin where the existing partitions left it.  Writes nothing.  Raises
        InvalidPartitions, InvalidReplicationFactor (more than the live brokers)."""
        live = live_brokers(self.store)
        start = 0
        for t in self._topics():
            try:
                start += len(_topic_data(self.store, t)["partitions"])
            except UnknownTopicOrPartition:
                continue
        return assign_replicas(live, partitions, replication_factor, start=start % max(1, len(live)))

    def create_partitions(self, topic: str, count: int, now: int, *,
                          max_partitions: int = MAX_PARTITIONS) -> List[List[int]]:
        """Grow ``topic`` to ``count`` partitions (Kafka's CreatePartitions): the new
        partitions get the topic's replication factor, placed as :meth:`plan_partitions`
        does, leader the first replica, ISR all replicas, leader epoch 0.  Their state
        nodes are written first and the topic node (compare-and-set) last, so until that
        write the topic keeps its old count.  Returns the new partitions' replicas.

        Raises NotController, UnknownTopicOrPartition, InvalidPartitions (``count`` not
        above today's count, or above ``max_partitions``), InvalidReplicationFactor (fewer
        live brokers than the topic's replication factor).
        """
        self._require_writer()
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, version = self.store.get(topic_path(topic))
            except NoNode:
                raise UnknownTopicOrPartition(f"topic {topic!r} does not exist") from None
            current = len(data["partitions"])
            check_int(f"the new partition count of topic {topic!r} (it has {current})", count,
                      min=current + 1, max=max_partitions, error=InvalidPartitions)
            rf = len(data["partitions"]["0"])
            added = self.plan_partitions(count - current, rf)
            for i, replicas in enumerate(added):
                state = PartitionState(topic, current + i, tuple(replicas), replicas[0], 0, tuple(replicas),
                                       self._epoch, 0)
                path = partition_state_path(topic, current + i)
                try:
                    self.store.create(path, state.state_data())
                except NodeExists:  # left by an attempt that lost the race below
                    self.store.set(path, state.state_data())
            new = dict(data)
            new["partitions"] = {**data["partitions"], **{str(current + i): r for i, r in enumerate(added)}}
            try:
                self.store.set(topic_path(topic), new, version)
            except BadVersion:
                continue  # the topic node changed meanwhile (a config change): read it again
            self.log.info("topic %s grew from %d to %d partitions: %s", topic, current, count, added)
            return added
        raise BadVersion(f"topic {topic!r} kept changing during create_partitions; try again")

    def alter_topic_config(self, topic: str, overrides: Mapping[str, Any], now: int) -> None:
        """Make ``overrides`` the configuration overrides of ``topic`` (the whole set, by
        compare-and-set on the topic node); the brokers apply them to their replicas when
        they see the change.  Raises NotController, UnknownTopicOrPartition, InvalidConfig.
        """
        self._require_writer()
        clean = dict(TopicConfig.build(overrides).overrides)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, version = self.store.get(topic_path(topic))
            except NoNode:
                raise UnknownTopicOrPartition(f"topic {topic!r} does not exist") from None
            new = dict(data)
            new["config"] = clean
            try:
                self.store.set(topic_path(topic), new, version)
            except BadVersion:
                continue
            self.log.info("topic %s configuration overrides are now %s", topic, clean)
            return
        raise BadVersion(f"topic {topic!r} kept changing during alter_topic_config; try again")

    def delete_topic(self, topic: str, now: int) -> None:
        """Delete a topic's nodes (the brokers see the events and remove its logs).
        Raises NotController, UnknownTopicOrPartition."""
        self._require_writer()
        validate_topic_name(topic)
        try:
            self.store.delete(topic_path(topic), recursive=True)
        except NoNode:
            raise UnknownTopicOrPartition(f"topic {topic!r} does not exist") from None
        self.log.info("deleted topic %s", topic)

    def elect_preferred_leaders(self, now: int, topics: Optional[Iterable[str]] = None
                                ) -> List[Tuple[str, int]]:
        """Move leadership to each partition's first replica where it is alive, in the ISR
        and not leading (of ``topics``, default all); returns the partitions moved.
        Raises NotController, UnknownTopicOrPartition for a named topic that is absent."""
        self._require_active()
        names = None if topics is None else list(topics)
        if names is not None:
            for t in names:
                _topic_data(self.store, t)
        self._sync_brokers(now)
        if not self._active:
            raise NotController(f"broker {self.broker_id} is not the controller")
        return self._elect_preferred(now, names)

    def _elect_preferred(self, now: int, topics: Optional[List[str]]) -> List[Tuple[str, int]]:
        live = set(self._registrations)
        moved: List[Tuple[str, int]] = []
        for topic in (self._topics() if topics is None else topics):
            try:
                data = _topic_data(self.store, topic)
            except UnknownTopicOrPartition:
                continue
            for p, replicas in sorted(data["partitions"].items(), key=lambda kv: int(kv[0])):
                if not self._active:
                    return moved
                if self._update_partition(topic, int(p), replicas,
                                          lambda s: _decide_preferred(s, live), now):
                    moved.append((topic, int(p)))
        return moved

    # ------------------------------------------------------------------ reading
    def describe(self, topic: str) -> List[PartitionState]:
        """Every partition's state, by partition number (UnknownTopicOrPartition if absent).
        Reads the store; works on any broker, controller or not."""
        data = _topic_data(self.store, topic)
        return [read_partition_state(self.store, topic, int(p), replicas)
                for p, replicas in sorted(data["partitions"].items(), key=lambda kv: int(kv[0]))]

    def metrics(self) -> Dict[str, int]:
        """Cluster-wide figures computed from the store, plus this controller's counters.

        ``offline_partitions``: leader -1.  ``under_replicated_partitions``: online and the
        ISR smaller than the replicas.  ``under_min_isr_partitions``: online and the ISR
        smaller than the topic's min.insync.replicas.  (Offline partitions count only as
        offline, as in Kafka, where leaders report the other two.)
        ``preferred_replica_imbalance``: online partitions not led by their first replica.
        """
        out = {"active_controller": int(self._active), "controller_epoch": 0,
               "live_brokers": len(_read_registrations(self.store)), "global_topic_count": 0,
               "global_partition_count": 0, "offline_partitions": 0,
               "under_replicated_partitions": 0, "under_min_isr_partitions": 0,
               "preferred_replica_imbalance": 0,
               "loss_ledger_entries": len(read_loss_ledger(self.store))}
        try:
            out["controller_epoch"] = int(self.store.get(CONTROLLER_EPOCH_PATH)[0])
        except NoNode:
            pass
        for topic in self._topics():
            try:
                data = _topic_data(self.store, topic)
                states = self.describe(topic)
            except UnknownTopicOrPartition:
                continue
            min_isr = (data.get("config") or {}).get(_MIN_ISR, TOPIC_DEFAULTS[_MIN_ISR])
            out["global_topic_count"] += 1
            for s in states:
                out["global_partition_count"] += 1
                if s.offline:
                    out["offline_partitions"] += 1
                    continue
                out["under_replicated_partitions"] += len(s.isr) < len(s.replicas)
                out["under_min_isr_partitions"] += len(s.isr) < min_isr
                out["preferred_replica_imbalance"] += s.leader != s.preferred_leader
        out.update(self._counters)
        return out
