"""Records of the internal topic ``__consumer_offsets``, byte for byte as Kafka writes them.

This module owns the key/value encoding of committed offsets, the mapping of a group to
its partition of the topic, and the topic's own shape (:func:`offsets_topic_spec`:
partition count, replication factor and settings, from the broker configuration) that the
embedded Broker and LocalCluster both create it with.  It does no I/O: the group service hands the encoded pairs to
the broker, which appends them as one batch, and replays them through :func:`decode_key` /
:func:`decode_offset_value` at startup.

Layouts (Kafka's ``OffsetCommitKey`` / ``OffsetCommitValue`` / ``GroupMetadataKey``
schemas; big-endian; ``string`` = int16 byte length + UTF-8, never null here)::

    key   = version:int16 (0 or 1)  group:string  topic:string  partition:int32
    key   = version:int16 (2)       group:string                     -- group metadata
    value = version:int16 (0, 2)  offset:int64                metadata:string  commit_ts:int64
    value = version:int16 (1)     offset:int64                metadata:string  commit_ts:int64  expire_ts:int64
    value = version:int16 (3)     offset:int64  leader_epoch:int32  metadata:string  commit_ts:int64

    group metadata value (Kafka's ``GroupMetadataValue``, versions 0-3)::

        version:int16  protocol_type:string  generation:int32  protocol:nullable string
        leader:nullable string  [current_state_ts:int64 (v2+)]
        members:int32 count, each:
            member_id:string  [group_instance_id:nullable string (v3+)]  client_id:string
            client_host:string  [rebalance_timeout:int32 (v1+)]  session_timeout:int32
            subscription:bytes(int32 length)  assignment:bytes(int32 length)

A record with an offset-commit key and a null value (a tombstone) deletes the committed
offset; the topic is compacted, so the last record per key is the state.  pylog writes key
version 1 and value version 3, as Kafka 2.1+ does; it reads every version above.

Group metadata records (key version 2) hold a group's membership as of its last completed
rebalance: the coordinator writes one when a generation's assignments are set and when
the group becomes empty, and a tombstone when the group is deleted.  A coordinator that
takes the group over (its broker now leads the partition) replays it, so the members
keep their generation and assignments and carry on without a rebalance.  pylog writes
value version 3 and reads 0-3 (version 4, Kafka 3.5's flexible encoding, is refused with
CorruptRecordError naming it).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from pylog.errors import CorruptRecordError, InvalidArgument
from pylog.records.wire import I16, I32, I64, WireReader
from pylog.util import check_int

__all__ = [
    "OFFSETS_TOPIC",
    "OFFSETS_TOPIC_NUM_PARTITIONS",
    "OFFSET_COMMIT_KEY_VERSION",
    "OFFSET_COMMIT_VALUE_VERSION",
    "GROUP_METADATA_KEY_VERSION",
    "OffsetKey",
    "GroupMetadataKey",
    "OffsetValue",
    "GroupMetadataValue",
    "MemberMetadata",
    "GROUP_METADATA_VALUE_VERSION",
    "encode_offset_key",
    "encode_offset_value",
    "encode_group_metadata_key",
    "decode_key",
    "decode_offset_value",
    "encode_group_metadata_value",
    "decode_group_metadata_value",
    "group_metadata_record",
    "group_metadata_tombstone",
    "offset_commit_record",
    "offset_tombstone",
    "java_string_hash",
    "partition_for_group",
    "OffsetsTopicSpec",
    "offsets_topic_spec",
]

#: Name of the internal topic.
OFFSETS_TOPIC = "__consumer_offsets"
#: Kafka's offsets.topic.num.partitions default.
OFFSETS_TOPIC_NUM_PARTITIONS = 50
#: Key version pylog writes for committed offsets (versions 0 and 1 share one layout).
OFFSET_COMMIT_KEY_VERSION = 1
#: Value version pylog writes (with the leader epoch; no expire timestamp).
OFFSET_COMMIT_VALUE_VERSION = 3
#: Key version of group metadata records.
GROUP_METADATA_KEY_VERSION = 2
#: Group metadata value version pylog writes (with the state timestamp and static member ids).
GROUP_METADATA_VALUE_VERSION = 3
#: Longest string the int16 length prefix can describe.
MAX_STRING_BYTES = 0x7FFF

_I16, _I32, _I64 = I16, I32, I64


@dataclass(frozen=True)
class OffsetKey:
    """Key of a committed offset: which group's position in which partition."""

    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupMetadataKey:
    """Key of a group metadata record (key version 2)."""

    group: str


@dataclass(frozen=True)
class OffsetValue:
    """A committed offset.  ``leader_epoch`` -1 = unknown; ``expire_timestamp`` is only
    carried by value version 1 (-1 = none); timestamps are ms since the epoch."""

    offset: int
    metadata: str = ""
    commit_timestamp: int = -1
    leader_epoch: int = -1
    expire_timestamp: int = -1


@dataclass(frozen=True)
class MemberMetadata:
    """One member of a group as its metadata record stores it: ``subscription`` is the
    member's metadata for the group's chosen protocol, ``assignment`` what the leader
    gave it; timeouts in ms."""

    member_id: str
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = -1
    session_timeout_ms: int = 0
    subscription: bytes = b""
    assignment: bytes = b""
    group_instance_id: Optional[str] = None


@dataclass(frozen=True)
class GroupMetadataValue:
    """A group's membership after its last completed rebalance (no members: the group
    is Empty).  ``current_state_timestamp`` is ms since the epoch (-1 = unknown)."""

    protocol_type: str
    generation: int
    protocol: Optional[str]
    leader: Optional[str]
    current_state_timestamp: int = -1
    members: Tuple[MemberMetadata, ...] = ()


# --- primitive writers / readers ---------------------------------------------------------


def _w_string(out: bytearray, value: str, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a str, got {type(value).__name__}")
    raw = value.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raise InvalidArgument(f"{what} is {len(raw)} bytes in UTF-8; at most {MAX_STRING_BYTES}")
    out += _I16.pack(len(raw))
    out += raw


def _w_nullable_string(out: bytearray, value: Optional[str], what: str) -> None:
    if value is None:
        out += _I16.pack(-1)
    else:
        _w_string(out, value, what)


def _w_bytes(out: bytearray, value: bytes, what: str) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"{what} must be bytes, got {type(value).__name__}")
    out += _I32.pack(len(value))
    out += value


def _w_int(out: bytearray, st: struct.Struct, value: int, what: str) -> None:
    check_int(what, value)
    try:
        out += st.pack(value)
    except struct.error:
        raise InvalidArgument(f"{what} {value} does not fit in {st.size * 8} bits") from None


# --- keys and values ----------------------------------------------------------------------


def encode_offset_key(group: str, topic: str, partition: int,
                      version: int = OFFSET_COMMIT_KEY_VERSION) -> bytes:
    """The ``__consumer_offsets`` key of ``group``'s offset for ``topic``-``partition``."""
    if version not in (0, 1):
        raise InvalidArgument(f"offset commit key version must be 0 or 1, got {version!r}")
    out = bytearray(_I16.pack(version))
    _w_string(out, group, "group id")
    _w_string(out, topic, "topic")
    _w_int(out, _I32, partition, "partition")
    return bytes(out)


def encode_group_metadata_key(group: str) -> bytes:
    """The key (version 2) of ``group``'s metadata record."""
    out = bytearray(_I16.pack(GROUP_METADATA_KEY_VERSION))
    _w_string(out, group, "group id")
    return bytes(out)


def encode_offset_value(value: OffsetValue, version: int = OFFSET_COMMIT_VALUE_VERSION) -> bytes:
    """Encode ``value`` in value ``version`` 0-3.  Fields the version lacks are dropped
    (leader epoch below 3, expire timestamp outside 1)."""
    if version not in (0, 1, 2, 3):
        raise InvalidArgument(f"offset commit value version must be 0-3, got {version!r}")
    if not isinstance(value, OffsetValue):
        raise InvalidArgument(f"value must be an OffsetValue, got {type(value).__name__}")
    out = bytearray(_I16.pack(version))
    _w_int(out, _I64, value.offset, "offset")
    if version >= 3:
        _w_int(out, _I32, value.leader_epoch, "leader epoch")
    _w_string(out, value.metadata, "offset metadata")
    _w_int(out, _I64, value.commit_timestamp, "commit timestamp")
    if version == 1:
        _w_int(out, _I64, value.expire_timestamp, "expire timestamp")
    return bytes(out)


def decode_key(data: bytes) -> Union[OffsetKey, GroupMetadataKey]:
    """Decode a ``__consumer_offsets`` key; raises :class:`CorruptRecordError` naming the
    problem for a truncated key, trailing bytes or an unknown key version."""
    r = WireReader(data, "__consumer_offsets key")
    version = r.i16("version")
    if version in (0, 1):
        key: Union[OffsetKey, GroupMetadataKey] = OffsetKey(
            r.string("group"), r.string("topic"), r.i32("partition"))
    elif version == GROUP_METADATA_KEY_VERSION:
        key = GroupMetadataKey(r.string("group"))
    else:
        raise CorruptRecordError(f"__consumer_offsets key: unknown key version {version}")
    r.end()
    return key


def decode_offset_value(data: bytes) -> OffsetValue:
    """Decode an offset commit value of version 0-3 (see the module docstring)."""
    r = WireReader(data, "__consumer_offsets offset value")
    version = r.i16("version")
    if version not in (0, 1, 2, 3):
        raise CorruptRecordError(
            f"__consumer_offsets offset value: unknown value version {version}")
    offset = r.i64("offset")
    leader_epoch = r.i32("leader epoch") if version >= 3 else -1
    metadata = r.string("metadata")
    commit_ts = r.i64("commit timestamp")
    expire_ts = r.i64("expire timestamp") if version == 1 else -1
    r.end()
    return OffsetValue(offset, metadata, commit_ts, leader_epoch, expire_ts)


def encode_group_metadata_value(value: GroupMetadataValue,
                                version: int = GROUP_METADATA_VALUE_VERSION) -> bytes:
    """Encode ``value`` in group metadata value ``version`` 0-3 (fields a version lacks
    are dropped: the state timestamp below 2, rebalance timeouts below 1, static member
    ids below 3)."""
    if version not in (0, 1, 2, 3):
        raise InvalidArgument(f"group metadata value version must be 0-3, got {version!r}")
    if not isinstance(value, GroupMetadataValue):
        raise InvalidArgument(f"value must be a GroupMetadataValue, got {type(value).__name__}")
    out = bytearray(_I16.pack(version))
    _w_string(out, value.protocol_type, "protocol type")
    _w_int(out, _I32, value.generation, "generation")
    _w_nullable_string(out, value.protocol, "protocol")
    _w_nullable_string(out, value.leader, "leader")
    if version >= 2:
        _w_int(out, _I64, value.current_state_timestamp, "current state timestamp")
    out += _I32.pack(len(value.members))
    for m in value.members:
        if not isinstance(m, MemberMetadata):
            raise InvalidArgument(f"a member must be a MemberMetadata, got {type(m).__name__}")
        _w_string(out, m.member_id, "member id")
        if version >= 3:
            _w_nullable_string(out, m.group_instance_id, "group instance id")
        _w_string(out, m.client_id, "client id")
        _w_string(out, m.client_host, "client host")
        if version >= 1:
            _w_int(out, _I32, m.rebalance_timeout_ms, "rebalance timeout")
        _w_int(out, _I32, m.session_timeout_ms, "session timeout")
        _w_bytes(out, m.subscription, "subscription")
        _w_bytes(out, m.assignment, "assignment")
    return bytes(out)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    """Decode a group metadata value of version 0-3; a truncated or malformed value, or
    another version, raises :class:`CorruptRecordError` naming the problem."""
    r = WireReader(data, "__consumer_offsets group metadata value")
    version = r.i16("version")
    if version not in (0, 1, 2, 3):
        raise CorruptRecordError(
            f"__consumer_offsets group metadata value: unsupported value version {version}"
            + (" (Kafka 3.5's flexible encoding)" if version == 4 else ""))
    protocol_type = r.string("protocol type")
    generation = r.i32("generation")
    protocol = r.string("protocol", nullable=True)
    leader = r.string("leader", nullable=True)
    state_ts = r.i64("current state timestamp") if version >= 2 else -1
    members = []
    # the smallest member: four empty strings (2 bytes each) + 4-byte timeout + two empty byte strings
    for _ in range(r.count("members", 8 + 4 + 8)):
        member_id = r.string("member id")
        instance = r.string("group instance id", nullable=True) if version >= 3 else None
        client_id = r.string("client id")
        client_host = r.string("client host")
        rebalance = r.i32("rebalance timeout") if version >= 1 else -1
        session = r.i32("session timeout")
        subscription = r.nbytes("subscription")
        assignment = r.nbytes("assignment")
        if subscription is None or assignment is None:
            raise CorruptRecordError(
                f"__consumer_offsets group metadata value: member {member_id!r} has a null "
                + ("subscription" if subscription is None else "assignment"))
        members.append(MemberMetadata(member_id or "", client_id or "", client_host or "",
                                      rebalance, session, subscription, assignment, instance))
    r.end()
    return GroupMetadataValue(protocol_type or "", generation, protocol, leader, state_ts,
                              tuple(members))


def group_metadata_record(group: str, value: GroupMetadataValue) -> Tuple[bytes, bytes]:
    """The (key, value) record that stores ``group``'s membership."""
    return encode_group_metadata_key(group), encode_group_metadata_value(value)


def group_metadata_tombstone(group: str) -> Tuple[bytes, Optional[bytes]]:
    """The record that deletes ``group``'s membership record (the group was deleted)."""
    return encode_group_metadata_key(group), None


def offset_commit_record(group: str, topic: str, partition: int,
                         value: OffsetValue) -> Tuple[bytes, bytes]:
    """The (key, value) record that commits ``value`` for the group and partition."""
    return encode_offset_key(group, topic, partition), encode_offset_value(value)


def offset_tombstone(group: str, topic: str, partition: int) -> Tuple[bytes, Optional[bytes]]:
    """The (key, None) record that deletes the group's committed offset for the partition."""
    return encode_offset_key(group, topic, partition), None


# --- partitioning ---------------------------------------------------------------------------


def java_string_hash(s: str) -> int:
    """Java's ``String.hashCode()``: ``s[0]*31^(n-1) + ... + s[n-1]`` over UTF-16 code
    units, wrapped to a signed 32-bit int."""
    if not isinstance(s, str):
        raise InvalidArgument(f"expected a str, got {type(s).__name__}")
    units = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


@dataclass(frozen=True)
class OffsetsTopicSpec:
    """How ``__consumer_offsets`` is created: partitions, replication factor, and the
    topic-level settings it has whatever the broker's topic defaults are."""

    partitions: int  #: offsets.topic.num.partitions
    replication_factor: int  #: offsets.topic.replication.factor (capped: at most the brokers)
    config: Dict[str, Any]  #: Kafka topic-level names -> values


def offsets_topic_spec(config: Any, brokers: int = 1, *, capped: bool = True) -> OffsetsTopicSpec:
    """``__consumer_offsets`` for a broker configuration (a
    :class:`~pylog.broker.config.BrokerConfig`) and a cluster of ``brokers`` brokers, as
    Kafka's GroupMetadataManager makes it: offsets.topic.num.partitions partitions,
    offsets.topic.replication.factor replicas, compacted (the last commit per key is the
    state), segments of offsets.topic.segment.bytes, kept forever by time, and the batches
    stored as the coordinator writes them (compression.type=producer).

    ``capped`` (the embedded Broker and the in-process LocalCluster) caps the
    replication factor at ``brokers``, so that a small cluster can still run groups.
    ``capped=False`` is Kafka's rule, which a cluster of broker processes follows: the
    factor as configured, and the topic cannot be created while fewer brokers are alive
    (``brokers`` is then not used)."""
    check_int("brokers", brokers, min=1)
    rf = config.offsets_topic_replication_factor
    return OffsetsTopicSpec(
        partitions=config.offsets_topic_num_partitions,
        replication_factor=max(1, min(rf, brokers)) if capped else rf,
        config={"cleanup.policy": "compact", "retention.ms": -1, "compression.type": "producer",
                "segment.bytes": config.offsets_topic_segment_bytes})


def partition_for_group(group_id: str, num_partitions: int) -> int:
    """The partition of ``__consumer_offsets`` that holds ``group_id``'s offsets:
    ``Utils.abs(groupId.hashCode()) % num_partitions`` as Kafka computes it (``Utils.abs``
    maps ``Integer.MIN_VALUE`` to 0), so a group lands where Kafka puts it."""
    check_int("num_partitions", num_partitions, min=1)
    h = java_string_hash(group_id)
    h = 0 if h == -(1 << 31) else abs(h)
    return h % num_partitions
