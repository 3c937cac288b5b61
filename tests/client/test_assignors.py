"""Consumer protocol encoding (Kafka's schemas, hand-built bytes) and the three assignors:
Kafka's documented examples, and properties over random groups - every partition assigned
once, balance, stickiness, and the cooperative two-phase hand-over."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.client.assignors import (ASSIGNORS, COOPERATIVE, EAGER, Assignment, Subscription,
                                    cooperative_sticky_assign, decode_assignment,
                                    decode_subscription, encode_assignment,
                                    encode_subscription, get_assignor, range_assign,
                                    rebalance_protocol, roundrobin_assign,
                                    supported_protocols)
from pylog.errors import CorruptRecordError, InvalidArgument


def kstr(s):
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def i32(*xs):
    return b"".join(struct.pack(">i", x) for x in xs)


# --- encoding ---------------------------------------------------------------------------


def test_subscription_v0_bytes():
    raw = b"\x00\x00" + i32(2) + kstr("a") + kstr("bb") + i32(-1)
    assert encode_subscription(Subscription(("a", "bb")), version=0) == raw
    assert decode_subscription(raw) == Subscription(("a", "bb"))


def test_subscription_v1_bytes_with_owned_partitions_and_user_data():
    raw = (b"\x00\x01" + i32(1) + kstr("t") + i32(2) + b"ud"
           + i32(2) + kstr("t") + i32(2, 0, 3) + kstr("u") + i32(1, 9))
    sub = Subscription(("t",), b"ud", (("t", 0), ("t", 3), ("u", 9)))
    assert encode_subscription(sub, version=1) == raw
    assert decode_subscription(raw) == sub


def test_subscription_v3_bytes_with_generation_and_rack():
    raw = (b"\x00\x03" + i32(1) + kstr("t") + i32(-1) + i32(0) + i32(7) + kstr("rack-1"))
    sub = Subscription(("t",), None, (), 7, "rack-1")
    assert encode_subscription(sub) == raw
    assert decode_subscription(raw) == sub
    null_rack = b"\x00\x03" + i32(1) + kstr("t") + i32(-1) + i32(0) + i32(7) + b"\xff\xff"
    assert decode_subscription(null_rack).rack_id is None


def test_newer_versions_are_read_as_the_latest_known():
    raw = (b"\x00\x05" + i32(1) + kstr("t") + i32(-1) + i32(0) + i32(7) + kstr("r")
           + b"future fields")
    assert decode_subscription(raw) == Subscription(("t",), None, (), 7, "r")
    araw = b"\x00\x09" + i32(1) + kstr("t") + i32(1, 4) + i32(-1) + b"more"
    assert decode_assignment(araw) == Assignment((("t", 4),))


def test_assignment_bytes():
    raw = b"\x00\x01" + i32(2) + kstr("t") + i32(2, 1, 2) + kstr("u") + i32(1, 0) + i32(3) + b"abc"
    a = Assignment((("t", 1), ("t", 2), ("u", 0)), b"abc")
    assert encode_assignment(a, version=1) == raw
    assert decode_assignment(raw) == a
    assert decode_assignment(b"") == Assignment(())


tps = st.lists(st.tuples(st.sampled_from(["a", "b", "ü"]), st.integers(0, 2**31 - 1)),
               max_size=8, unique=True)


@given(st.lists(st.text(min_size=1, max_size=5), max_size=4), st.none() | st.binary(max_size=8),
       tps, st.integers(-1, 100), st.none() | st.text(max_size=5), st.integers(0, 3))
def test_subscription_round_trip(topics, user_data, owned, gen, rack, version):
    # partitions of one topic are grouped on the wire: compare as sets
    sub = Subscription(tuple(topics), user_data, tuple(owned), gen, rack)
    back = decode_subscription(encode_subscription(sub, version))
    assert back.topics == tuple(topics) and back.user_data == user_data
    assert set(back.owned_partitions) == (set(owned) if version >= 1 else set())
    assert back.generation_id == (gen if version >= 2 else -1)
    assert back.rack_id == (rack if version >= 3 else None)


@given(tps, st.none() | st.binary(max_size=8), st.integers(0, 3))
def test_assignment_round_trip(parts, user_data, version):
    back = decode_assignment(encode_assignment(Assignment(tuple(parts), user_data), version))
    assert sorted(back.partitions) == sorted(parts) and back.user_data == user_data


def test_truncated_and_trailing_bytes_are_corrupt():
    raw = encode_subscription(Subscription(("t",), b"x", (("t", 1),), 3, "r"))
    for cut in range(2, len(raw)):
        with pytest.raises(CorruptRecordError):
            decode_subscription(raw[:cut])
    with pytest.raises(CorruptRecordError, match="trailing"):
        decode_subscription(raw + b"\x00")
    with pytest.raises(CorruptRecordError, match="count"):
        decode_subscription(b"\x00\x00" + i32(1_000_000))
    araw = encode_assignment(Assignment((("t", 1),)))
    for cut in range(1, len(araw)):
        with pytest.raises(CorruptRecordError):
            decode_assignment(araw[:cut])


def test_encoding_refuses_bad_values():
    with pytest.raises(InvalidArgument, match="version"):
        encode_subscription(Subscription(("t",)), version=4)
    with pytest.raises(InvalidArgument, match="sequence"):
        encode_subscription(Subscription("t"))
    with pytest.raises(InvalidArgument, match="partition"):
        encode_assignment(Assignment((("t", 2**31),)))
    with pytest.raises(InvalidArgument, match="user data"):
        encode_subscription(Subscription(("t",), user_data="str"))


# --- Kafka's documented examples --------------------------------------------------------------

TWO = {"C0": Subscription(("t0", "t1")), "C1": Subscription(("t0", "t1"))}


def test_range_matches_kafkas_javadoc_example():
    assert range_assign(TWO, {"t0": 3, "t1": 3}) == {
        "C0": [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)],
        "C1": [("t0", 2), ("t1", 2)]}


def test_roundrobin_matches_kafkas_javadoc_examples():
    assert roundrobin_assign(TWO, {"t0": 3, "t1": 3}) == {
        "C0": [("t0", 0), ("t0", 2), ("t1", 1)],
        "C1": [("t0", 1), ("t1", 0), ("t1", 2)]}
    # unequal subscriptions: C0 t0; C1 t0 t1; C2 t0 t1 t2 with 1, 2, 3 partitions
    subs = {"C0": Subscription(("t0",)), "C1": Subscription(("t0", "t1")),
            "C2": Subscription(("t0", "t1", "t2"))}
    assert roundrobin_assign(subs, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": [("t0", 0)], "C1": [("t1", 0)],
        "C2": [("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]}


def test_missing_topics_and_members_without_partitions():
    subs = {"a": Subscription(("t", "gone")), "b": Subscription(("t",))}
    for name, fn in ASSIGNORS.items():
        out = fn(subs, {"t": 1})
        assert set(out) == {"a", "b"}, name
        assert sorted(out["a"] + out["b"]) == [("t", 0)], name


def test_bad_assignor_input():
    for fn in ASSIGNORS.values():
        with pytest.raises(InvalidArgument):
            fn({"a": ("t",)}, {"t": 1})
        with pytest.raises(InvalidArgument):
            fn({"a": Subscription(("t",))}, {"t": -1})
    with pytest.raises(InvalidArgument, match="known"):
        get_assignor("sticky")


def test_rebalance_protocol_follows_kafkas_rule():
    assert rebalance_protocol(["range", "cooperative-sticky"]) == EAGER
    assert rebalance_protocol(["cooperative-sticky"]) == COOPERATIVE
    assert supported_protocols("roundrobin") == {EAGER}
    with pytest.raises(InvalidArgument):
        rebalance_protocol([])


# --- properties ---------------------------------------------------------------------------------

TOPICS = ["a", "b", "c"]


@st.composite
def groups(draw, identical=False):
    n = draw(st.integers(1, 6))
    counts = {t: draw(st.integers(0, 9)) for t in TOPICS}
    if identical:
        topics = tuple(draw(st.lists(st.sampled_from(TOPICS), min_size=1, unique=True)))
        subs = {f"m{i}": Subscription(topics) for i in range(n)}
    else:
        subs = {f"m{i}": Subscription(tuple(draw(st.lists(st.sampled_from(TOPICS), min_size=1,
                                                          unique=True))))
                for i in range(n)}
    return subs, counts


def subscribed_partitions(subs, counts):
    return {(t, p) for s in subs.values() for t in s.topics for p in range(counts.get(t, 0))}


def check_valid(subs, counts, out):
    """Every member present; partitions assigned at most once, to subscribers only."""
    assert set(out) == set(subs)
    flat = [tp for tps in out.values() for tp in tps]
    assert len(flat) == len(set(flat))
    for m, tps in out.items():
        for t, p in tps:
            assert t in subs[m].topics and 0 <= p < counts[t]


def converge(subs, counts, fn=cooperative_sticky_assign, rounds=10):
    """Run cooperative rebalances (members report what they own) until nobody revokes."""
    for _ in range(rounds):
        out = fn(subs, counts)
        check_valid(subs, counts, out)
        revoked = any(set(subs[m].owned_partitions) - set(out[m]) for m in subs)
        subs = {m: Subscription(s.topics, owned_partitions=tuple(out[m]), generation_id=5)
                for m, s in subs.items()}
        if not revoked:
            return out
    raise AssertionError("cooperative rebalances did not converge")


@given(groups())
def test_every_subscribed_partition_assigned_exactly_once(g):
    subs, counts = g
    for fn in ASSIGNORS.values():
        out = fn(subs, counts)
        check_valid(subs, counts, out)
        assert {tp for tps in out.values() for tp in tps} == subscribed_partitions(subs, counts)


@given(groups(identical=True))
def test_balanced_within_one_for_equal_subscriptions(g):
    subs, counts = g
    for fn in (roundrobin_assign, cooperative_sticky_assign, range_assign):
        sizes = [len(v) for v in fn(subs, counts).values()]
        if fn is range_assign:  # range balances per topic only
            assert max(sizes) - min(sizes) <= len(subs[next(iter(subs))].topics)
        else:
            assert max(sizes) - min(sizes) <= 1


@given(groups())
def test_sticky_balance_cannot_be_improved_by_one_move(g):
    subs, counts = g
    out = cooperative_sticky_assign(subs, counts)
    for m1, tps in out.items():
        for m2 in out:
            if len(tps) >= len(out[m2]) + 2:
                assert not any(t in subs[m2].topics for t, _ in tps), (m1, m2, out)


@st.composite
def reassignments(draw):
    """A converged group, then members join and/or leave."""
    subs, counts = draw(groups(identical=True))
    before = converge(subs, counts)
    topics = subs["m0"].topics
    owned = {m: Subscription(topics, owned_partitions=tuple(tps), generation_id=5)
             for m, tps in before.items()}
    leave = draw(st.lists(st.sampled_from(sorted(owned)), unique=True, max_size=len(owned) - 1))
    for m in leave:
        del owned[m]
    for i in range(draw(st.integers(0 if leave else 1, 3))):
        owned[f"new{i}"] = Subscription(topics)
    return owned, counts


@given(reassignments())
@settings(max_examples=200)
def test_cooperative_sticky_moves_as_little_as_possible(g):
    subs, counts = g
    out = converge(subs, counts)
    assert {tp for tps in out.values() for tp in tps} == subscribed_partitions(subs, counts)
    sizes = [len(v) for v in out.values()]
    assert max(sizes) - min(sizes) <= 1
    # The most partitions any balanced assignment can leave where they were: the members
    # that own most get the larger quotas.
    n, k = len(subscribed_partitions(subs, counts)), len(subs)
    owned = sorted((len(s.owned_partitions) for s in subs.values()), reverse=True)
    quotas = [n // k + (1 if i < n % k else 0) for i in range(k)]
    best_kept = sum(min(o, q) for o, q in zip(owned, quotas))
    kept = sum(len(set(out[m]) & set(s.owned_partitions)) for m, s in subs.items())
    assert kept == best_kept


@given(reassignments())
def test_cooperative_first_phase_never_hands_over_an_owned_partition(g):
    subs, counts = g
    out = cooperative_sticky_assign(subs, counts)
    owner = {tp: m for m, s in subs.items() for tp in s.owned_partitions}
    for m, tps in out.items():
        for tp in tps:
            assert owner.get(tp, m) == m, f"{tp} goes to {m} while {owner[tp]} still owns it"


def test_cooperative_two_phases_on_a_new_member():
    counts = {"t": 4}
    subs = {"a": Subscription(("t",), owned_partitions=(("t", 0), ("t", 1), ("t", 2), ("t", 3)),
                              generation_id=1),
            "b": Subscription(("t",))}
    first = cooperative_sticky_assign(subs, counts)
    assert len(first["a"]) == 2 and first["b"] == []  # revoke first, hand over later
    second = cooperative_sticky_assign(
        {"a": Subscription(("t",), owned_partitions=tuple(first["a"]), generation_id=2),
         "b": Subscription(("t",), generation_id=2)}, counts)
    assert second["a"] == first["a"]
    assert sorted(second["b"]) == sorted({("t", p) for p in range(4)} - set(first["a"]))


def test_conflicting_claims_go_to_the_higher_generation():
    counts = {"t": 2}
    subs = {"old": Subscription(("t",), owned_partitions=(("t", 0), ("t", 1)), generation_id=3),
            "new": Subscription(("t",), owned_partitions=(("t", 0),), generation_id=4)}
    out = cooperative_sticky_assign(subs, counts)
    assert ("t", 0) in out["new"] and ("t", 0) not in out["old"]
    tie = {"x": Subscription(("t",), owned_partitions=(("t", 0),), generation_id=4),
           "y": Subscription(("t",), owned_partitions=(("t", 0),), generation_id=4)}
    out = cooperative_sticky_assign(tie, {"t": 1})
    check_valid(tie, {"t": 1}, out)


def test_owned_partitions_of_unsubscribed_or_vanished_topics_are_dropped():
    subs = {"a": Subscription(("u",), owned_partitions=(("t", 0), ("u", 5)), generation_id=2),
            "b": Subscription(("t",), generation_id=2)}
    out = cooperative_sticky_assign(subs, {"t": 1, "u": 1})
    assert out == {"a": [("u", 0)], "b": []}  # t-0 waits until a has revoked it
