"""__consumer_offsets records: Kafka's schemas byte for byte, round trips, bad input, and the
group -> partition mapping against values computed by Java's String.hashCode (jshell)."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.broker.offsets_topic import (GroupMetadataKey, GroupMetadataValue, MemberMetadata,
                                        OffsetKey, OffsetValue, decode_group_metadata_value,
                                        decode_key, decode_offset_value,
                                        encode_group_metadata_key, encode_group_metadata_value,
                                        encode_offset_key, encode_offset_value,
                                        group_metadata_record, group_metadata_tombstone,
                                        java_string_hash, offset_commit_record,
                                        offset_tombstone, partition_for_group)
from pylog.errors import CorruptRecordError, InvalidArgument

names = st.text(max_size=40)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


def kstr(s: str) -> bytes:
    """Kafka's non-nullable string: int16 length, UTF-8 bytes (built independently)."""
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


# --- hand-built bytes from the schema --------------------------------------------------


def test_key_v1_bytes_follow_the_schema():
    expected = b"\x00\x01" + b"\x00\x07billing" + b"\x00\x06orders" + b"\x00\x00\x00\x05"
    assert encode_offset_key("billing", "orders", 5) == expected
    assert decode_key(expected) == OffsetKey("billing", "orders", 5)


def test_key_v0_has_the_same_layout():
    raw = b"\x00\x00" + kstr("g") + kstr("t") + struct.pack(">i", 7)
    assert decode_key(raw) == OffsetKey("g", "t", 7)
    assert encode_offset_key("g", "t", 7, version=0) == raw


def test_value_v3_bytes_follow_the_schema():
    v = OffsetValue(offset=42, metadata="m", commit_timestamp=1_700_000_000_123, leader_epoch=3)
    expected = (b"\x00\x03" + struct.pack(">q", 42) + struct.pack(">i", 3) + b"\x00\x01m"
                + struct.pack(">q", 1_700_000_000_123))
    assert encode_offset_value(v) == expected
    assert decode_offset_value(expected) == v


def test_value_v1_carries_the_expire_timestamp():
    raw = (b"\x00\x01" + struct.pack(">q", 9) + kstr("meta") + struct.pack(">q", 100)
           + struct.pack(">q", 200))
    assert decode_offset_value(raw) == OffsetValue(9, "meta", 100, -1, 200)
    assert encode_offset_value(OffsetValue(9, "meta", 100, -1, 200), version=1) == raw


@pytest.mark.parametrize("version", [0, 2])
def test_value_v0_v2_have_no_epoch_or_expiry(version):
    raw = struct.pack(">h", version) + struct.pack(">q", 1) + kstr("") + struct.pack(">q", 5)
    assert decode_offset_value(raw) == OffsetValue(1, "", 5)
    # writing an older version drops the fields it does not have
    assert encode_offset_value(OffsetValue(1, "", 5, leader_epoch=8, expire_timestamp=9),
                               version=version) == raw


def test_group_metadata_key_is_recognised():
    raw = b"\x00\x02" + kstr("grp")
    assert decode_key(raw) == GroupMetadataKey("grp")
    assert encode_group_metadata_key("grp") == raw


def test_record_helpers():
    key, value = offset_commit_record("g", "t", 1, OffsetValue(5))
    assert decode_key(key) == OffsetKey("g", "t", 1)
    assert decode_offset_value(value).offset == 5
    k2, tomb = offset_tombstone("g", "t", 1)
    assert k2 == key and tomb is None


# --- round trips ------------------------------------------------------------------------


@given(names, names, st.integers(0, 2**31 - 1), st.sampled_from([0, 1]))
def test_key_round_trip(group, topic, partition, version):
    assert decode_key(encode_offset_key(group, topic, partition, version)) == \
        OffsetKey(group, topic, partition)


@given(i64, names, i64, i32, i64, st.sampled_from([0, 1, 2, 3]))
def test_value_round_trip(offset, metadata, ts, epoch, expire, version):
    v = OffsetValue(offset, metadata, ts, epoch, expire)
    back = decode_offset_value(encode_offset_value(v, version))
    assert back.offset == offset and back.metadata == metadata and back.commit_timestamp == ts
    assert back.leader_epoch == (epoch if version >= 3 else -1)
    assert back.expire_timestamp == (expire if version == 1 else -1)


# --- bad input -----------------------------------------------------------------------------


def test_truncated_and_trailing_bytes_are_corrupt():
    key = encode_offset_key("g", "t", 1)
    for cut in range(len(key)):
        with pytest.raises(CorruptRecordError, match="truncated"):
            decode_key(key[:cut])
    with pytest.raises(CorruptRecordError, match="trailing"):
        decode_key(key + b"\x00")
    value = encode_offset_value(OffsetValue(1, "x", 2))
    for cut in range(len(value)):
        with pytest.raises(CorruptRecordError, match="truncated"):
            decode_offset_value(value[:cut])
    with pytest.raises(CorruptRecordError, match="trailing"):
        decode_offset_value(value + b"\x01")


def test_unknown_versions_are_corrupt():
    with pytest.raises(CorruptRecordError, match="unknown key version 9"):
        decode_key(b"\x00\x09" + kstr("g"))
    with pytest.raises(CorruptRecordError, match="unknown value version 4"):
        decode_offset_value(b"\x00\x04" + b"\x00" * 30)


def test_null_or_non_utf8_strings_are_corrupt():
    with pytest.raises(CorruptRecordError, match="null"):
        decode_key(b"\x00\x01\xff\xff")
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        decode_key(b"\x00\x01\x00\x01\xff" + kstr("t") + b"\x00\x00\x00\x00")


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidArgument, match="version"):
        encode_offset_key("g", "t", 0, version=2)
    with pytest.raises(InvalidArgument, match="partition"):
        encode_offset_key("g", "t", 2**31)
    with pytest.raises(InvalidArgument, match="group id"):
        encode_offset_key(b"g", "t", 0)
    with pytest.raises(InvalidArgument, match="32767"):
        encode_offset_key("g" * 40000, "t", 0)
    with pytest.raises(InvalidArgument, match="bytes"):
        decode_key("not bytes")
    with pytest.raises(InvalidArgument, match="offset"):
        encode_offset_value(OffsetValue(2**63))


# --- partition_for_group ----------------------------------------------------------------------

#: (string, String.hashCode(), abs-hash % 50, abs-hash % 7) printed by jshell (OpenJDK).
JAVA = [
    ("", 0, 0, 0),
    ("g", 103, 3, 5),
    ("hello", 99162322, 22, 0),
    ("billing", -109829509, 9, 6),
    ("polygenelubricants", -2147483648, 0, 0),  # Integer.MIN_VALUE: Utils.abs gives 0
    ("Aa", 2112, 12, 5),
    ("BB", 2112, 12, 5),
    ("consumer-group-1", 147483020, 20, 6),
    ("gr\u00fc\u00dfe", 98768023, 23, 4),
    ("emoji-\U0001F600", 1164511306, 6, 0),  # a surrogate pair: two UTF-16 units
    ("my-app", -1061206400, 0, 2),
]


@pytest.mark.parametrize("s,h,p50,p7", JAVA)
def test_java_hash_and_partition(s, h, p50, p7):
    assert java_string_hash(s) == h
    assert partition_for_group(s, 50) == p50
    assert partition_for_group(s, 7) == p7


@given(names, st.integers(1, 200))
def test_partition_in_range(group, n):
    assert 0 <= partition_for_group(group, n) < n


def test_partition_count_must_be_positive():
    for bad in (0, -1, True, 2.0):
        with pytest.raises(InvalidArgument, match="num_partitions"):
            partition_for_group("g", bad)


# --- group metadata values ------------------------------------------------------------------


def kbytes(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b


def test_group_metadata_value_v3_bytes_follow_the_schema():
    value = GroupMetadataValue("consumer", 4, "range", "m-1", 1234, (
        MemberMetadata("m-1", "app", "", 300_000, 45_000, b"sub", b"asg"),))
    expected = (b"\x00\x03" + kstr("consumer") + struct.pack(">i", 4) + kstr("range") + kstr("m-1")
                + struct.pack(">q", 1234) + struct.pack(">i", 1)
                + kstr("m-1") + b"\xff\xff" + kstr("app") + kstr("")
                + struct.pack(">ii", 300_000, 45_000) + kbytes(b"sub") + kbytes(b"asg"))
    assert encode_group_metadata_value(value) == expected
    assert decode_group_metadata_value(expected) == value


def test_group_metadata_value_v0_has_no_timestamp_rebalance_timeout_or_instance_id():
    raw = (b"\x00\x00" + kstr("consumer") + struct.pack(">i", 2) + b"\xff\xff" + b"\xff\xff"
           + struct.pack(">i", 1) + kstr("m") + kstr("c") + kstr("/127.0.0.1")
           + struct.pack(">i", 10_000) + kbytes(b"") + kbytes(b"x"))
    v = decode_group_metadata_value(raw)
    assert (v.protocol, v.leader, v.current_state_timestamp) == (None, None, -1)
    assert v.members == (MemberMetadata("m", "c", "/127.0.0.1", -1, 10_000, b"", b"x"),)
    assert encode_group_metadata_value(v, version=0) == raw


members = st.lists(st.builds(MemberMetadata, names, names, names, i32, i32, st.binary(max_size=20),
                             st.binary(max_size=20), st.none() | names), max_size=4)


@given(names, i32, st.none() | names, st.none() | names, i64, members, st.sampled_from([0, 1, 2, 3]))
def test_group_metadata_value_round_trip(ptype, gen, proto, leader, ts, ms, version):
    v = GroupMetadataValue(ptype, gen, proto, leader, ts, tuple(ms))
    back = decode_group_metadata_value(encode_group_metadata_value(v, version))
    assert (back.protocol_type, back.generation, back.protocol, back.leader) == (ptype, gen, proto, leader)
    assert back.current_state_timestamp == (ts if version >= 2 else -1)
    for a, b in zip(back.members, ms, strict=True):
        assert (a.member_id, a.client_id, a.client_host, a.session_timeout_ms, a.subscription,
                a.assignment) == (b.member_id, b.client_id, b.client_host, b.session_timeout_ms,
                                  b.subscription, b.assignment)
        assert a.rebalance_timeout_ms == (b.rebalance_timeout_ms if version >= 1 else -1)
        assert a.group_instance_id == (b.group_instance_id if version >= 3 else None)


def test_group_metadata_value_bad_bytes_are_corrupt():
    raw = encode_group_metadata_value(GroupMetadataValue("consumer", 1, "range", "m", 5, (
        MemberMetadata("m", "c", "", 1, 2, b"s", b"a"),)))
    for cut in range(len(raw)):
        with pytest.raises(CorruptRecordError):
            decode_group_metadata_value(raw[:cut])
    with pytest.raises(CorruptRecordError, match="trailing"):
        decode_group_metadata_value(raw + b"\x00")
    with pytest.raises(CorruptRecordError, match="version 4 .*flexible"):
        decode_group_metadata_value(b"\x00\x04" + raw[2:])
    # a null assignment, and a member count larger than the bytes can hold
    null_assignment = raw[:-5] + b"\xff\xff\xff\xff"
    with pytest.raises(CorruptRecordError, match="null assignment"):
        decode_group_metadata_value(null_assignment)
    i = raw.index(struct.pack(">i", 1), 2 + len(kstr("consumer")) + 4 + len(kstr("range")) + len(kstr("m")) + 8)
    with pytest.raises(CorruptRecordError, match="members count"):
        decode_group_metadata_value(raw[:i] + struct.pack(">i", 10_000) + raw[i + 4:])


@given(st.binary(max_size=200))
def test_group_metadata_value_fuzz_never_crashes(data):
    try:
        decode_group_metadata_value(data)
    except CorruptRecordError:
        pass


def test_group_metadata_record_helpers():
    key, value = group_metadata_record("g", GroupMetadataValue("consumer", 1, None, None))
    assert decode_key(key) == GroupMetadataKey("g")
    assert decode_group_metadata_value(value).members == ()
    assert group_metadata_tombstone("g") == (key, None)
    with pytest.raises(InvalidArgument, match="version"):
        encode_group_metadata_value(GroupMetadataValue("c", 1, None, None), version=4)
    with pytest.raises(InvalidArgument, match="member"):
        encode_group_metadata_value(GroupMetadataValue("c", 1, None, None, members=("m",)))
