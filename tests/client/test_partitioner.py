"""pylog.client.partitioner: Java-compatible keyed partitioning and the uniform sticky
partitioner for keyless records."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import pylog.client.partitioner as partitioner_mod
from pylog._native import lib
from pylog.client.partitioner import (
    DefaultPartitioner,
    murmur2,
    murmur2_batch,
    murmur2_partition,
    murmur2_partitions,
    to_positive,
    xxhash_partition,
)
from pylog.errors import InvalidArgument, InvalidConfig

# Keys whose partition under Kafka's Java producer was published by Kafka users:
# node-rdkafka #817 (kafka-console-producer, 32 partitions), node-rdkafka #616
# (kafka-console-producer, 10 partitions), kafkajs #1154 (JavaCompatiblePartitioner,
# 15 partitions).
JAVA_PLACEMENTS = [
    (b"fd7af248-ce5c-46a5-93d7-1c0c9005b99d", 32, 26),
    (b"354afe16-939a-4ea8-8e17-8bb0840b6886", 10, 4),
    (b"f562ac3b-2224-4e25-a0ab-56094e10c239", 10, 5),
    (b"TT0124", 15, 10),
]


# ------------------------------------------------------------------ murmur2

def test_murmur2_kafka_utils_test_values():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


@pytest.mark.parametrize("key,n,expected", JAVA_PLACEMENTS)
def test_keys_land_where_java_producers_put_them(key, n, expected):
    assert murmur2_partition(key, n) == expected
    assert DefaultPartitioner().partition("t", key, n, 100) == expected


def test_murmur2_accepts_bytes_like_and_rejects_the_rest():
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482
    for bad in ("foobar", 42, None, [1, 2]):
        with pytest.raises(TypeError, match="key must be bytes"):
            murmur2(bad)


def test_to_positive_is_javas():
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-0x80000000) == 0
    assert to_positive(5) == 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_partition_is_to_positive_murmur2_mod_n(key, n):
    h = murmur2(key)
    assert -2**31 <= h < 2**31
    assert h == lib.pl_murmur2(key, len(key))
    p = murmur2_partition(key, n)
    assert p == (h & 0x7FFFFFFF) % n
    assert 0 <= p < n


@pytest.mark.parametrize("n", [0, -1, 2.0, True, None])
def test_partition_count_must_be_a_positive_int(n):
    with pytest.raises(InvalidArgument, match="num_partitions"):
        murmur2_partition(b"k", n)
    with pytest.raises(InvalidArgument, match="num_partitions"):
        xxhash_partition(b"k", n)


def test_xxhash_partition_is_xxh32_mod_n():
    for key in (b"", b"a", b"customer-42", bytes(range(200))):
        assert xxhash_partition(key, 7) == xxhash.xxh32_intdigest(key) % 7
    with pytest.raises(TypeError):
        xxhash_partition("str-key", 3)


# ------------------------------------------------------------- batch wrappers

@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=16)), max_size=40),
       st.integers(1, 100))
def test_batch_wrappers_match_single_calls(keys, n):
    buf = b"".join(k for k in keys if k is not None)
    lens = [-1 if k is None else len(k) for k in keys]
    hashes = murmur2_batch(buf, lens)
    assert hashes.dtype == np.int32
    assert hashes.tolist() == [0 if k is None else murmur2(k) for k in keys]
    parts = murmur2_partitions(bytearray(buf), np.array(lens, dtype=np.int64), n)
    assert parts.tolist() == [-1 if k is None else murmur2_partition(k, n) for k in keys]


def test_batch_wrappers_with_record_array_positions():
    buf = b"..key-one...key-2.."
    pos = np.array([2, 12, 0], dtype=np.int64)
    lens = np.array([7, 5, -1], dtype=np.int32)
    assert murmur2_batch(buf, lens, pos).tolist() == [murmur2(b"key-one"), murmur2(b"key-2"), 0]
    assert murmur2_partitions(buf, lens, 4, positions=pos).tolist() == [
        murmur2_partition(b"key-one", 4), murmur2_partition(b"key-2", 4), -1]


def test_batch_wrappers_reject_bad_input():
    with pytest.raises(InvalidArgument, match="past the 4-byte buffer"):
        murmur2_batch(b"abcd", [2, 3])
    with pytest.raises(InvalidArgument, match="past the 4-byte buffer"):
        murmur2_partitions(b"abcd", [1], 3, positions=[-1])
    with pytest.raises(InvalidArgument, match="shape"):
        murmur2_batch(b"abcd", [1, 1], positions=[0])
    with pytest.raises(InvalidArgument, match="lengths"):
        murmur2_batch(b"abcd", [1 << 40])
    with pytest.raises(InvalidArgument, match="one-dimensional"):
        murmur2_batch(b"abcd", [[1], [1]])
    with pytest.raises(InvalidArgument, match="num_partitions"):
        murmur2_partitions(b"abcd", [1], 0)
    with pytest.raises(TypeError, match="buffer"):
        murmur2_batch("abcd", [1])
    assert murmur2_batch(b"", []).tolist() == []


# --------------------------------------------------------- DefaultPartitioner

@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=24), min_size=1, max_size=50), st.integers(1, 64))
def test_same_key_same_partition_always(keys, n):
    a = DefaultPartitioner(rng=random.Random(1))
    b = DefaultPartitioner(rng=random.Random(2))
    for _ in range(3):  # second and third rounds hit the key cache
        for k in keys:
            p = a.partition("topic", k, n, 10)
            assert p == murmur2_partition(k, n)
            assert p == b.partition("other-topic", k, n, 1000)
            assert a.partition("topic", None, n, 10) in range(n)  # keyless in between


def test_empty_key_is_a_key_not_keyless():
    p = DefaultPartitioner()
    expected = murmur2_partition(b"", 12)
    assert {p.partition("t", b"", 12, 10_000) for _ in range(50)} == {expected}
    assert p.sticky_partition("t") is None  # the sticky state was never touched


def test_keyed_bytes_like_and_bad_keys():
    p = DefaultPartitioner()
    assert p.partition("t", bytearray(b"foobar"), 9, 1) == murmur2_partition(b"foobar", 9)
    assert p.partition("t", memoryview(b"foobar"), 9, 1) == murmur2_partition(b"foobar", 9)
    for bad in ("foobar", 17, 1.5, (1,)):
        with pytest.raises(TypeError, match="key must be bytes"):
            p.partition("t", bad, 9, 1)
    with pytest.raises(InvalidArgument, match="num_partitions"):
        p.partition("t", b"k", 0, 1)
    with pytest.raises(InvalidArgument, match="num_partitions"):
        p.partition("t", None, 0, 1)


def test_xxhash_option():
    p = DefaultPartitioner(hash="xxhash")
    for key in (b"", b"a", b"customer-42", bytearray(b"xyz")):
        assert p.partition("t", key, 5, 1) == xxhash.xxh32_intdigest(bytes(key)) % 5
    with pytest.raises(TypeError, match="key must be bytes"):
        p.partition("t", "str-key", 5, 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": -1}, "batch.size"),
    ({"batch_size": 1.5}, "batch.size"),
    ({"hash": "crc32"}, "partitioner"),
    ({"hash": "MURMUR2"}, "partitioner"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(InvalidConfig, match=match):
        DefaultPartitioner(**kwargs)


def test_key_cache_turns_itself_off_for_unique_keys_and_stays_correct(monkeypatch):
    monkeypatch.setattr(partitioner_mod, "KEY_CACHE_CAPACITY", 8)
    monkeypatch.setattr(partitioner_mod, "KEY_CACHE_RETRY_MISSES", 20)
    p = DefaultPartitioner()
    # Repeating keys: the cache stays on.
    for _ in range(10):
        for i in range(8):
            assert p.partition("t", b"k%d" % i, 5, 1) == murmur2_partition(b"k%d" % i, 5)
    assert p._cache_on
    # Unique keys: once the cache is full with no hits, it is switched off ...
    for i in range(20):
        assert p.partition("t", b"u%d" % i, 5, 1) == murmur2_partition(b"u%d" % i, 5)
    assert not p._cache_on
    assert len(p._cache) == 0
    # ... and retried after KEY_CACHE_RETRY_MISSES keyed calls.
    for i in range(20, 60):
        assert p.partition("t", b"u%d" % i, 5, 1) == murmur2_partition(b"u%d" % i, 5)
    assert p._cache_on


# ----------------------------------------------------------- uniform sticky

def _run_keyless(p: DefaultPartitioner, topic: str, n: int, sizes):
    return [p.partition(topic, None, n, s) for s in sizes]


def test_sticky_stays_until_batch_size_bytes_then_switches_to_another():
    p = DefaultPartitioner(batch_size=1000, rng=random.Random(3))
    parts = _run_keyless(p, "t", 6, [100] * 10_000)
    # Runs of exactly 10 records (the 10th brings the count to batch.size).
    runs = [parts[i:i + 10] for i in range(0, len(parts), 10)]
    for run in runs:
        assert len(set(run)) == 1
    for prev, nxt in zip(runs, runs[1:]):
        assert prev[0] != nxt[0]  # never the same partition twice in a row


def test_switch_happens_on_the_record_that_reaches_batch_size():
    p = DefaultPartitioner(batch_size=1000, rng=random.Random(5))
    first = p.partition("t", None, 4, 999)
    assert p.sticky_partition("t") == first          # 999 < 1000: stay
    assert p.partition("t", None, 4, 1) == first     # this record reaches 1000 ...
    assert p.sticky_partition("t") != first          # ... so the next one moves
    second = p.partition("t", None, 4, 5000)         # one big record: its own batch
    assert second != first
    assert p.sticky_partition("t") != second


def test_keyless_spread_is_even_over_many_batches():
    n = 8
    p = DefaultPartitioner(batch_size=1000, rng=random.Random(2024))
    parts = _run_keyless(p, "t", n, [100] * 400_000)  # 40,000 sticky batches of 10
    batches = Counter(parts[::10])
    assert sorted(batches) == list(range(n))
    expected = 40_000 / n
    chi2 = sum((batches[i] - expected) ** 2 / expected for i in range(n))
    # Chi-square with 7 degrees of freedom stays below 24.3 with probability 0.999 for
    # a uniform choice; one partition favoured by 10% gives about 70 here.
    assert chi2 < 24.3
    # Moves go to every other partition, not along a fixed cycle.
    moves = Counter((a, b) for a, b in zip(parts, parts[1:]) if a != b)
    assert len(moves) == n * (n - 1)


def test_one_partition_topic_always_gets_zero():
    p = DefaultPartitioner(batch_size=10, rng=random.Random(1))
    assert set(_run_keyless(p, "t", 1, [7] * 100)) == {0}


def test_batch_size_zero_moves_after_every_record():
    p = DefaultPartitioner(batch_size=0, rng=random.Random(9))
    parts = _run_keyless(p, "t", 3, [1] * 300)
    assert all(a != b for a, b in zip(parts, parts[1:]))


def test_topics_stick_independently():
    p = DefaultPartitioner(batch_size=1000, rng=random.Random(11))
    a0 = p.partition("a", None, 10, 500)
    b0 = p.partition("b", None, 10, 999)
    assert p.partition("a", None, 10, 400) == a0  # a has 900 bytes: still sticky
    assert p.partition("b", None, 10, 1) == b0   # b reaches 1000 here
    assert p.sticky_partition("a") == a0
    assert p.sticky_partition("b") != b0


def test_partition_count_change_repicks_within_range():
    p = DefaultPartitioner(batch_size=1 << 30, rng=random.Random(0))
    for trial in range(50):
        p.forget_topic("t")
        assert p.sticky_partition("t") is None
        p.partition("t", None, 100, 1)
        p.partition("t", None, 3, 1)  # fewer partitions now: must not keep e.g. 57
        assert p.sticky_partition("t") in range(3)
        assert p.partition("t", None, 3, 1) in range(3)


def test_seeded_partitioners_are_reproducible():
    a = DefaultPartitioner(batch_size=500, rng=random.Random(42))
    b = DefaultPartitioner(batch_size=500, rng=random.Random(42))
    sizes = [random.Random(1).randrange(1, 300) for _ in range(2000)]
    assert _run_keyless(a, "t", 7, sizes) == _run_keyless(b, "t", 7, sizes)


def test_the_c_extension_s_murmur2_is_the_core_s_on_any_length():
    """partitioner.murmur2 goes through pylog._native._records (it keeps the GIL up to
    64 KiB, releases it above): the same hash as the core's pl_murmur2, both ways."""
    from pylog._native import _records, lib
    for n in (0, 1, 3, 4, 5, 63, 1000, 64 << 10, (64 << 10) + 1, 200_000):
        key = bytes((i * 131 + n) & 0xFF for i in range(n))
        assert _records.murmur2(key) == lib.pl_murmur2(key, n)
    for bad in ("text", bytearray(b"k"), None, 5):
        with pytest.raises(TypeError, match="bytes"):
            _records.murmur2(bad)
    with pytest.raises(TypeError):
        _records.murmur2(b"a", b"b")
