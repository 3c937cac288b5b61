"""The Fetch response, written by hand so record batches go to the socket uncopied.

kio would copy every partition's records into one Python ``bytes``; here the response
is a list of buffers — small ``bytes`` pieces for the fields, and the record batches as
the zero-copy views the log handed out — for the connection to ``writev``/``sendmsg``
as they are.  Nothing here touches a record: the batches are already Kafka's v2
format on disk.

Layout (Kafka's FetchResponse, versions 4-17; flexible from 12)::

    ThrottleTimeMs int32
    ErrorCode int16, SessionId int32                      v7+
    Responses [
      Topic string (v4-12) | TopicId uuid (v13+)
      Partitions [
        PartitionIndex int32, ErrorCode int16, HighWatermark int64,
        LastStableOffset int64, LogStartOffset int64 (v5+),
        AbortedTransactions nullable [ProducerId int64, FirstOffset int64],
        PreferredReadReplica int32 (v11+),
        Records nullable bytes
        (tagged fields v12+: DivergingEpoch 0, CurrentLeader 1, SnapshotId 2)
      ]
    ]
    (tagged fields v16+: NodeEndpoints 0)

pylog writes a tagged field only when it differs from its default: DivergingEpoch
(for a follower whose log diverged) and CurrentLeader (NOT_LEADER_OR_FOLLOWER and
FENCED_LEADER_EPOCH answers, KIP-951).
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from pylog.protocol.codec import RequestHeader, response_header_bytes, write_uvarint

__all__ = ["FetchPartitionData", "FetchTopicData", "encode_fetch_response"]

_PART_V4 = struct.Struct(">ihqq")  # index, error, HW, LSO
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_EPOCH_END = struct.Struct(">iq")  # epoch, end offset
_LEADER = struct.Struct(">ii")  # leader id, leader epoch


@dataclass
class FetchPartitionData:
    """One partition of a Fetch answer.  ``records`` are buffers (batch views) sent as
    they are; ``records_size`` is their total length."""

    index: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: List[Any] = field(default_factory=list)
    records_size: int = 0
    #: (epoch, end offset) where a follower's log diverged from the leader's (v12+).
    diverging_epoch: Optional[Tuple[int, int]] = None
    #: (leader id, leader epoch) for a client whose metadata is stale (v12+).
    current_leader: Optional[Tuple[int, int]] = None


@dataclass
class FetchTopicData:
    name: str
    topic_id: Optional[uuid.UUID]
    partitions: List[FetchPartitionData]


def _tagged_partition_fields(p: FetchPartitionData) -> bytes:
    tags: List[bytes] = []
    if p.diverging_epoch is not None:
        body = _EPOCH_END.pack(*p.diverging_epoch) + b"\0"
        tags.append(write_uvarint(0) + write_uvarint(len(body)) + body)
    if p.current_leader is not None:
        body = _LEADER.pack(*p.current_leader) + b"\0"
        tags.append(write_uvarint(1) + write_uvarint(len(body)) + body)
    return write_uvarint(len(tags)) + b"".join(tags)


def encode_fetch_response(header: RequestHeader, topics: Sequence[FetchTopicData], *,
                          throttle_time_ms: int = 0, error_code: int = 0,
                          session_id: int = 0) -> Tuple[List[Any], int]:
    """The whole response frame (size prefix included) as a list of buffers, and its
    total size in bytes.  ``header`` is the request's (version, correlation id)."""
    v = header.api_version
    flexible = v >= 12
    out: List[Any] = []
    head = bytearray(_I32.pack(throttle_time_ms))
    if v >= 7:
        head += _I16.pack(error_code) + _I32.pack(session_id)
    head += write_uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))
    size = 0
    pending = head  # field bytes accumulate here until a records view must follow
    for t in topics:
        if v >= 13:
            pending += (t.topic_id or uuid.UUID(int=0)).bytes
        else:
            raw = t.name.encode("utf-8")
            pending += write_uvarint(len(raw) + 1) + raw if flexible else _I16.pack(len(raw)) + raw
        parts = t.partitions
        pending += write_uvarint(len(parts) + 1) if flexible else _I32.pack(len(parts))
        for p in parts:
            pending += _PART_V4.pack(p.index, p.error_code, p.high_watermark, p.last_stable_offset)
            if v >= 5:
                pending += _I64.pack(p.log_start_offset)
            # AbortedTransactions: null (read_uncommitted; pylog has no transactions)
            pending += b"\0" if flexible else b"\xff\xff\xff\xff"
            if v >= 11:
                pending += b"\xff\xff\xff\xff"  # PreferredReadReplica -1
            n = p.records_size
            if flexible:
                pending += write_uvarint(n + 1)
            else:
                pending += _I32.pack(n)
            if n:
                out.append(bytes(pending))
                size += len(pending)
                pending = bytearray()
                out.extend(p.records)
                size += n
            if flexible:
                pending += _tagged_partition_fields(p)
        if flexible:
            pending += b"\0"  # topic's tagged fields
    if flexible:
        pending += b"\0"  # response's tagged fields
    out.append(bytes(pending))
    size += len(pending)
    prefix = response_header_bytes(header, size)
    out.insert(0, prefix)
    return out, size + len(prefix)
