"""Rack-aware placement (pylog/cluster/placement.py): examples and property tests over
many broker/rack layouts."""
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.cluster.placement import (
    assign_replicas,
    leader_imbalance,
    preferred_leader,
    rack_alternating_order,
)
from pylog.errors import InvalidArgument, InvalidPartitions, InvalidReplicationFactor


def _counts(assignment, brokers, leaders_only=False):
    c = Counter(r[0] for r in assignment) if leaders_only else Counter(b for r in assignment for b in r)
    return [c.get(b, 0) for b in brokers]


def test_rack_alternating_order():
    assert rack_alternating_order({1: "a", 2: "a", 3: "b", 4: "c", 5: "c"}) == [1, 3, 4, 2, 5]
    assert rack_alternating_order({3: None, 1: None, 2: None}) == [1, 2, 3]
    assert rack_alternating_order({1: None, 2: "z", 3: "z"}) == [2, 1, 3]  # rack-less last


def test_three_racks_one_broker_each():
    a = assign_replicas({1: "r1", 2: "r2", 3: "r3"}, 6, 3)
    assert all(sorted(r) == [1, 2, 3] for r in a)
    assert _counts(a, [1, 2, 3], leaders_only=True) == [2, 2, 2]


def test_distinct_racks_with_two_brokers_per_rack():
    brokers = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    a = assign_replicas(brokers, 12, 3)
    for r in a:
        assert sorted(brokers[b] for b in r) == ["a", "b", "c"]
    assert _counts(a, brokers) == [6] * 6
    assert _counts(a, brokers, leaders_only=True) == [2] * 6


def test_fewer_racks_than_replicas_spans_all_racks():
    brokers = {1: "a", 2: "a", 3: "b", 4: "b"}
    for r in assign_replicas(brokers, 8, 3):
        assert {brokers[b] for b in r} == {"a", "b"}
        assert len(set(r)) == 3


def test_start_rotates_leaders():
    brokers = {b: None for b in range(4)}
    leaders = [assign_replicas(brokers, 1, 2, start=s)[0][0] for s in range(4)]
    assert sorted(leaders) == [0, 1, 2, 3]


def test_deterministic():
    brokers = {5: "x", 9: "y", 2: "x", 7: None}
    assert assign_replicas(brokers, 17, 3, start=3) == assign_replicas(dict(reversed(brokers.items())),
                                                                       17, 3, start=3)


def test_bad_arguments():
    with pytest.raises(InvalidReplicationFactor, match="larger than"):
        assign_replicas({1: None, 2: None}, 3, 3)
    with pytest.raises(InvalidReplicationFactor):
        assign_replicas({}, 1, 1)
    with pytest.raises(InvalidReplicationFactor):
        assign_replicas({1: None}, 1, 0)
    with pytest.raises(InvalidPartitions):
        assign_replicas({1: None}, 0, 1)
    with pytest.raises(InvalidPartitions):
        assign_replicas({1: None}, True, 1)
    with pytest.raises(InvalidArgument):
        assign_replicas({"1": None}, 1, 1)
    with pytest.raises(InvalidArgument):
        assign_replicas({1: 7}, 1, 1)
    with pytest.raises(InvalidArgument):
        assign_replicas({1: None}, 1, 1, start=-1)
    with pytest.raises(InvalidArgument):
        preferred_leader([])


def test_preferred_leader_and_imbalance():
    assert preferred_leader([3, 1, 2]) == 3
    ratios = leader_imbalance([([1, 2], 1), ([1, 3], 3), ([2, 1], 2), ([1, 2], -1), ([3, 1], 3)])
    assert ratios == {1: 2 / 3, 2: 0.0, 3: 0.0}


@st.composite
def layouts(draw):
    """Broker id -> rack layouts: no racks, balanced racks, or racks of any sizes."""
    kind = draw(st.sampled_from(["none", "balanced", "any"]))
    if kind == "balanced":
        racks, per = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        ids = draw(st.lists(st.integers(0, 200), min_size=racks * per, max_size=racks * per,
                            unique=True))
        return {b: f"rack{i % racks}" for i, b in enumerate(ids)}
    ids = draw(st.lists(st.integers(0, 200), min_size=1, max_size=12, unique=True))
    if kind == "none":
        return {b: None for b in ids}
    return {b: draw(st.sampled_from(["r1", "r2", "r3", "r4", None])) for b in ids}


@settings(max_examples=400, deadline=None)
@given(brokers=layouts(), partitions=st.integers(1, 60), data=st.data())
def test_placement_properties(brokers, partitions, data):
    rf = data.draw(st.integers(1, len(brokers)))
    start = data.draw(st.integers(0, 50))
    a = assign_replicas(brokers, partitions, rf, start=start)
    racks = {brokers[b] for b in brokers}
    assert len(a) == partitions
    for replicas in a:
        assert len(replicas) == rf and len(set(replicas)) == rf
        assert set(replicas) <= set(brokers)
        # distinct racks where possible: as many racks as RF allows
        assert len({brokers[b] for b in replicas}) == min(rf, len(racks))
    leaders = _counts(a, brokers, leaders_only=True)
    assert max(leaders) - min(leaders) <= 1
    per_rack = Counter(brokers.values())
    if len(set(per_rack.values())) == 1:  # no racks, or racks of equal size
        load = _counts(a, brokers)
        assert max(load) - min(load) <= 1, (load, a)


@settings(max_examples=100, deadline=None)
@given(racks=st.integers(2, 4), per=st.integers(1, 3), rounds=st.integers(1, 4), data=st.data())
def test_even_load_when_divisible(racks, per, rounds, data):
    """partitions * RF divisible by the number of brokers: every broker holds exactly
    the same number of replicas."""
    brokers = {b: f"r{b % racks}" for b in range(racks * per)}
    rf = data.draw(st.integers(1, len(brokers)))
    n = len(brokers)
    partitions = n * rounds
    a = assign_replicas(brokers, partitions, rf, start=data.draw(st.integers(0, 9)))
    assert set(_counts(a, brokers)) == {partitions * rf // n}
    assert set(_counts(a, brokers, leaders_only=True)) == {rounds}


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 8), rounds=st.integers(1, 2), start=st.integers(0, 9))
def test_followers_of_a_leader_spread_over_all_other_brokers(n, rounds, start):
    """When a broker dies its leadership should move to many brokers, not one: with enough
    partitions, every other broker follows each leader somewhere."""
    brokers = {b: None for b in range(n)}
    a = assign_replicas(brokers, n * (n - 1) * rounds, 2, start=start)
    for leader in brokers:
        assert {r[1] for r in a if r[0] == leader} == set(brokers) - {leader}


def test_even_load_needs_a_move_through_another_broker():
    """Found by hypothesis: 12 brokers on 4 racks of 3, RF 3, 12 partitions from start 3.
    The spread left loads 2..4, and no single follower move from the 4 to the 2 kept
    the racks distinct; a move through a third broker does."""
    brokers = {b: f"r{b % 4}" for b in range(12)}
    a = assign_replicas(brokers, 12, 3, start=3)
    assert set(_counts(a, brokers)) == {3}
    assert all(len({brokers[b] for b in r}) == 3 for r in a)
    assert set(_counts(a, brokers, leaders_only=True)) == {1}
