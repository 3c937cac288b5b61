"""The records browser: one page of a partition, by offset or by timestamp.

A page costs two ListOffsets (log start and end, and the timestamp's offset when
asked by time) and Fetches from the leader of at most ``MAX_FETCH_BYTES`` each until
``limit`` records are read: never the whole partition.  Offsets outside [log start,
log end] raise :class:`NotFound` naming the partition's range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from pylog.client.network.admin import AdminClient, TopicDescription, TopicPartitionInfo, kafka_error
from pylog.client.network.records import whole_prefix
from pylog.errors import PylogError
from pylog.protocol import ApiKey
from pylog.records.batch import Record, record_list

__all__ = ["NotFound", "BrowsePage", "browse", "MAX_FETCH_BYTES"]

#: Bytes one Fetch of the browser asks for (a batch larger than this still comes whole,
#: as Kafka answers the first batch whatever its size).
MAX_FETCH_BYTES = 1 << 20
_MAX_FETCHES = 8


class NotFound(PylogError):
    """A topic, partition, group or offset in a URL that the cluster does not have."""


@dataclass
class BrowsePage:
    records: List[Record]
    log_start: int
    log_end: int
    start: int
    prev_offset: Optional[int]
    next_offset: Optional[int]


def _fetch(admin: AdminClient, t: TopicDescription, p: TopicPartitionInfo, offset: int) -> bytes:
    body = {"cluster_id": None, "replica_id": -1, "replica_state": {"replica_id": -1, "replica_epoch": -1},
            "max_wait": 0, "min_bytes": 1, "max_bytes": MAX_FETCH_BYTES, "isolation_level": 0, "session_id": 0,
            "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic": t.name, "topic_id": t.topic_id, "partitions": [
                {"partition": p.partition, "current_leader_epoch": -1, "fetch_offset": offset,
                 "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": MAX_FETCH_BYTES}]}]}
    resp = admin.request(p.leader, ApiKey.FETCH, body, what=f"Fetch of {t.name}-{p.partition}")
    code = int(getattr(resp, "error_code", 0))
    if code:
        raise kafka_error(code, f"Fetch of {t.name}-{p.partition}")
    for tr in resp.responses:
        for pr in tr.partitions:
            if int(pr.partition_index) != p.partition:
                continue
            if int(pr.error_code):
                raise kafka_error(int(pr.error_code), f"Fetch of {t.name}-{p.partition}")
            data = bytes(pr.records or b"")
            return data[:whole_prefix(data)[0]]
    return b""


def browse(admin: AdminClient, t: TopicDescription, p: TopicPartitionInfo, *, offset: Optional[int] = None,
           timestamp: Optional[int] = None, limit: int = 50) -> BrowsePage:
    """Up to ``limit`` records of ``t``-``p.partition`` from ``offset`` (default: the log
    start), or from the first record at or after ``timestamp`` (ms)."""
    if p.leader < 0:
        raise NotFound(f"{t.name}-{p.partition} has no leader: its records cannot be read now")
    tp = (t.name, p.partition)
    lead = {tp: p.leader}
    log_start = admin.list_offsets({tp: -2}, leaders=lead)[tp][0]
    log_end = admin.list_offsets({tp: -1}, leaders=lead)[tp][0]
    if timestamp is not None:
        found = admin.list_offsets({tp: timestamp}, leaders=lead)[tp][0]
        start = log_end if found < 0 else found
    elif offset is not None:
        if not log_start <= offset <= log_end:
            raise NotFound(f"offset {offset} is not in {t.name}-{p.partition} "
                           f"(log start {log_start}, end {log_end})")
        start = offset
    else:
        start = log_start
    out: List[Record] = []
    at = start
    for _ in range(_MAX_FETCHES):
        if len(out) >= limit or at >= log_end:
            break
        data = _fetch(admin, t, p, at)
        if not data:
            break
        got = record_list(data, at, log_end, check_crcs=True)
        if not got:
            break
        out.extend(got[:limit - len(out)])
        at = out[-1].offset + 1
    nxt = out[-1].offset + 1 if out and out[-1].offset + 1 < log_end else None
    prev = max(log_start, start - limit) if start > log_start else None
    return BrowsePage(out, log_start, log_end, start, prev, nxt)


