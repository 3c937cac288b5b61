"""Kafka's consumer protocol: subscription/assignment encoding and the partition assignors.

This module owns what the group coordinator treats as opaque bytes: the ``"consumer"``
protocol type's member metadata (a :class:`Subscription`) and member assignment (an
:class:`Assignment`), encoded byte for byte like Kafka's ``ConsumerProtocolSubscription`` /
``ConsumerProtocolAssignment`` (big-endian, non-flexible; string = int16 length + UTF-8,
bytes = int32 length or -1 for null, arrays = int32 count)::

    Subscription  v0: version:int16 topics:[string] user_data:bytes?
                  v1: + owned_partitions:[topic:string partitions:[int32]]
                  v2: + generation_id:int32
                  v3: + rack_id:string?
    Assignment  v0-3: version:int16 assigned_partitions:[topic:string partitions:[int32]]
                      user_data:bytes?

A newer version than 3 is read as version 3 (later versions only append fields, Kafka's
rule).  The assignors are pure functions with Kafka's names and behaviour:

* ``range`` - per topic, consecutive ranges to the subscribed members in member id order
  (the first ``partitions % members`` get one more).
* ``roundrobin`` - all partitions (topics sorted, then partition) dealt in turn to the
  members in member id order, skipping members not subscribed to the topic.
* ``cooperative-sticky`` - balanced (counts within one when subscriptions are equal; no
  single move can improve the balance otherwise), keeps as many previously owned partitions
  as possible, and cooperative (KIP-429): a partition that changes owner is withheld from
  its new owner in this rebalance; the old owner revokes it and rejoins, and the follow-up
  rebalance assigns it.  A partition claimed by several members goes to the claimant with
  the highest generation, or to nobody's claim on a tie.

``range`` and ``roundrobin`` support only the EAGER rebalance protocol (members revoke all
partitions before they rejoin); ``cooperative-sticky`` supports EAGER and COOPERATIVE.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import (Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence,
                    Set, Tuple)

from pylog.errors import CorruptRecordError, InvalidArgument
from pylog.records.wire import WireReader
from pylog.util import check_int

__all__ = [
    "TopicPartition",
    "Subscription",
    "Assignment",
    "SUBSCRIPTION_VERSION",
    "ASSIGNMENT_VERSION",
    "encode_subscription",
    "decode_subscription",
    "encode_assignment",
    "decode_assignment",
    "range_assign",
    "roundrobin_assign",
    "cooperative_sticky_assign",
    "ASSIGNORS",
    "EAGER",
    "COOPERATIVE",
    "supported_protocols",
    "get_assignor",
    "rebalance_protocol",
]

TopicPartition = Tuple[str, int]
AssignFn = Callable[[Mapping[str, "Subscription"], Mapping[str, int]],
                    Dict[str, List[TopicPartition]]]

#: Highest versions this module writes and reads.
SUBSCRIPTION_VERSION = 3
ASSIGNMENT_VERSION = 3
#: Rebalance protocols (KIP-429).
EAGER = "EAGER"
COOPERATIVE = "COOPERATIVE"

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True)
class Subscription:
    """A member's metadata: the topics it subscribes to and (v1+) the partitions it owns
    now, (v2+) the generation those belong to, (v3+) its rack."""

    topics: Tuple[str, ...]
    user_data: Optional[bytes] = None
    owned_partitions: Tuple[TopicPartition, ...] = ()
    generation_id: int = -1
    rack_id: Optional[str] = None


@dataclass(frozen=True)
class Assignment:
    """A member's assignment: the partitions it must consume."""

    partitions: Tuple[TopicPartition, ...]
    user_data: Optional[bytes] = None


# --- encoding ----------------------------------------------------------------------------


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    def i16(self, v: int) -> None:
        self.out += _I16.pack(v)

    def i32(self, v: int, what: str) -> None:
        check_int(f"{what} (int32)", v, min=-(1 << 31), max=(1 << 31) - 1)
        self.out += _I32.pack(v)

    def string(self, s: Optional[str], what: str, nullable: bool = False) -> None:
        if s is None and nullable:
            self.i16(-1)
            return
        if not isinstance(s, str):
            raise InvalidArgument(f"{what} must be a str, got {s!r}")
        raw = s.encode("utf-8")
        if len(raw) > 0x7FFF:
            raise InvalidArgument(f"{what} is {len(raw)} bytes; at most 32767")
        self.i16(len(raw))
        self.out += raw

    def nbytes(self, b: Optional[bytes], what: str) -> None:
        if b is None:
            self.i32(-1, what)
            return
        if not isinstance(b, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"{what} must be bytes or None, got {type(b).__name__}")
        self.i32(len(b), what)
        self.out += bytes(b)

    def partitions(self, tps: Iterable[TopicPartition], what: str) -> None:
        by_topic: Dict[str, List[int]] = {}
        for tp in tps:
            if not (isinstance(tp, tuple) and len(tp) == 2):
                raise InvalidArgument(f"{what}: expected (topic, partition), got {tp!r}")
            by_topic.setdefault(tp[0], []).append(tp[1])
        self.i32(len(by_topic), what)
        for topic, parts in by_topic.items():
            self.string(topic, f"{what} topic")
            self.i32(len(parts), what)
            for p in parts:
                self.i32(p, f"{what} partition")


class _Reader(WireReader):
    """WireReader plus ConsumerProtocol's topic-partition arrays and versioned end."""

    __slots__ = ()

    def partitions(self, field: str) -> Tuple[TopicPartition, ...]:
        out: List[TopicPartition] = []
        for _ in range(self.count(field, 6)):
            topic = self.string(field + " topic")
            assert topic is not None
            for _ in range(self.count(field + " partitions", 4)):
                out.append((topic, self.i32(field + " partition")))
        return tuple(out)

    def end(self, version: int = -1, highest: int = -1) -> None:  # type: ignore[override]
        if version <= highest and self.pos != len(self.data):
            raise CorruptRecordError(
                f"{self.what}: {len(self.data) - self.pos} trailing bytes after version "
                f"{version}")


def _check_version(version: int, highest: int, what: str) -> None:
    check_int(f"{what} version", version, min=0, max=highest)


def encode_subscription(sub: Subscription, version: int = SUBSCRIPTION_VERSION) -> bytes:
    """Kafka's ConsumerProtocolSubscription bytes of ``sub`` at ``version`` (0-3); fields
    the version lacks are left out."""
    _check_version(version, SUBSCRIPTION_VERSION, "subscription")
    if not isinstance(sub, Subscription):
        raise InvalidArgument(f"expected a Subscription, got {type(sub).__name__}")
    w = _Writer()
    w.i16(version)
    if isinstance(sub.topics, str):
        raise InvalidArgument("Subscription.topics must be a sequence of topic names")
    w.i32(len(sub.topics), "topic count")
    for t in sub.topics:
        w.string(t, "subscribed topic")
    w.nbytes(sub.user_data, "user data")
    if version >= 1:
        w.partitions(sub.owned_partitions, "owned partitions")
    if version >= 2:
        w.i32(sub.generation_id, "generation id")
    if version >= 3:
        w.string(sub.rack_id, "rack id", nullable=True)
    return bytes(w.out)


def decode_subscription(data: bytes) -> Subscription:
    """Parse ConsumerProtocolSubscription bytes (any version; above 3 read as 3)."""
    r = _Reader(data, "consumer subscription")
    version = r.i16("version")
    if version < 0:
        raise CorruptRecordError(f"consumer subscription: bad version {version}")
    topics = []
    for _ in range(r.count("topics", 2)):
        t = r.string("topic")
        assert t is not None
        topics.append(t)
    user_data = r.nbytes("user data")
    owned: Tuple[TopicPartition, ...] = ()
    generation, rack = -1, None
    if version >= 1:
        owned = r.partitions("owned partitions")
    if version >= 2:
        generation = r.i32("generation id")
    if version >= 3:
        rack = r.string("rack id", nullable=True)
    r.end(version, SUBSCRIPTION_VERSION)
    return Subscription(tuple(topics), user_data, owned, generation, rack)


def encode_assignment(assignment: Assignment, version: int = ASSIGNMENT_VERSION) -> bytes:
    """Kafka's ConsumerProtocolAssignment bytes (all versions 0-3 share one layout)."""
    _check_version(version, ASSIGNMENT_VERSION, "assignment")
    if not isinstance(assignment, Assignment):
        raise InvalidArgument(f"expected an Assignment, got {type(assignment).__name__}")
    w = _Writer()
    w.i16(version)
    w.partitions(assignment.partitions, "assigned partitions")
    w.nbytes(assignment.user_data, "user data")
    return bytes(w.out)


def decode_assignment(data: bytes) -> Assignment:
    """Parse ConsumerProtocolAssignment bytes.  Empty bytes (what the coordinator gives a
    member the leader assigned nothing) decode to an empty assignment."""
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) == 0:
        return Assignment(())
    r = _Reader(data, "consumer assignment")
    version = r.i16("version")
    if version < 0:
        raise CorruptRecordError(f"consumer assignment: bad version {version}")
    parts = r.partitions("assigned partitions")
    user_data = r.nbytes("user data")
    r.end(version, ASSIGNMENT_VERSION)
    return Assignment(parts, user_data)


# --- assignors -----------------------------------------------------------------------------


def _check_inputs(members: Mapping[str, Subscription],
                  partitions_per_topic: Mapping[str, int]) -> Dict[str, int]:
    if not isinstance(members, Mapping):
        raise InvalidArgument("members must map member id to Subscription")
    for mid, sub in members.items():
        if not isinstance(mid, str) or not isinstance(sub, Subscription):
            raise InvalidArgument(f"members must map str to Subscription, got {mid!r}: {sub!r}")
    if not isinstance(partitions_per_topic, Mapping):
        raise InvalidArgument("partitions_per_topic must map topic to partition count")
    counts: Dict[str, int] = {}
    for t, n in partitions_per_topic.items():
        check_int(f"partition count of {t!r}", n, min=0)
        counts[t] = n
    return counts


def _sorted_result(out: Dict[str, List[TopicPartition]]) -> Dict[str, List[TopicPartition]]:
    return {m: sorted(tps) for m, tps in out.items()}


def range_assign(members: Mapping[str, Subscription],
                 partitions_per_topic: Mapping[str, int]) -> Dict[str, List[TopicPartition]]:
    """Kafka's RangeAssignor (see the module docstring)."""
    counts = _check_inputs(members, partitions_per_topic)
    out: Dict[str, List[TopicPartition]] = {m: [] for m in members}
    topics = sorted({t for s in members.values() for t in s.topics})
    for topic in topics:
        n = counts.get(topic, 0)
        subscribers = sorted(m for m, s in members.items() if topic in s.topics)
        per, extra = divmod(n, len(subscribers))
        for i, m in enumerate(subscribers):
            start = per * i + min(i, extra)
            length = per + (1 if i < extra else 0)
            out[m].extend((topic, p) for p in range(start, start + length))
    return _sorted_result(out)


def roundrobin_assign(members: Mapping[str, Subscription],
                      partitions_per_topic: Mapping[str, int]) -> Dict[str, List[TopicPartition]]:
    """Kafka's RoundRobinAssignor (see the module docstring)."""
    counts = _check_inputs(members, partitions_per_topic)
    out: Dict[str, List[TopicPartition]] = {m: [] for m in members}
    order = sorted(members)
    subs = {m: set(members[m].topics) for m in order}
    i = 0
    for topic in sorted({t for s in members.values() for t in s.topics}):
        for p in range(counts.get(topic, 0)):
            while topic not in subs[order[i % len(order)]]:
                i += 1
            out[order[i % len(order)]].append((topic, p))
            i += 1
    return _sorted_result(out)


def cooperative_sticky_assign(members: Mapping[str, Subscription],
                              partitions_per_topic: Mapping[str, int]
                              ) -> Dict[str, List[TopicPartition]]:
    """Kafka's CooperativeStickyAssignor's contract (see the module docstring)."""
    counts = _check_inputs(members, partitions_per_topic)
    eligible: Dict[str, Set[TopicPartition]] = {}
    for m, s in members.items():
        eligible[m] = {(t, p) for t in set(s.topics) for p in range(counts.get(t, 0))}
    every = set().union(*eligible.values()) if eligible else set()

    # 1. Valid claims: a partition stays with the claimant of the highest generation.
    best: Dict[TopicPartition, Tuple[int, List[str]]] = {}
    for m, s in members.items():
        for tp in set(s.owned_partitions):
            if tp not in eligible[m]:
                continue
            gen, who = best.get(tp, (-(1 << 32), []))
            if s.generation_id > gen:
                best[tp] = (s.generation_id, [m])
            elif s.generation_id == gen:
                who.append(m)
    current: Dict[str, Set[TopicPartition]] = {m: set() for m in members}
    kept: Set[TopicPartition] = set()
    for tp, (_, who) in best.items():
        if len(who) == 1:
            current[who[0]].add(tp)
            kept.add(tp)

    # 2. Unowned partitions, fewest candidates first, each to the least-loaded candidate.
    candidates: Dict[TopicPartition, List[str]] = {tp: [] for tp in every - kept}
    for m in sorted(members):
        for tp in eligible[m]:
            if tp in candidates:
                candidates[tp].append(m)
    for tp in sorted(candidates, key=lambda tp: (len(candidates[tp]), tp)):
        m = min(candidates[tp], key=lambda m: (len(current[m]), m))
        current[m].add(tp)

    # 3. Balance: move a partition from a member to an eligible one holding at least two
    # fewer, newly placed partitions first; every move lowers the sum of squared counts.
    moved = True
    while moved:
        moved = False
        for donor in sorted(members, key=lambda m: (-len(current[m]), m)):
            size = len(current[donor])
            order = sorted(current[donor], key=lambda tp: (tp in kept, tp))
            for tp in order:
                receivers = [m for m in members if m != donor and tp in eligible[m]
                             and len(current[m]) <= size - 2]
                if receivers:
                    r = min(receivers, key=lambda m: (len(current[m]), m))
                    current[donor].discard(tp)
                    current[r].add(tp)
                    moved = True
                    break
            if moved:
                break

    # 4. Cooperative: a partition some member owns and loses is not given to anyone else
    # in this rebalance; the old owner revokes it first.
    revoked: Set[TopicPartition] = set()
    for m, s in members.items():
        revoked |= set(s.owned_partitions) - current[m]
    for m, s in members.items():
        current[m] -= revoked - set(s.owned_partitions)
    return _sorted_result({m: list(tps) for m, tps in current.items()})


#: The assignors by Kafka's names.
ASSIGNORS: Dict[str, AssignFn] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "cooperative-sticky": cooperative_sticky_assign,
}

_PROTOCOLS: Dict[str, FrozenSet[str]] = {
    "range": frozenset({EAGER}),
    "roundrobin": frozenset({EAGER}),
    "cooperative-sticky": frozenset({EAGER, COOPERATIVE}),
}


def get_assignor(name: str) -> AssignFn:
    """The assignor called ``name``; InvalidArgument names the known ones otherwise."""
    try:
        return ASSIGNORS[name]
    except (KeyError, TypeError):
        raise InvalidArgument(
            f"unknown partition assignor {name!r}; known: {sorted(ASSIGNORS)}") from None


def supported_protocols(name: str) -> FrozenSet[str]:
    """The rebalance protocols (EAGER, COOPERATIVE) the assignor ``name`` supports."""
    get_assignor(name)
    return _PROTOCOLS[name]


def rebalance_protocol(names: Sequence[str]) -> str:
    """The protocol a consumer with these assignors uses: COOPERATIVE only if every one
    supports it (Kafka's rule; so the default ["range", "cooperative-sticky"] is EAGER)."""
    if not names:
        raise InvalidArgument("at least one partition assignor is needed")
    common = frozenset({EAGER, COOPERATIVE})
    for n in names:
        common &= supported_protocols(n)
    return COOPERATIVE if COOPERATIVE in common else EAGER
