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
    ephemeral (the broker's session), ``{"rack": str | None}``, plus
    ``"shutting_down": true`` once the broker asked for a controlled shutdown
    (:func:`pylog.cluster.admin.request_controlled_shutdown`, compare-and-set), and
    ``"offline_replicas": [[topic, partition], ...]`` once a log directory of the broker
    failed (:func:`pylog.cluster.admin.report_offline_replicas`): the controller
    handles those replicas as if their broker were down (KIP-112) — leadership moves,
    they leave the ISR — until the broker registers again without them (a restart).
``/controller``
    ephemeral (the controller's session), ``{"broker_id": id}``.
``/controller_epoch``
    persistent int, +1 each time a broker becomes controller (first controller: 1).
``/brokers/topics/<topic>``
    ``{"partitions": {"<p>": [replica ids]}, "config": {Kafka name: value}, "id": hex}``
    (the topic's configuration overrides, and its topic id: 32 hex digits, Kafka's
    topic UUID, absent on topics made by older versions).  While partitions are being
    reassigned (Kafka's topic znode v2), also ``"adding_replicas"`` and
    ``"removing_replicas"``: ``{"<p>": [ids]}``, and pylog's ``"original_replicas"``:
    ``{"<p>": [ids before the reassignment, in order]}``; such a partition's replicas are
    the target replicas followed by the original ones not in the target.  A throttled
    reassignment adds its partitions' "p:broker" entries to the topic's
    ``leader.replication.throttled.replicas`` (original replicas) and
    ``follower.replication.throttled.replicas`` (added ones) and records them under
    pylog's ``"throttled_replicas"``: ``{"<p>": {"leader": [ids], "follower": [ids]}}``,
    to take exactly those out again when the partition's reassignment ends.
``/brokers/topics/<topic>/partitions/<p>/state``
    ``{"leader": id or -1, "leader_epoch": int, "isr": [ids], "controller_epoch": int}``.
    The partition's leader changes "isr" by compare-and-set (shrink/expand); the
    controller changes "leader" and "leader_epoch" (and "isr" in elections and when a
    broker dies) by compare-and-set too.  A conflict means: re-read, decide again.
``/config/brokers/<default>``, ``/config/brokers/<id>``
    persistent, dynamic broker configuration (Kafka's entity nodes): ``{"version": 1,
    "config": {"leader.replication.throttled.rate": "<bytes/s>",
    "follower.replication.throttled.rate": "<bytes/s>"}}``, the per-broker node winning;
    read by each broker's kernel (:mod:`pylog.cluster.throttle`).  A throttled
    reassignment sets the ``<default>`` rates with ``"set_by_reassignment": true`` and the
    controller removes them once no throttled reassignment is left.
``/loss_ledger/entry-<10 digits>``
    persistent, one per loss: the controller writes one per unclean election
    (``{"topic", "partition", "new_leader", "leader_epoch", "at_ms", "reason": "unclean
    election", "previous_leader", "previous_leader_epoch", "previous_isr"}``); the kernel
    adds the exact offset ranges lost when replicas truncate.
``/admin/preferred_replica_election``
    persistent, an operator's request (Kafka's znode; written by
    :func:`pylog.cluster.admin.request_preferred_election` on any broker):
    ``{"version": 1, "partitions": [{"topic": t, "partition": p}, ...],
    "requests": {"<request id>": [[t, p], ...] | null}}``.  "partitions" absent (or
    null) means every partition, an empty list none (the helper refuses one; Kafka's
    tool always lists the partitions).  Requests made before the controller took the
    node are merged into it (compare-and-set), each keeping its own partitions under
    "requests".
    The controller elects the preferred leaders (the rules below), writes one answer
    and deletes the node (compare-and-set: a request merged meanwhile makes it run again).
``/admin/preferred_replica_election_results/result-<10 digits>``
    persistent, the controller's answers, the newest :data:`MAX_ADMIN_RESULTS` kept:
    ``{"results": {"<request id>": [{"topic", "partition", "error", "leader"}, ...]},
    "controller_epoch", "at_ms"}`` with ElectLeaders' error names: "NONE" (moved),
    "ELECTION_NOT_NEEDED", "PREFERRED_LEADER_NOT_AVAILABLE",
    "UNKNOWN_TOPIC_OR_PARTITION".  The first answer naming a request id is its answer.
``/admin/unclean_leader_election``, ``/admin/unclean_leader_election_results/result-<10 digits>``
    pylog's (Kafka's ZooKeeper mode has no znode for it: its ElectLeaders of type
    UNCLEAN goes to the controller's event queue): the same layouts as the two above,
    written by :func:`pylog.cluster.admin.request_unclean_election`.  For each partition
    without a live leader the controller elects, as it would with
    ``unclean.leader.election.enable`` set, the first live ISR member or else the first
    live replica (an unclean election: ERROR log and loss ledger entry), whatever the
    topic's setting.  Answers: "NONE", "ELECTION_NOT_NEEDED" (a live leader),
    "ELIGIBLE_LEADERS_NOT_AVAILABLE" (no live replica), "UNKNOWN_TOPIC_OR_PARTITION".
``/admin/reassign_partitions``
    persistent, an operator's request (Kafka's znode; written by
    :func:`pylog.cluster.admin.request_reassignment`): ``{"version": 1, "partitions":
    [{"topic": t, "partition": p, "replicas": [target ids] | null, "throttle": bytes/s
    (optional, pylog's)}, ...], "requests": {...}}``, null cancelling; merged as above
    (the later entry for a partition wins).
    Unlike Kafka's legacy znode, the controller takes it at once: it checks each entry
    again, starts, replaces or cancels the reassignments in the topic nodes (which then
    hold their progress, as with KIP-455's API), answers and deletes the node.
``/admin/reassign_partitions_results/result-<10 digits>``
    the answers, as for elections: per partition ``{"topic", "partition", "error",
    "message"}`` with "NONE" (started, cancelled, or nothing to do),
    "UNKNOWN_TOPIC_OR_PARTITION", "INVALID_REPLICA_ASSIGNMENT" (empty, duplicates, a
    broker not registered), "NO_REASSIGNMENT_IN_PROGRESS" (cancelling nothing),
    "ELIGIBLE_LEADERS_NOT_AVAILABLE" (the new assignment drops the leader and no other
    replica can take over).

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
- **Controlled shutdown** (Kafka's ControlledShutdown): a broker shutting down may not be
  elected (not even as preferred leader) and leaves the ISR of partitions it follows; a
  partition it leads moves, by clean election only, to the first other replica that is
  live, not shutting down and in the ISR; with none, it keeps its leader until the
  broker is gone.  The leaders do not take a shutting-down or unregistered broker back
  into an ISR (KIP-841).
- The ISR holds replicas only, and a leader that is no longer a replica hands over
  (clean election) as a shutting-down one does.
- Every leader change, including to and from -1, bumps ``leader_epoch``; an ISR-only
  change does not.
- **Preferred leader**: with ``auto_leader_rebalance_enable``, every
  ``leader_imbalance_check_interval_ms`` (and on demand,
  :meth:`Controller.elect_preferred_leaders` or an ``/admin/preferred_replica_election``
  request) leadership moves back to the first replica wherever it is alive, not shutting
  down, in the ISR and not leading.
- A broker whose registration was replaced by a new session (it restarted between two
  looks) is handled as a death followed by a return, as Kafka does with broker epochs.

Reassignment (KIP-455, as Kafka's controller does it): the replicas become the target
followed by the original ones; the brokers of added replicas open them and fetch from the
leader, which tracks them and adds them to the ISR once caught up.  When every target
replica is in the ISR, the controller (1) elects a leader among the target replicas if
the leader is not one (clean; epoch + 1), (2) writes the target as the assignment and
drops the reassignment's entries, (3) takes the removed replicas out of the ISR; their
brokers then close and delete them.  A cancellation restores the original replicas at
once (leadership first moves off a replica it drops, if needed).  A new target for a
partition being reassigned replaces the old one; the original replicas stay those from
before the first.

Fencing: the controller re-reads ``/controller`` and ``/controller_epoch`` at each entry
point and resigns (becomes inactive) when either is no longer its own, or when it reads a
partition state written under a newer controller epoch.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from pylog.broker.broker import check_topic_is_new, validate_topic_name
from pylog.broker.config import (
    FOLLOWER_THROTTLED_REPLICAS,
    LEADER_THROTTLED_REPLICAS,
    TOPIC_DEFAULTS,
    TopicConfig,
    format_throttled_replicas,
    parse_throttled_replicas,
)
from pylog.cluster.metadata import WatchEvent
from pylog.cluster.placement import MAX_PARTITIONS, assign_replicas
from pylog.cluster.throttle import (
    DEFAULT_BROKER_CONFIG_PATH,
    REASSIGNMENT_MARK,
    set_replication_throttle,
)
from pylog.errors import (
    BadVersion,
    IllegalState,
    InvalidArgument,
    InvalidPartitions,
    InvalidReplicaAssignment,
    NodeExists,
    NoNode,
    NoReassignmentInProgress,
    PylogError,
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
    "ADMIN_PATH",
    "PREFERRED_ELECTION_PATH",
    "PREFERRED_ELECTION_RESULTS_PATH",
    "REASSIGN_PARTITIONS_PATH",
    "REASSIGN_RESULTS_PATH",
    "UNCLEAN_ELECTION_PATH",
    "UNCLEAN_ELECTION_RESULTS_PATH",
    "ADDING_REPLICAS",
    "REMOVING_REPLICAS",
    "ORIGINAL_REPLICAS",
    "THROTTLED_REPLICAS",
    "MAX_ADMIN_RESULTS",
    "check_reassignment",
    "reassignment_of",
    "merge_admin_request",
    "read_admin_result",
    "WATCH_PREFIXES",
    "NO_LEADER",
    "MAX_CAS_ATTEMPTS",
    "broker_path",
    "topic_path",
    "partition_state_path",
    "register_broker",
    "live_brokers",
    "check_replica_assignment",
    "shutting_down_brokers",
    "SHUTTING_DOWN",
    "read_partition_state",
    "read_loss_ledger",
    "append_loss_ledger",
]

BROKER_IDS_PATH = "/brokers/ids"
TOPICS_PATH = "/brokers/topics"
CONTROLLER_PATH = "/controller"
CONTROLLER_EPOCH_PATH = "/controller_epoch"
LOSS_LEDGER_PATH = "/loss_ledger"
#: In a broker's registration data: it asked for a controlled shutdown.
SHUTTING_DOWN = "shutting_down"
#: In a broker's registration data: its replicas in failed log directories.
OFFLINE_REPLICAS = "offline_replicas"
#: Operator requests for the controller (Kafka's ZooKeeper-mode admin znodes) and the
#: controller's answers to them.
ADMIN_PATH = "/admin"
PREFERRED_ELECTION_PATH = "/admin/preferred_replica_election"
PREFERRED_ELECTION_RESULTS_PATH = "/admin/preferred_replica_election_results"
REASSIGN_PARTITIONS_PATH = "/admin/reassign_partitions"
REASSIGN_RESULTS_PATH = "/admin/reassign_partitions_results"
UNCLEAN_ELECTION_PATH = "/admin/unclean_leader_election"
UNCLEAN_ELECTION_RESULTS_PATH = "/admin/unclean_leader_election_results"
#: In a topic node (Kafka's topic znode v2): partition -> replicas being added / removed
#: by a reassignment in progress.
ADDING_REPLICAS = "adding_replicas"
REMOVING_REPLICAS = "removing_replicas"
#: pylog's addition: partition -> its replicas, in order, before the reassignment (what a
#: cancellation restores; Kafka derives them from "partitions" minus "adding_replicas",
#: which loses their order when the target lists them first).
ORIGINAL_REPLICAS = "original_replicas"
#: pylog's: partition -> ``{"leader": [ids], "follower": [ids]}``, the entries a throttled
#: reassignment added to the topic's throttled-replicas configs (removed when it ends).
THROTTLED_REPLICAS = "throttled_replicas"
_REASSIGNMENT_KEYS = (ADDING_REPLICAS, REMOVING_REPLICAS, ORIGINAL_REPLICAS, THROTTLED_REPLICAS)
#: How many answers the controller keeps under each results node (the oldest go first).
MAX_ADMIN_RESULTS = 64
#: The prefixes whose events :meth:`Controller.on_events` wants to see.
WATCH_PREFIXES = (BROKER_IDS_PATH, TOPICS_PATH, CONTROLLER_PATH, ADMIN_PATH)
#: ``leader`` of an offline partition.
NO_LEADER = -1
#: Compare-and-set attempts on one partition state before the controller leaves it to
#: the next tick (a conflict needs another writer between our read and our write).
MAX_CAS_ATTEMPTS = 16

#: The request nodes the controller carries out.
_REQUEST_PATHS = (PREFERRED_ELECTION_PATH, REASSIGN_PARTITIONS_PATH, UNCLEAN_ELECTION_PATH)

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


class _Registration(NamedTuple):
    """What the controller reads from one ``/brokers/ids/<id>`` node."""

    rack: Optional[str]
    owner: Optional[int]  #: the owning session
    shutting_down: bool  #: controlled shutdown requested (see request_controlled_shutdown)
    #: replicas of this broker in a failed log directory (see report_offline_replicas)
    offline: FrozenSet[Tuple[str, int]] = frozenset()


def _read_registrations(store: Any) -> Dict[int, _Registration]:
    """Live broker id -> its registration."""
    out: Dict[int, _Registration] = {}
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
        data = data if isinstance(data, dict) else {}
        rack = data.get("rack")
        out[int(name)] = _Registration(rack if isinstance(rack, str) else None, owner,
                                       data.get(SHUTTING_DOWN) is True, _offline_replicas(data))
    return out


def _offline_replicas(data: Mapping[str, Any]) -> FrozenSet[Tuple[str, int]]:
    """The ``offline_replicas`` of a registration; malformed entries are ignored."""
    raw = data.get(OFFLINE_REPLICAS)
    if not isinstance(raw, list):
        return frozenset()
    out = set()
    for item in raw:
        if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str) \
                and isinstance(item[1], int) and not isinstance(item[1], bool):
            out.add((item[0], item[1]))
    return frozenset(out)


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


def shutting_down_brokers(store: Any) -> Set[int]:
    """Registered brokers that asked for a controlled shutdown."""
    return {b for b, reg in _read_registrations(store).items() if reg.shutting_down}


def live_brokers(store: Any) -> Dict[int, Optional[str]]:
    """Registered (live) broker id -> rack, sorted by id."""
    return {b: reg.rack for b, reg in sorted(_read_registrations(store).items())}


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


def merge_admin_request(store: Any, path: str,
                        merge: Callable[[Optional[Dict[str, Any]]], Dict[str, Any]]) -> None:
    """Create or update the request node ``path`` to ``merge(current data or None)`` by
    compare-and-set, so that requests made while the controller has not yet taken an
    earlier one are added to it rather than lost.  Raises BadVersion after
    MAX_CAS_ATTEMPTS conflicts."""
    for _ in range(MAX_CAS_ATTEMPTS):
        try:
            data, version = store.get(path)
        except NoNode:
            try:
                store.create(path, merge(None))
                return
            except NodeExists:
                continue
        try:
            store.set(path, merge(data if isinstance(data, dict) else None), version)
            return
        except (BadVersion, NoNode):
            continue  # taken by the controller or changed by another operator meanwhile
    raise BadVersion(f"{path} kept changing; try again")


def read_admin_result(store: Any, results_path: str, request_id: str) -> Optional[List[Dict[str, Any]]]:
    """The controller's answer to request ``request_id`` (None until it has processed it):
    the first answer under ``results_path`` that names it, oldest first."""
    try:
        names = store.children(results_path)
    except NoNode:
        return None
    for name in names:
        try:
            data, _ = store.get(f"{results_path}/{name}")
        except NoNode:
            continue
        answers = data.get("results") if isinstance(data, dict) else None
        if isinstance(answers, dict) and request_id in answers:
            return list(answers[request_id])
    return None


def reassignment_of(topic_data: Mapping[str, Any], partition: int
                    ) -> Optional[Tuple[List[int], List[int], List[int]]]:
    """``(replicas, adding, removing)`` of a partition being reassigned (its replicas are
    then the target replicas followed by the original ones not in the target), or None."""
    key = str(partition)
    adding = (topic_data.get(ADDING_REPLICAS) or {}).get(key)
    removing = (topic_data.get(REMOVING_REPLICAS) or {}).get(key)
    if adding is None and removing is None:
        return None
    return list(topic_data["partitions"][key]), list(adding or []), list(removing or [])


def _original_replicas(topic_data: Mapping[str, Any], key: str) -> List[int]:
    """The replicas ``key`` had before its reassignment (its replicas if none)."""
    current = list(topic_data["partitions"][key])
    derived = [b for b in current if b not in (topic_data.get(ADDING_REPLICAS) or {}).get(key, [])]
    kept = (topic_data.get(ORIGINAL_REPLICAS) or {}).get(key)
    return list(kept) if kept is not None and sorted(kept) == sorted(derived) else derived


def _reassignment_maps(topic_data: Mapping[str, Any]) -> Dict[str, Dict[str, List[int]]]:
    """Copies of a topic node's adding / removing / original replica maps."""
    return {name: dict(topic_data.get(name) or {}) for name in _REASSIGNMENT_KEYS}


def _with_reassignment_maps(topic_data: Mapping[str, Any], maps: Mapping[str, Dict[str, List[int]]],
                            partitions: Mapping[str, List[int]]) -> Dict[str, Any]:
    """The topic node with these partitions and maps (empty maps left out)."""
    new = dict(topic_data)
    new["partitions"] = dict(partitions)
    for name in _REASSIGNMENT_KEYS:
        if maps[name]:
            new[name] = maps[name]
        else:
            new.pop(name, None)
    return new


def _edit_throttled(config: Dict[str, Any], partition: int, remove: Optional[Mapping[str, List[int]]],
                    add: Optional[Mapping[str, List[int]]]) -> Dict[str, Any]:
    """``config`` with ``partition``'s throttled-replica entries ``remove`` taken out of
    and ``add`` put into leader/follower.replication.throttled.replicas (a "*" value is
    left alone; an emptied list goes back to the default)."""
    out = dict(config)
    for side, name in (("leader", LEADER_THROTTLED_REPLICAS), ("follower", FOLLOWER_THROTTLED_REPLICAS)):
        pairs = parse_throttled_replicas(out.get(name, ""), name)
        if pairs is None:
            continue
        edited = set(pairs) - {(partition, b) for b in (remove or {}).get(side, [])}
        edited |= {(partition, b) for b in (add or {}).get(side, [])}
        if edited:
            out[name] = format_throttled_replicas(edited)
        else:
            out.pop(name, None)
    return out


def check_reassignment(store: Any, topic: str, partition: int, replicas: Optional[Sequence[int]], *,
                       live: Optional[Set[int]] = None,
                       topic_data: Optional[Mapping[str, Any]] = None) -> None:
    """Kafka's checks of one AlterPartitionReassignments entry (``replicas`` None:
    cancel).  Raises UnknownTopicOrPartition, NoReassignmentInProgress (a cancellation of
    a partition not being reassigned), InvalidReplicaAssignment (an empty list, a
    duplicate, or a broker that is not registered).  ``live`` and ``topic_data`` save the
    reads when the caller has them."""
    if topic_data is None:
        topic_data = _topic_data(store, topic)
    if isinstance(partition, bool) or not isinstance(partition, int) \
            or str(partition) not in topic_data["partitions"]:
        raise UnknownTopicOrPartition(f"topic {topic!r} has no partition {partition!r}")
    if replicas is None:
        if reassignment_of(topic_data, partition) is None:
            raise NoReassignmentInProgress(f"{topic}-{partition} is not being reassigned: nothing to cancel")
        return
    if not isinstance(replicas, (list, tuple)) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in replicas):
        raise InvalidReplicaAssignment(f"{topic}-{partition}: replicas must be a list of broker ids, "
                                       f"got {replicas!r}")
    if not replicas:
        raise InvalidReplicaAssignment(f"{topic}-{partition}: the replica list is empty")
    if len(set(replicas)) != len(replicas):
        raise InvalidReplicaAssignment(f"{topic}-{partition}: the replica list {list(replicas)} has duplicates")
    live = set(live_brokers(store)) if live is None else live
    unknown = sorted(set(replicas) - live)
    if unknown:
        raise InvalidReplicaAssignment(f"{topic}-{partition}: broker(s) {unknown} are not registered "
                                       f"(live brokers: {sorted(live)})")


def _distinct(ids: Iterable[int]) -> List[int]:
    out: List[int] = []
    for b in ids:
        if b not in out:
            out.append(b)
    return out


def _request_ids(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A request node's ``{"<request id>": its own partitions or None}``."""
    requests = data.get("requests")
    return dict(requests) if isinstance(requests, dict) else {}


def _partition_key(entry: Any) -> Optional[Tuple[str, int]]:
    """``(topic, partition)`` of a request entry ``{"topic": t, "partition": p, ...}``, or
    None if it is malformed."""
    if not isinstance(entry, dict):
        return None
    topic, p = entry.get("topic"), entry.get("partition")
    if not isinstance(topic, str) or isinstance(p, bool) or not isinstance(p, int) or p < 0:
        return None
    return topic, p


# ---------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class _Decision:
    leader: int
    isr: Tuple[int, ...]
    reason: str
    unclean: bool = False
    routine: bool = False  #: an operator's doing (shutdown, reassignment): logged at INFO


def _decide(s: PartitionState, live: Set[int], unclean_enabled: bool,
            shutting: Set[int] = frozenset(),
            offline: Optional[Mapping[int, FrozenSet[Tuple[str, int]]]] = None) -> Optional[_Decision]:
    """What the controller writes for a partition given the live brokers and those
    shutting down (None: nothing).  Only a live broker that is not shutting down may be
    elected; the ISR keeps only live replicas that are not shutting down (and the leader).
    A broker whose replica of this partition is in ``offline`` (broker -> its replicas in
    failed log directories) counts as down for this partition."""
    if offline:
        down = {b for b, reps in offline.items() if (s.topic, s.partition) in reps}
        if down:
            live = set(live) - down
    eligible = live - shutting
    reps = set(s.replicas)
    isr_set = set(s.isr)
    if s.leader != NO_LEADER and s.leader in live:
        move = None
        if s.leader in shutting:
            move = f"controlled shutdown of broker {s.leader}"
        elif s.leader not in reps:
            move = f"broker {s.leader} is no longer a replica"
        if move is not None:
            # Clean only: another ISR member takes over, or the leader stays until it goes.
            cands = [b for b in s.replicas if b in eligible and b in isr_set]
            if cands:
                isr = tuple(b for b in s.isr if b in eligible and b in reps)
                return _Decision(cands[0], isr, f"clean election: {move}", routine=True)
        keep = tuple(b for b in s.isr if b == s.leader or (b in live and b in reps and b not in shutting))
        if keep and keep != s.isr:
            gone = [b for b in s.isr if b not in keep]
            dead = [b for b in gone if b not in live]
            parts = [f"broker(s) {dead} offline"] if dead else []
            stopping = [b for b in gone if b in live and b in shutting]
            if stopping:
                parts.append(f"broker(s) {stopping} shutting down")
            moved = [b for b in gone if b in live and b not in shutting]
            if moved:
                parts.append(f"broker(s) {moved} no longer replicas")
            return _Decision(s.leader, keep, ", ".join(parts), routine=not dead)
        return None
    clean = [b for b in s.replicas if b in eligible and b in isr_set]
    why = (f"leader {s.leader} offline" if s.leader != NO_LEADER else "partition was offline")
    if clean:
        return _Decision(clean[0], tuple(b for b in s.isr if b in eligible and b in reps),
                         f"clean election: {why}")
    alive = [b for b in s.replicas if b in eligible]
    if unclean_enabled and alive:
        return _Decision(alive[0], (alive[0],), f"unclean election: {why}, no ISR member alive",
                         unclean=True)
    if s.leader == NO_LEADER:
        return None
    return _Decision(NO_LEADER, s.isr, f"{why}, no eligible replica alive")


def _decide_preferred(s: PartitionState, eligible: Set[int],
                      offline: Optional[Mapping[int, FrozenSet[Tuple[str, int]]]] = None) -> Optional[_Decision]:
    pref = s.preferred_leader
    if offline and (s.topic, s.partition) in offline.get(pref, frozenset()):
        return None
    if s.leader != pref and pref in eligible and pref in s.isr:
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
        self._registrations: Dict[int, _Registration] = {}
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
        self._process_admin_requests(now)  # those left by the previous controller
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
        synced = False
        if any(e.path == BROKER_IDS_PATH or e.path.startswith(BROKER_IDS_PATH + "/") for e in events):
            synced = self._sync_brokers(now)  # True: every topic was reconciled
        topics = [] if synced else sorted({e.path.split("/")[3] for e in events
                                           if e.path.startswith(TOPICS_PATH + "/")})
        live = set(self._registrations)
        for topic in topics:
            if not self._active:
                return
            if self.store.exists(topic_path(topic)):
                self._reconcile_topic(topic, live, now)
        if self._active and any(e.path in _REQUEST_PATHS and e.kind != "deleted" for e in events):
            self._process_admin_requests(now)

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
            self._process_admin_requests(now)
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
            self.log.warning("broker(s) %s restarted unseen: handled as offline, then online", sorted(bounced),
                             extra=self._event("broker_leave"))
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
        bounced = {b for b in old.keys() & new.keys() if old[b].owner != new[b].owner}
        died = sorted(old.keys() - new.keys())
        returned = sorted(new.keys() - old.keys())
        stopping = sorted(b for b in new.keys() - bounced
                          if new[b].shutting_down and not (b in old and old[b].shutting_down))
        failed = {b: new[b].offline - old[b].offline for b in sorted(old.keys() & new.keys() - bounced)
                  if new[b].offline != old[b].offline}
        failed.update({b: new[b].offline for b in returned + sorted(bounced) if new[b].offline})
        self._registrations = new
        if not (died or returned or bounced or stopping or failed):
            return False
        for b, reps in failed.items():
            if reps:
                names = ", ".join(f"{t}-{p}" for t, p in sorted(reps))
                self.log.warning("broker %d reports %d replica(s) offline after a log directory failure (%s): "
                                 "moving their leaderships and taking them out of the ISRs", b, len(reps), names)
        for b in died:
            self.log.warning("broker %d is offline (its registration is gone)", b, extra=self._event("broker_leave"))
        for b in returned:
            self.log.info("broker %d is online (rack %s)", b, new[b].rack, extra=self._event("broker_join"))
        for b in stopping:
            self.log.info("broker %d is shutting down (controlled shutdown): moving its leaderships "
                          "to other in-sync replicas and taking it out of the ISRs", b,
                          extra=self._event("broker_leave"))
        for b in sorted(bounced):
            self.log.warning("broker %d restarted (new registration): handled as offline, then online", b,
                             extra=self._event("broker_leave"))
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
        """Reconcile every partition; first those whose leader changes, over all topics
        (as Kafka's controller moves leaderships before it takes replicas out of ISRs):
        each write is a round trip, and a partition without a leader, or whose leader
        is shutting down, stalls its producers until its turn, while an ISR that still
        names a broker that stopped fetching stalls only acks=all."""
        topics = self._topics()
        for leaders_only in (True, False):
            for topic in topics:
                if not self._active:
                    return
                self._reconcile_topic(topic, live, now, leaders_only=leaders_only)

    def _reconcile_topic(self, topic: str, live: Set[int], now: int, *,
                         leaders_only: Optional[bool] = None) -> None:
        """Write what :func:`_decide` says for each partition of ``topic``; with
        ``leaders_only`` True only the decisions that change the leader, False only the
        others, None all (:meth:`_reconcile_all` makes the first two passes: a partition
        is tried in one of them)."""
        try:
            data = _topic_data(self.store, topic)
        except UnknownTopicOrPartition:
            return
        unclean = self._unclean_enabled(data)
        shutting = self._shutting_down()
        offline = self._offline()

        def decide(s: PartitionState) -> Optional[_Decision]:
            d = _decide(s, live, unclean, shutting, offline)
            if d is None or leaders_only is None or leaders_only == (d.leader != s.leader):
                return d
            return None

        for p, replicas in sorted(data["partitions"].items(), key=lambda kv: int(kv[0])):
            if not self._active:
                return
            self._update_partition(topic, int(p), replicas, decide, now)
        reassigning = data.get(ADDING_REPLICAS) or data.get(REMOVING_REPLICAS)
        if leaders_only is not True and self._active and reassigning:
            self._complete_reassignments(topic, live, now)

    def _offline(self) -> Dict[int, FrozenSet[Tuple[str, int]]]:
        """Broker -> its replicas in failed log directories (as of the last registrations read)."""
        return {b: reg.offline for b, reg in self._registrations.items() if reg.offline}

    def _shutting_down(self) -> Set[int]:
        """Live brokers in controlled shutdown (as of the last registrations read)."""
        return {b for b, reg in self._registrations.items() if reg.shutting_down}

    def _eligible(self) -> Set[int]:
        """Brokers that may be elected leader: live and not shutting down."""
        return {b for b, reg in self._registrations.items() if not reg.shutting_down}

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

    def _event(self, kind: str) -> Dict[str, Any]:
        """The ``extra`` of a log record that is an operator's event (see
        :mod:`pylog.server.events`): its kind, and this broker as the one that logged it."""
        return {"pylog_event": kind, "pylog_broker": self.broker_id}

    def _record(self, old: PartitionState, new: PartitionState, d: _Decision, now: int) -> None:
        """Log a change and count it; an unclean election also goes to the loss ledger."""
        tp = f"{new.topic}-{new.partition}"
        if new.leader == old.leader:
            self._counters["controller_isr_shrinks"] += 1
            self.log.log(logging.INFO if d.routine else logging.WARNING, "%s: ISR %s -> %s (%s)", tp,
                         list(old.isr), list(new.isr), d.reason,
                         extra=self._event("isr_shrink" if set(old.isr) - set(new.isr) else "isr_expand"))
            return
        if new.leader == NO_LEADER:
            self._counters["offline_transitions"] += 1
            self.log.warning("%s is offline at leader epoch %d: %s; ISR kept as %s", tp,
                             new.leader_epoch, d.reason, list(new.isr), extra=self._event("partition_offline"))
            return
        self._counters["leader_elections"] += 1
        if d.unclean:
            self._counters["unclean_leader_elections"] += 1
            self.log.error("%s: UNCLEAN leader election: broker %d leads at epoch %d although it "
                           "was not in the ISR %s; records it does not have are lost (%s)",
                           tp, new.leader, new.leader_epoch, list(old.isr), d.reason,
                           extra=self._event("election_unclean"))
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
                     new.leader, new.leader_epoch, list(old.isr), list(new.isr), d.reason,
                     extra=self._event("election_clean"))

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
            moving = reassignment_of(data, 0)  # partition 0's target replicas give the factor
            rf = len(data["partitions"]["0"]) - (len(moving[2]) if moving else 0)
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
        """Move leadership to each partition's first replica where it is alive, not
        shutting down, in the ISR and not leading (of ``topics``, default all); returns
        the partitions moved.  Raises NotController, UnknownTopicOrPartition for a named
        topic that is absent."""
        self._require_active()
        targets = None
        if topics is not None:
            targets = [(t, int(p)) for t in topics for p in _topic_data(self.store, t)["partitions"]]
        self._sync_brokers(now)
        if not self._active:
            raise NotController(f"broker {self.broker_id} is not the controller")
        return [tp for tp, error in self._elect_preferred(now, targets).items() if error == "NONE"]

    def _elect_preferred(self, now: int, targets: Optional[Sequence[Tuple[str, int]]]
                         ) -> Dict[Tuple[str, int], str]:
        """The preferred leader election of ``targets`` (None: every partition), as
        ElectLeaders answers it per partition: "NONE" (moved), "ELECTION_NOT_NEEDED",
        "PREFERRED_LEADER_NOT_AVAILABLE" (not alive, shutting down or not in the ISR),
        "UNKNOWN_TOPIC_OR_PARTITION"."""
        if targets is None:
            targets = self._all_partitions()
        eligible = self._eligible()
        out: Dict[Tuple[str, int], str] = {}
        for topic, p in sorted(targets, key=lambda tp: (tp[0], tp[1])):
            if not self._active:
                break
            try:
                s = read_partition_state(self.store, topic, p)
            except UnknownTopicOrPartition:
                out[(topic, p)] = "UNKNOWN_TOPIC_OR_PARTITION"
                continue
            if s.leader == s.preferred_leader:
                out[(topic, p)] = "ELECTION_NOT_NEEDED"
            elif self._update_partition(topic, p, s.replicas,
                                        lambda st: _decide_preferred(st, eligible, self._offline()), now):
                out[(topic, p)] = "NONE"
            else:
                out[(topic, p)] = "PREFERRED_LEADER_NOT_AVAILABLE"
        return out

    # ------------------------------------------------------------------ operator requests
    def _process_admin_requests(self, now: int) -> None:
        """Carry out the requests waiting under /admin (see the module docstring)."""
        self._process_request(PREFERRED_ELECTION_PATH, PREFERRED_ELECTION_RESULTS_PATH,
                              self._carry_out_preferred_election, now)
        self._process_request(REASSIGN_PARTITIONS_PATH, REASSIGN_RESULTS_PATH,
                              self._carry_out_reassignments, now)
        self._process_request(UNCLEAN_ELECTION_PATH, UNCLEAN_ELECTION_RESULTS_PATH,
                              self._carry_out_unclean_election, now)

    def _process_request(self, path: str, results_path: str,
                         carry_out: Callable[[Dict[str, Any], int], Dict[Tuple[str, int], Dict[str, Any]]],
                         now: int) -> None:
        """Take the request node ``path``, carry it out, write each request's answer under
        ``results_path`` and delete the node (compare-and-set: a request merged into it
        meanwhile makes us carry it out again; the first answer to a request id stands)."""
        for _ in range(MAX_CAS_ATTEMPTS):
            if not self._active:
                return
            try:
                data, version = self.store.get(path)
            except NoNode:
                return
            if not isinstance(data, dict):
                self.log.warning("%s holds %r, not a request; deleting it", path, data)
                data = {}
            outcome = carry_out(data, now)
            if not self._active:
                return  # resigned midway: the next controller carries it out
            answers: Dict[str, List[Dict[str, Any]]] = {}
            for rid, wanted in _request_ids(data).items():
                if wanted is None:
                    answers[str(rid)] = [entry for _, entry in sorted(outcome.items())]
                    continue
                keys = sorted({(k[0], k[1]) for k in wanted if isinstance(k, list) and len(k) == 2})
                # Absent from the outcome: not a partition of any topic ("all" covers only those).
                answers[str(rid)] = [outcome.get(tp) or {"topic": tp[0], "partition": tp[1],
                                                         "error": "UNKNOWN_TOPIC_OR_PARTITION"}
                                     for tp in keys]
            self._write_answer(results_path, {"results": answers, "controller_epoch": self._epoch,
                                              "at_ms": now})
            try:
                self.store.delete(path, version)
                return
            except BadVersion:
                continue
            except NoNode:
                return
        self._dirty = True  # kept changing: again at the next tick

    def _write_answer(self, results_path: str, answer: Dict[str, Any]) -> None:
        """Add ``answer`` as ``result-<n>`` (n one past the newest; numbered here rather
        than by the store's sequential counter, which a store restored from a copy, as
        LocalCluster's, would start again at 0) and drop the oldest past
        MAX_ADMIN_RESULTS."""
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                names = self.store.children(results_path)
            except NoNode:
                names = []
            numbers = [int(n[7:]) for n in names if n.startswith("result-") and n[7:].isdigit()]
            try:
                self.store.create(f"{results_path}/result-{max(numbers, default=-1) + 1:010d}", answer)
                break
            except NodeExists:
                continue  # another writer took that number: count again
        names = self.store.children(results_path)
        for name in names[:max(0, len(names) - MAX_ADMIN_RESULTS)]:
            try:
                self.store.delete(f"{results_path}/{name}")
            except NoNode:
                pass

    def _request_targets(self, data: Dict[str, Any], path: str) -> Optional[List[Tuple[str, int]]]:
        """The partitions an election request lists (None: every partition)."""
        entries = data.get("partitions")
        if entries is None:
            return None
        targets = []
        for entry in entries if isinstance(entries, list) else [entries]:
            tp = _partition_key(entry)
            if tp is None:
                self.log.warning("%s: ignoring malformed entry %r", path, entry)
            else:
                targets.append(tp)
        return targets

    def _all_partitions(self) -> List[Tuple[str, int]]:
        out: List[Tuple[str, int]] = []
        for topic in self._topics():
            try:
                out += [(topic, int(p)) for p in _topic_data(self.store, topic)["partitions"]]
            except UnknownTopicOrPartition:
                continue
        return out

    def _carry_out_unclean_election(self, data: Dict[str, Any], now: int
                                    ) -> Dict[Tuple[str, int], Dict[str, Any]]:
        """``/admin/unclean_leader_election``: give each listed partition without a live
        leader one, out of the ISR if need be (see the module docstring)."""
        self._sync_brokers(now)
        targets = self._request_targets(data, UNCLEAN_ELECTION_PATH)
        live = set(self._registrations)
        shutting = self._shutting_down()

        offline = self._offline()

        def decide(st: PartitionState) -> Optional[_Decision]:
            d = _decide(st, live, True, shutting, offline)
            if d is None or d.leader == NO_LEADER:
                return None  # nobody to elect: leave the partition as it is
            return replace(d, reason=d.reason + " (elected on request)") if d.unclean else d

        out: Dict[Tuple[str, int], Dict[str, Any]] = {}
        for topic, p in sorted(self._all_partitions() if targets is None else targets):
            if not self._active:
                break
            try:
                s = read_partition_state(self.store, topic, p)
            except UnknownTopicOrPartition:
                out[(topic, p)] = {"topic": topic, "partition": p, "error": "UNKNOWN_TOPIC_OR_PARTITION",
                                   "leader": NO_LEADER}
                continue
            if s.leader != NO_LEADER and s.leader in live:
                error, leader = "ELECTION_NOT_NEEDED", s.leader
            else:
                new = self._update_partition(topic, p, s.replicas, decide, now)
                error = "NONE" if new is not None else "ELIGIBLE_LEADERS_NOT_AVAILABLE"
                leader = new.leader if new is not None else s.leader
            out[(topic, p)] = {"topic": topic, "partition": p, "error": error, "leader": leader}
        elected = sorted(tp for tp, e in out.items() if e["error"] == "NONE")
        self.log.warning("unclean leader election on request (%s): %d partition(s) got a leader %s",
                         "all partitions" if targets is None else f"{len(targets)} partition(s)",
                         len(elected), [f"{t}-{p}" for t, p in elected[:20]])
        return out

    def _carry_out_preferred_election(self, data: Dict[str, Any], now: int
                                      ) -> Dict[Tuple[str, int], Dict[str, Any]]:
        """``/admin/preferred_replica_election``: elect the preferred leader of the listed
        partitions (every partition when "partitions" is absent or null)."""
        self._sync_brokers(now)
        targets = self._request_targets(data, PREFERRED_ELECTION_PATH)
        out: Dict[Tuple[str, int], Dict[str, Any]] = {}
        for tp, error in self._elect_preferred(now, targets).items():
            try:
                leader = read_partition_state(self.store, tp[0], tp[1]).leader
            except UnknownTopicOrPartition:
                leader = NO_LEADER
            out[tp] = {"topic": tp[0], "partition": tp[1], "error": error, "leader": leader}
        moved = sorted(tp for tp, e in out.items() if e["error"] == "NONE")
        self.log.info("preferred leader election on request (%s): moved %d partition(s) %s; %d unchanged",
                      "all partitions" if targets is None else f"{len(targets)} partition(s)", len(moved),
                      [f"{t}-{p}" for t, p in moved[:20]], len(out) - len(moved))
        return out

    # ------------------------------------------------------------------ reassignments
    def _carry_out_reassignments(self, data: Dict[str, Any], now: int
                                 ) -> Dict[Tuple[str, int], Dict[str, Any]]:
        """``/admin/reassign_partitions``: start (or replace, or cancel) the reassignment of
        each listed partition (a later entry for the same partition wins)."""
        self._sync_brokers(now)
        wanted: Dict[str, Dict[int, Tuple[Optional[List[int]], Optional[int]]]] = {}
        out: Dict[Tuple[str, int], Dict[str, Any]] = {}
        entries = data.get("partitions")
        for entry in entries if isinstance(entries, list) else []:
            tp = _partition_key(entry)
            if tp is None:
                self.log.warning("%s: ignoring malformed entry %r", REASSIGN_PARTITIONS_PATH, entry)
                continue
            throttle = entry.get("throttle")
            if isinstance(throttle, bool) or not isinstance(throttle, int) or throttle < 1:
                throttle = None
            wanted.setdefault(tp[0], {})[tp[1]] = (entry.get("replicas"), throttle)
        for topic in sorted(wanted):
            if not self._active:
                break
            for p, (error, message) in self._reassign_topic(topic, wanted[topic], now).items():
                out[(topic, p)] = {"topic": topic, "partition": p, "error": error, "message": message}
        return out

    def _reassign_topic(self, topic: str, wanted: Dict[int, Tuple[Optional[List[int]], Optional[int]]],
                        now: int) -> Dict[int, Tuple[str, str]]:
        """Start the reassignments of ``topic``'s partitions (``wanted``: partition ->
        (target replicas or None to cancel, throttle in bytes/s or None)): validate each,
        then write the topic node once (compare-and-set) with each partition's replicas =
        target + original (Kafka's order) and its adding / removing replicas.  A
        cancellation (or a new target equal to the original replicas) reverts to the
        original replicas at once.  Replicas that the new assignment drops (those a
        replaced or cancelled reassignment was adding) first hand over leadership (clean
        election) and leave the ISR after the write.  With a throttle, the original
        replicas are throttled as leaders and the added ones as followers (topic
        configs) and the cluster-wide rate is set.  Returns partition -> (Kafka error
        name, message)."""
        live = set(self._registrations)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, version = self.store.get(topic_path(topic))
            except NoNode:
                return {p: ("UNKNOWN_TOPIC_OR_PARTITION", f"topic {topic!r} does not exist") for p in wanted}
            maps = _reassignment_maps(data)
            adding, removing = maps[ADDING_REPLICAS], maps[REMOVING_REPLICAS]
            results: Dict[int, Tuple[str, str]] = {}
            # partition -> (current replicas, final replicas, (adding, removing) or None: no reassignment)
            plans: Dict[int, Tuple[List[int], List[int], Optional[Tuple[List[int], List[int]]]]] = {}
            for p, (target, _) in sorted(wanted.items()):
                try:
                    check_reassignment(self.store, topic, p, target, live=live, topic_data=data)
                except PylogError as exc:
                    results[p] = (exc.kafka_name, str(exc))
                    continue
                key = str(p)
                current = list(data["partitions"][key])
                original = _original_replicas(data, key)
                ongoing = key in adding or key in removing
                target = original if target is None else list(target)
                results[p] = ("NONE", "")
                if target == original:
                    if ongoing:  # a cancellation: back to the original replicas at once
                        plans[p] = (current, original, None)
                elif ongoing or target != current:
                    final = _distinct(target + original)
                    moving = ([b for b in target if b not in original], [b for b in original if b not in target])
                    same = final == current and list(moving) == [adding.get(key), removing.get(key)] \
                        and wanted[p][1] is None and key not in maps[THROTTLED_REPLICAS]
                    if not same:  # (else: the same reassignment again, nothing to write)
                        plans[p] = (current, final, moving)
            for p, (current, final, _) in list(plans.items()):
                dropped = [b for b in current if b not in final]
                if dropped and not self._lead_from(topic, p, current, final, now):
                    results[p] = ("ELIGIBLE_LEADERS_NOT_AVAILABLE",
                                  (f"{topic}-{p}: its leader is among {dropped}, which the new assignment "
                                   "drops, and no other replica is alive and in the ISR"))
                    del plans[p]
            if not plans:
                return results
            parts = dict(data["partitions"])
            config = dict(data.get("config") or {})
            rate = None
            for p, (current, final, moving) in plans.items():
                key = str(p)
                original = _original_replicas(data, key)
                parts[key] = final
                throttled = maps[THROTTLED_REPLICAS].get(key)
                for m in maps.values():
                    m.pop(key, None)
                if moving is not None:
                    adding[key], removing[key] = moving
                    maps[ORIGINAL_REPLICAS][key] = original
                new_throttle = wanted[p][1] if moving is not None else None
                if new_throttle is not None:
                    rate = new_throttle if rate is None else min(rate, new_throttle)
                    maps[THROTTLED_REPLICAS][key] = {"leader": original, "follower": moving[0]}
                config = _edit_throttled(config, p, throttled, maps[THROTTLED_REPLICAS].get(key))
            new = _with_reassignment_maps(data, maps, parts)
            new["config"] = config
            try:
                self.store.set(topic_path(topic), new, version)
            except BadVersion:
                continue
            if rate is not None:
                set_replication_throttle(self.store, rate, by_reassignment=True)
                self.log.info("replication throttle for reassignments: %d bytes/s (leader and follower side)", rate)
            elif data.get(THROTTLED_REPLICAS):
                self._clear_reassignment_throttle()
            for p, (current, final, moving) in sorted(plans.items()):
                if moving is None:
                    self.log.info("reassignment of %s-%d cancelled: replicas %s -> %s (the original ones)",
                                  topic, p, current, final)
                else:
                    self.log.info("reassignment of %s-%d started: replicas %s -> %s (adding %s, removing %s)",
                                  topic, p, current, final, moving[0], moving[1])
            # Dropped replicas leave the ISR; a reassignment already caught up completes.
            self._reconcile_topic(topic, set(self._registrations), now)
            return results
        return {p: ("REQUEST_TIMED_OUT", f"topic {topic!r} kept changing") for p in wanted}

    def _clear_reassignment_throttle(self) -> None:
        """Remove the cluster-wide throttle rate a reassignment set, once no partition is
        throttled by a reassignment any more."""
        for topic in self._topics():
            try:
                if _topic_data(self.store, topic).get(THROTTLED_REPLICAS):
                    return
            except UnknownTopicOrPartition:
                continue
        try:
            data, _ = self.store.get(DEFAULT_BROKER_CONFIG_PATH)
        except NoNode:
            return
        if isinstance(data, dict) and data.get(REASSIGNMENT_MARK):
            set_replication_throttle(self.store, None)
            self.log.info("replication throttle for reassignments removed: no throttled reassignment is left")

    def _lead_from(self, topic: str, partition: int, replicas: Sequence[int], allowed: Sequence[int],
                   now: int) -> bool:
        """Make sure the partition's leader is in ``allowed``: if it is not, elect the first
        member of ``allowed`` that is eligible and in the ISR (clean; the epoch goes up).
        Returns whether the leader is now in ``allowed`` (an offline partition counts as
        done: its next election picks from the new replicas)."""
        eligible = self._eligible()

        def decide(s: PartitionState) -> Optional[_Decision]:
            if s.leader == NO_LEADER or s.leader in allowed:
                return None
            cands = [b for b in allowed if b in eligible and b in s.isr]
            if not cands:
                return None
            return _Decision(cands[0], s.isr, f"reassignment: leader {s.leader} is not among {list(allowed)}",
                             routine=True)

        self._update_partition(topic, partition, replicas, decide, now)
        try:
            s = read_partition_state(self.store, topic, partition, replicas)
        except UnknownTopicOrPartition:
            return False
        return s.leader == NO_LEADER or s.leader in allowed

    def _complete_reassignments(self, topic: str, live: Set[int], now: int) -> None:
        """Finish the reassignments of ``topic`` whose target replicas are all in the ISR
        (Kafka's rule): lead from the target replicas (a clean election if the leader is
        not one of them), then make the assignment exactly the target replicas (one
        compare-and-set of the topic node), then take the removed replicas out of the ISR;
        their brokers delete them when they see the new assignment."""
        for _ in range(MAX_CAS_ATTEMPTS):
            if not self._active:
                return
            try:
                data, version = self.store.get(topic_path(topic))
            except NoNode:
                return
            maps = _reassignment_maps(data)
            adding, removing = maps[ADDING_REPLICAS], maps[REMOVING_REPLICAS]
            ready: List[Tuple[int, List[int], List[int]]] = []
            for key in sorted(set(adding) | set(removing), key=int):
                current = list(data["partitions"][key])
                target = [b for b in current if b not in removing.get(key, [])]
                try:
                    s = read_partition_state(self.store, topic, int(key), current)
                except UnknownTopicOrPartition:
                    continue
                if not set(target) <= set(s.isr) or s.leader == NO_LEADER:
                    continue
                if self._lead_from(topic, int(key), current, target, now):
                    ready.append((int(key), current, target))
            if not ready:
                return
            parts = dict(data["partitions"])
            config = dict(data.get("config") or {})
            unthrottled = False
            for p, _, target in ready:
                parts[str(p)] = target
                throttled = maps[THROTTLED_REPLICAS].get(str(p))
                if throttled is not None:
                    config = _edit_throttled(config, p, throttled, None)
                    unthrottled = True
                for m in maps.values():
                    m.pop(str(p), None)
            new = _with_reassignment_maps(data, maps, parts)
            new["config"] = config
            try:
                self.store.set(topic_path(topic), new, version)
            except BadVersion:
                continue
            if unthrottled:
                self._clear_reassignment_throttle()
            decide = functools.partial(_decide, live=live, unclean_enabled=self._unclean_enabled(data),
                                       shutting=self._shutting_down(), offline=self._offline())
            for p, current, target in ready:
                self.log.info("reassignment of %s-%d complete: replicas %s -> %s", topic, p, current, target)
                self._update_partition(topic, p, target, decide, now)  # the removed replicas leave the ISR
            return

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
        ``reassigning_partitions``: partitions with a reassignment in progress.
        """
        out = {"active_controller": int(self._active), "controller_epoch": 0,
               "live_brokers": len(_read_registrations(self.store)), "global_topic_count": 0,
               "global_partition_count": 0, "offline_partitions": 0,
               "under_replicated_partitions": 0, "under_min_isr_partitions": 0,
               "preferred_replica_imbalance": 0, "reassigning_partitions": 0,
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
            out["reassigning_partitions"] += len(set(data.get(ADDING_REPLICAS) or {})
                                                 | set(data.get(REMOVING_REPLICAS) or {}))
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
