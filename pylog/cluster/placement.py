"""Rack-aware replica placement and preferred-leader helpers.

:func:`assign_replicas` decides which brokers hold each partition of a new topic; the
first replica of a partition is its **preferred leader**.  The promises, in priority order:

1. The replicas of a partition are distinct brokers.
2. They are on distinct racks where possible: a partition spans
   ``min(replication_factor, number of racks)`` racks.  A broker without a rack (None)
   counts as being on one rack shared by every rack-less broker (as Kafka's KRaft placer
   does), so a cluster without racks is simply one rack.
3. Leaders are spread evenly: the numbers of partitions led by any two brokers differ by
   at most one.
4. Replicas are spread evenly: the numbers of replicas on any two brokers differ by at
   most one whenever rule 2 allows it (always when racks are absent or all racks hold the
   same number of brokers; with lopsided racks, rule 2 may force more copies onto the
   brokers of a small rack).

The assignment is a pure function of its arguments.  ``start`` rotates it (the controller
passes a different one per topic so that several small topics do not all lead from the
same broker).  How it works: leaders are dealt round-robin over the brokers in a
rack-alternating order; each follower goes to the least-loaded broker that keeps the
partition's racks distinct, preferring brokers that follow this leader least often (so a
dead broker's leadership moves to many brokers, not one); a final pass moves followers from the most to the least loaded
brokers while that keeps every rule, directly or, when no direct move keeps the racks
distinct, through a third broker (heavy -> mid in one partition, mid -> light in another).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

from pylog.errors import InvalidArgument, InvalidPartitions, InvalidReplicationFactor
from pylog.util import check_int

__all__ = [
    "assign_replicas",
    "preferred_leader",
    "leader_imbalance",
    "rack_alternating_order",
    "MAX_PARTITIONS",
    "MAX_REPLICATION_FACTOR",
]

#: Largest number of partitions one assignment may have (pylog's per-topic limit).
MAX_PARTITIONS = 10_000
#: Largest replication factor (Kafka's is a short; nobody needs more than this).
MAX_REPLICATION_FACTOR = 32

#: The rack of brokers that have none.
_NO_RACK: Hashable = ("no rack",)


def _rack_key(rack: Optional[str]) -> Hashable:
    return _NO_RACK if rack is None else rack


def rack_alternating_order(brokers: Mapping[int, Optional[str]]) -> List[int]:
    """Broker ids taking one from each rack in turn (racks sorted by name, rack-less last;
    brokers of a rack by id): ``{1: "a", 2: "a", 3: "b"}`` -> ``[1, 3, 2]``."""
    by_rack: Dict[Hashable, List[int]] = defaultdict(list)
    for b in sorted(brokers):
        by_rack[_rack_key(brokers[b])].append(b)
    racks = sorted(by_rack, key=lambda r: (r is _NO_RACK, str(r)))
    out: List[int] = []
    depth = 0
    while len(out) < len(brokers):
        for r in racks:
            if depth < len(by_rack[r]):
                out.append(by_rack[r][depth])
        depth += 1
    return out


def _check_args(brokers: Any, partitions: Any, replication_factor: Any, start: Any) -> None:
    if not isinstance(brokers, Mapping):
        raise InvalidArgument(f"brokers must map broker id -> rack, got {type(brokers).__name__}")
    for b, rack in brokers.items():
        check_int("a broker id", b, min=0)
        if rack is not None and not isinstance(rack, str):
            raise InvalidArgument(f"the rack of broker {b} must be a string or None, got {rack!r}")
    check_int("partitions", partitions, min=1, max=MAX_PARTITIONS, error=InvalidPartitions)
    check_int("replication factor", replication_factor, min=1, max=MAX_REPLICATION_FACTOR,
              error=InvalidReplicationFactor)
    if replication_factor > len(brokers):
        raise InvalidReplicationFactor(f"replication factor {replication_factor} is larger than "
                                       f"the number of available brokers ({len(brokers)})")
    check_int("start", start, min=0)


def assign_replicas(brokers: Mapping[int, Optional[str]], partitions: int,
                    replication_factor: int, *, start: int = 0) -> List[List[int]]:
    """Replica lists (preferred leader first) for ``partitions`` partitions over
    ``brokers`` (broker id -> rack or None), keeping the rules in the module docstring.

    Raises InvalidReplicationFactor if ``replication_factor`` is below 1 or above the
    number of brokers, InvalidPartitions if ``partitions`` is below 1 or above
    :data:`MAX_PARTITIONS`, InvalidArgument for malformed ``brokers`` or ``start``.
    """
    _check_args(brokers, partitions, replication_factor, start)
    order = rack_alternating_order(brokers)
    n = len(order)
    position = {b: i for i, b in enumerate(order)}
    rack = {b: _rack_key(brokers[b]) for b in order}
    racks_wanted = min(replication_factor, len(set(rack.values())))
    load = dict.fromkeys(order, 0)  # replicas per broker so far
    follows: Dict[Tuple[int, int], int] = defaultdict(int)  # (leader, follower) -> partitions
    out: List[List[int]] = []
    for p in range(partitions):
        leader = order[(start + p) % n]
        replicas = [leader]
        load[leader] += 1
        while len(replicas) < replication_factor:
            used_racks = {rack[r] for r in replicas}
            need_new_rack = len(used_racks) < racks_wanted
            # Among the least loaded, prefer a broker that has followed this leader least
            # often (so a dead leader's partitions fail over to many brokers), then the one
            # soonest after the leader in the rack-alternating order, shifted per round of
            # n partitions (as Kafka does).
            shift = (start + p) // n

            def rank(b: int) -> Tuple[int, int, int]:
                return follows[leader, b], load[b], (position[b] - position[leader] - 1 - shift) % n

            candidates = [b for b in order if b not in replicas
                          and (not need_new_rack or rack[b] not in used_racks)]
            chosen = min(candidates, key=rank)
            replicas.append(chosen)
            load[chosen] += 1
            follows[leader, chosen] += 1
        out.append(replicas)
    _rebalance_followers(out, load, rack, racks_wanted)
    return out


def _rebalance_followers(assignment: List[List[int]], load: Dict[int, int],
                         rack: Mapping[int, Hashable], racks_wanted: int) -> None:
    """Move followers from the most to the least loaded brokers while that keeps every
    partition on distinct brokers and on ``racks_wanted`` racks: directly where one move
    keeps the racks distinct, else through a broker in between (:func:`_move_through`).
    Each move lowers the sum of squared loads, so this ends."""
    while _move_direct(assignment, load, rack, racks_wanted) or \
            _move_through(assignment, load, rack, racks_wanted):
        pass


def _can_take(replicas: List[int], slot: int, broker: int, rack: Mapping[int, Hashable],
              racks_wanted: int) -> bool:
    """Whether ``broker`` may replace ``replicas[slot]`` keeping the rules."""
    if broker in replicas:
        return False
    others = {rack[r] for i, r in enumerate(replicas) if i != slot}
    return len(others | {rack[broker]}) >= racks_wanted


def _move_through(assignment: List[List[int]], load: Dict[int, int], rack: Mapping[int, Hashable],
                  racks_wanted: int) -> bool:
    """One follower move from a most loaded broker to a light one (loads differing by 2
    or more) through a broker in between: heavy -> mid in one partition, mid -> light in
    another, so mid's load is unchanged.  Needed when every light broker shares a rack
    with the other replicas of each partition the heavy broker follows (racks of equal
    size can need it).  Returns whether it moved one."""
    top = max(load.values())
    lights = sorted((b for b in load if load[b] <= top - 2), key=lambda b: (load[b], b))
    if not lights:
        return False
    follows: Dict[int, List[Tuple[int, int]]] = defaultdict(list)  # broker -> (partition, slot)
    for j, replicas in enumerate(assignment):
        for slot in range(1, len(replicas)):
            follows[replicas[slot]].append((j, slot))
    hand_offs: Dict[int, List[Tuple[int, int, int]]] = {}

    def hand_off(mid: int) -> List[Tuple[int, int, int]]:
        """Where ``mid`` could give a follower slot to a light broker: up to two
        (partition, slot, light), in different partitions."""
        found = hand_offs.get(mid)
        if found is None:
            found = hand_offs[mid] = []
            for j, s2 in follows[mid]:
                light = next((b for b in lights if _can_take(assignment[j], s2, b, rack, racks_wanted)), None)
                if light is not None:
                    found.append((j, s2, light))
                    if len(found) == 2:
                        break
        return found

    for heavy in sorted(b for b in load if load[b] == top):
        for i, s1 in follows[heavy]:
            first = assignment[i]
            for mid in sorted(load):
                if mid == heavy or load[mid] <= top - 2:
                    continue  # a light broker would have been a direct move
                for j, s2, light in hand_off(mid):
                    if j != i and _can_take(first, s1, mid, rack, racks_wanted):
                        first[s1], assignment[j][s2] = mid, light
                        load[heavy] -= 1
                        load[light] += 1
                        return True
    return False


def _move_direct(assignment: List[List[int]], load: Dict[int, int], rack: Mapping[int, Hashable],
                 racks_wanted: int) -> bool:
    """One follower move straight from a heavy broker to a light one (loads differing by
    2 or more); returns whether it moved one."""
    brokers = sorted(load)
    low = min(load.values())
    for heavy in sorted(brokers, key=lambda b: -load[b]):
        if load[heavy] < low + 2:
            return False
        for replicas in assignment:
            if heavy not in replicas[1:]:
                continue
            slot = replicas.index(heavy)
            other_racks = {rack[r] for r in replicas[:slot] + replicas[slot + 1:]}
            for light in sorted(brokers, key=lambda b: (load[b], b)):
                if load[light] > load[heavy] - 2:
                    break
                if light not in replicas and len(other_racks | {rack[light]}) >= racks_wanted:
                    replicas[slot] = light
                    load[heavy] -= 1
                    load[light] += 1
                    return True
    return False


def preferred_leader(replicas: Sequence[int]) -> int:
    """A partition's preferred leader: its first replica."""
    if not replicas:
        raise InvalidArgument("a partition with no replicas has no preferred leader")
    return replicas[0]


def leader_imbalance(partitions: Iterable[Tuple[Sequence[int], int]]) -> Dict[int, float]:
    """Kafka's leader imbalance ratio per preferred leader: of the partitions whose first
    replica is broker b, the fraction that b does not lead.

    ``partitions`` yields ``(replicas, leader)`` pairs (leader -1 for offline).  Brokers
    that are no partition's preferred leader are absent from the result.
    """
    preferred: Dict[int, int] = defaultdict(int)
    not_leading: Dict[int, int] = defaultdict(int)
    for replicas, leader in partitions:
        b = preferred_leader(replicas)
        preferred[b] += 1
        if leader != b:
            not_leading[b] += 1
    return {b: not_leading[b] / preferred[b] for b in sorted(preferred)}
