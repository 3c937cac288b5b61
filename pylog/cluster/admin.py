"""Operator requests that only the controller can carry out, made through the store.

The broker an operator talks to is often not the controller, so, as in Kafka's
ZooKeeper mode, such requests are written to the metadata store and the controller —
wherever it runs — carries them out (the node layouts are in
:mod:`pylog.cluster.controller`'s docstring).  Every helper here takes the store and
nothing else of the cluster: it works on any broker, controller or not.

- **Controlled shutdown**: :func:`request_controlled_shutdown` marks the broker's own
  registration; :func:`leaderships` tells the stopping broker what it still leads.
- **Preferred leader election** (Kafka's ElectLeaders, type PREFERRED):
  :func:`request_preferred_election`, then :func:`preferred_election_result`.
- **Unclean leader election on request** (ElectLeaders, type UNCLEAN, KIP-460):
  :func:`request_unclean_election`, then :func:`unclean_election_result`.
- **Partition reassignment** (KIP-455's AlterPartitionReassignments and
  ListPartitionReassignments): :func:`request_reassignment`, then
  :func:`reassignment_result`; :func:`list_reassignments` reads the reassignments in
  progress from the topic nodes.

A request returns a request id at once.  Requests made before the controller took the
previous one are merged into it (the node is Kafka's single znode); the controller
answers each request id with its own partitions' outcomes, as Kafka error names
("NONE" for success), under a results node that any broker can poll.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pylog.cluster.controller import (
    PREFERRED_ELECTION_PATH,
    PREFERRED_ELECTION_RESULTS_PATH,
    REASSIGN_PARTITIONS_PATH,
    REASSIGN_RESULTS_PATH,
    OFFLINE_REPLICAS,
    SHUTTING_DOWN,
    UNCLEAN_ELECTION_PATH,
    UNCLEAN_ELECTION_RESULTS_PATH,
    TOPICS_PATH,
    broker_path,
    check_reassignment,
    live_brokers,
    merge_admin_request,
    partition_state_path,
    read_admin_result,
    reassignment_of,
    shutting_down_brokers,
    topic_path,
)
from pylog.errors import (
    BadVersion,
    BrokerNotAvailable,
    ElectionNotNeeded,
    EligibleLeadersNotAvailable,
    InvalidArgument,
    InvalidConfig,
    InvalidReplicaAssignment,
    InvalidRequest,
    NoNode,
    NoReassignmentInProgress,
    PreferredLeaderNotAvailable,
    PylogError,
    UnknownTopicOrPartition,
)
from pylog.util import check_int

__all__ = [
    "error_for",
    "leaderships",
    "list_reassignments",
    "preferred_election_result",
    "reassignment_result",
    "report_offline_replicas",
    "request_controlled_shutdown",
    "request_preferred_election",
    "request_reassignment",
    "request_unclean_election",
    "unclean_election_result",
]

TopicPartition = Tuple[str, int]


# ------------------------------------------------------------------ controlled shutdown
def request_controlled_shutdown(store: Any, broker_id: int) -> None:
    """Mark ``broker_id``'s registration ``"shutting_down": true`` (compare-and-set; the
    registration's other fields are kept).  The controller then moves the broker's
    leaderships to other in-sync replicas and takes it out of the ISRs it is in (Kafka's
    ControlledShutdown).  Idempotent.  Raises BrokerNotAvailable if the broker is not
    registered."""
    _set_registration_field(store, broker_id, SHUTTING_DOWN, True)


def report_offline_replicas(store: Any, broker_id: int, replicas: Iterable[Tuple[str, int]]) -> None:
    """Set ``broker_id``'s registration ``"offline_replicas"`` to ``replicas`` (its
    replicas in failed log directories; compare-and-set, the other fields kept).  The
    controller then handles them as down: leadership moves, they leave the ISRs.
    Raises BrokerNotAvailable if the broker is not registered."""
    _set_registration_field(store, broker_id, OFFLINE_REPLICAS, sorted([t, p] for t, p in replicas))


def _set_registration_field(store: Any, broker_id: int, key: str, value: Any) -> None:
    """Set one field of a broker's ephemeral registration by compare-and-set, keeping
    the others (read again after a conflict); nothing is written if it already holds
    ``value``.  BrokerNotAvailable if the broker is not registered."""
    check_int("broker id", broker_id, min=0)
    path = broker_path(broker_id)
    while True:
        try:
            data, version = store.get(path)
        except NoNode:
            raise BrokerNotAvailable(f"broker {broker_id} is not registered") from None
        data = dict(data) if isinstance(data, dict) else {}
        if key in data and data[key] == value:
            return
        data[key] = value
        try:
            store.set(path, data, version)
            return
        except BadVersion:
            continue  # the registration changed meanwhile: read it again
        except NoNode:
            raise BrokerNotAvailable(f"broker {broker_id} is not registered") from None


def leaderships(store: Any, broker_id: int, *, movable_only: bool = False) -> List[TopicPartition]:
    """The partitions whose state names ``broker_id`` as leader, sorted.  With
    ``movable_only``, only those the controller could move elsewhere now: another
    replica is live, not shutting down and in the ISR (a controlled shutdown waits for
    these; the others keep their leader until the broker is gone)."""
    live = set(live_brokers(store))
    eligible = live - shutting_down_brokers(store)
    out: List[TopicPartition] = []
    try:
        topics = store.children(TOPICS_PATH)
    except NoNode:
        return out
    for topic in topics:
        try:
            data, _ = store.get(topic_path(topic))
        except NoNode:
            continue
        for p, replicas in data["partitions"].items():
            try:
                st, _ = store.get(partition_state_path(topic, int(p)))
            except NoNode:
                continue
            if st["leader"] != broker_id:
                continue
            if movable_only and not any(b != broker_id and b in eligible and b in st["isr"] for b in replicas):
                continue
            out.append((topic, int(p)))
    return sorted(out)


# ------------------------------------------------------------------ preferred leader election
def request_preferred_election(store: Any, partitions: Optional[Iterable[TopicPartition]] = None) -> str:
    """Ask the controller to move leadership of ``partitions`` (``(topic, partition)``
    pairs; None: every partition of every topic) back to their preferred (first)
    replica, through Kafka's ``/admin/preferred_replica_election`` node
    (``{"version": 1, "partitions": [{"topic": t, "partition": p}, ...]}``; "partitions"
    absent means all).  Returns the request id for :func:`preferred_election_result`.
    Raises InvalidArgument for an empty or malformed list (pass None for all)."""
    return _request_election(store, PREFERRED_ELECTION_PATH, partitions)


def request_unclean_election(store: Any, partitions: Optional[Iterable[TopicPartition]] = None) -> str:
    """Ask the controller to give each of ``partitions`` (None: every partition) that
    has no live leader one: the first live ISR member, else the first live replica even
    though it is out of the ISR (records it lacks are lost: the controller logs ERROR and
    writes the loss ledger), whatever the topic's unclean.leader.election.enable.  Same
    request layout as :func:`request_preferred_election`, under
    ``/admin/unclean_leader_election``; returns the id for :func:`unclean_election_result`."""
    return _request_election(store, UNCLEAN_ELECTION_PATH, partitions)


def unclean_election_result(store: Any, request_id: str) -> Optional[Dict[TopicPartition, Dict[str, Any]]]:
    """The outcome of a :func:`request_unclean_election` (None until carried out): per
    partition ``{"error", "leader"}`` with "NONE" (it has a leader now),
    "ELECTION_NOT_NEEDED" (it had a live one), "ELIGIBLE_LEADERS_NOT_AVAILABLE" (no
    replica alive) or "UNKNOWN_TOPIC_OR_PARTITION"."""
    answer = read_admin_result(store, UNCLEAN_ELECTION_RESULTS_PATH, request_id)
    if answer is None:
        return None
    return {(e["topic"], e["partition"]): {"error": e["error"], "leader": e.get("leader", -1)} for e in answer}


def _request_election(store: Any, path: str, partitions: Optional[Iterable[TopicPartition]]) -> str:
    wanted = None if partitions is None else _partitions(partitions)
    rid = uuid.uuid4().hex

    def merge(current: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        requests = dict((current or {}).get("requests") or {})
        requests[rid] = None if wanted is None else [[t, p] for t, p in wanted]
        if wanted is None or (current is not None and current.get("partitions") is None):
            return {"version": 1, "requests": requests}  # every partition
        union = list(current["partitions"]) if current is not None else []
        seen = {(e.get("topic"), e.get("partition")) for e in union if isinstance(e, dict)}
        union += [{"topic": t, "partition": p} for t, p in wanted if (t, p) not in seen]
        return {"version": 1, "partitions": union, "requests": requests}

    merge_admin_request(store, path, merge)
    return rid


def preferred_election_result(store: Any, request_id: str) -> Optional[Dict[TopicPartition, Dict[str, Any]]]:
    """The outcome of a :func:`request_preferred_election` (None until the controller has
    carried it out): per partition ``{"error": Kafka error name, "leader": id}`` with
    "NONE" (leadership moved to the preferred replica), "ELECTION_NOT_NEEDED" (it already
    led), "PREFERRED_LEADER_NOT_AVAILABLE" (not alive, shutting down or not in the ISR)
    or "UNKNOWN_TOPIC_OR_PARTITION"."""
    answer = read_admin_result(store, PREFERRED_ELECTION_RESULTS_PATH, request_id)
    if answer is None:
        return None
    return {(e["topic"], e["partition"]): {"error": e["error"], "leader": e.get("leader", -1)} for e in answer}


def _partitions(partitions: Iterable[TopicPartition]) -> List[TopicPartition]:
    """Validated ``(topic, partition)`` pairs, duplicates dropped, in order."""
    out: List[TopicPartition] = []
    for tp in partitions:
        if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)):
            raise InvalidArgument(f"a partition is a (topic, partition) pair, got {tp!r}")
        check_int(f"partition of topic {tp[0]!r}", tp[1], min=0)
        if tp not in out:
            out.append(tp)
    if not out:
        raise InvalidArgument("no partitions given; pass None for every partition")
    return out


# ------------------------------------------------------------------ partition reassignment
def request_reassignment(store: Any, reassignments: Mapping[TopicPartition, Optional[Sequence[int]]], *,
                         throttle_bytes_per_s: Optional[int] = None) -> str:
    """Ask the controller to move partitions to new replicas (KIP-455's
    AlterPartitionReassignments): ``{(topic, partition): [target replica ids], ...}``,
    None instead of a list cancelling that partition's reassignment (back to its
    original replicas).  A partition already being reassigned gets the new target (its
    original replicas stay the ones it had before the first reassignment).

    Every entry is checked first, as the controller will (nothing is written if one
    fails): UnknownTopicOrPartition, InvalidReplicaAssignment (an empty list, a duplicate,
    a broker that is not registered), NoReassignmentInProgress (cancelling a partition
    not being reassigned); InvalidArgument for an empty mapping.  Then the request goes
    to Kafka's ``/admin/reassign_partitions`` node (``{"version": 1, "partitions":
    [{"topic", "partition", "replicas"}]}``, merged with entries the controller has not
    taken yet: the later entry for a partition wins).  Returns the request id for
    :func:`reassignment_result`.

    ``throttle_bytes_per_s`` limits the copying (Kafka's ``--throttle``): the controller
    lists each moving partition's original replicas in the topic's
    ``leader.replication.throttled.replicas`` and its added ones in
    ``follower.replication.throttled.replicas``, and sets
    ``leader/follower.replication.throttled.rate`` on ``/config/brokers/<default>``; it
    removes those entries when each partition's reassignment ends, and the rates when no
    throttled reassignment is left (see :mod:`pylog.cluster.throttle`).  InvalidConfig if
    it is not a positive int."""
    if not reassignments:
        raise InvalidArgument("no partitions to reassign")
    if throttle_bytes_per_s is not None:
        check_int("throttle_bytes_per_s", throttle_bytes_per_s, min=1, error=InvalidConfig)
    live = set(live_brokers(store))
    topics: Dict[str, Any] = {}
    wanted: Dict[TopicPartition, Optional[List[int]]] = {}
    for tp, replicas in reassignments.items():
        if not (isinstance(tp, tuple) and len(tp) == 2 and isinstance(tp[0], str)):
            raise InvalidArgument(f"a partition is a (topic, partition) pair, got {tp!r}")
        if tp[0] not in topics:
            try:
                topics[tp[0]] = store.get(topic_path(tp[0]))[0]
            except NoNode:
                raise UnknownTopicOrPartition(f"topic {tp[0]!r} does not exist") from None
        check_reassignment(store, tp[0], tp[1], replicas, live=live, topic_data=topics[tp[0]])
        wanted[tp] = None if replicas is None else list(replicas)
    rid = uuid.uuid4().hex

    def merge(current: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        requests = dict((current or {}).get("requests") or {})
        requests[rid] = [[t, p] for t, p in wanted]
        entries = [e for e in (current or {}).get("partitions") or []
                   if not (isinstance(e, dict) and (e.get("topic"), e.get("partition")) in wanted)]
        for (t, p), r in wanted.items():
            entry: Dict[str, Any] = {"topic": t, "partition": p, "replicas": r}
            if throttle_bytes_per_s is not None and r is not None:
                entry["throttle"] = throttle_bytes_per_s
            entries.append(entry)
        return {"version": 1, "partitions": entries, "requests": requests}

    merge_admin_request(store, REASSIGN_PARTITIONS_PATH, merge)
    return rid


def reassignment_result(store: Any, request_id: str) -> Optional[Dict[TopicPartition, Dict[str, str]]]:
    """The outcome of a :func:`request_reassignment` once the controller has taken it
    (None until then): per partition ``{"error": Kafka error name, "message": str}``,
    "NONE" when the reassignment started (or was cancelled, or there was nothing to do).
    Its progress shows in :func:`list_reassignments` until it completes."""
    answer = read_admin_result(store, REASSIGN_RESULTS_PATH, request_id)
    if answer is None:
        return None
    return {(e["topic"], e["partition"]): {"error": e["error"], "message": e.get("message", "")}
            for e in answer}


def list_reassignments(store: Any, partitions: Optional[Iterable[TopicPartition]] = None
                       ) -> Dict[TopicPartition, Dict[str, List[int]]]:
    """The reassignments in progress (KIP-455's ListPartitionReassignments), from the topic
    nodes: ``{(topic, partition): {"replicas": all current replicas, "adding": [...],
    "removing": [...]}}``, of ``partitions`` only when given."""
    only = None if partitions is None else set(partitions)
    out: Dict[TopicPartition, Dict[str, List[int]]] = {}
    try:
        names = store.children(TOPICS_PATH)
    except NoNode:
        return out
    for topic in names:
        try:
            data, _ = store.get(topic_path(topic))
        except NoNode:
            continue
        for key in data["partitions"]:
            moving = reassignment_of(data, int(key))
            if moving is not None and (only is None or (topic, int(key)) in only):
                out[(topic, int(key))] = {"replicas": moving[0], "adding": moving[1], "removing": moving[2]}
    return dict(sorted(out.items()))


_ERRORS = {e.kafka_name: e for e in (ElectionNotNeeded, EligibleLeadersNotAvailable, InvalidReplicaAssignment,
                                     InvalidRequest, NoReassignmentInProgress, PreferredLeaderNotAvailable,
                                     UnknownTopicOrPartition)}


def error_for(name: str, what: str) -> Optional[PylogError]:
    """The exception for an error name in a controller's answer (None for "NONE"), its
    message naming ``what``."""
    if name == "NONE":
        return None
    cls = _ERRORS.get(name, PylogError)
    return cls(f"{what}: {name}")
