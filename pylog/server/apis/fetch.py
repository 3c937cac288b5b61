"""Fetch, ListOffsets and OffsetForLeaderEpoch.

A Fetch reads each partition from the broker as zero-copy batch views and answers with
:func:`~pylog.protocol.fetch.encode_fetch_response`, which sends those views to the
socket as they are.  Limits follow Kafka (KIP-74): each partition gets at most its
``partition_max_bytes`` and the response at most ``max_bytes``, except that the first
partition with data always gets its first batch whole, so a consumer never stalls on
a batch larger than its limits.

When fewer than ``min_bytes`` are available, the fetch waits in the purgatory for an
append to one of its partitions, or for ``max_wait_ms``, then reads again.  Fetch
sessions (KIP-227) are declined: every answer carries session id 0, which tells the
client to send full fetches, as Kafka allows.
"""
from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from pylog.errors import (FencedLeaderEpoch, NotLeaderOrFollower, OffsetOutOfRange, PylogError,
                          TopicAuthorizationFailed, UnknownLeaderEpoch, UnknownTopicId)
from pylog.protocol.fetch import FetchPartitionData, FetchTopicData, encode_fetch_response
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from pylog.server.apis import error_code
from pylog.server.connection import Response
from pylog.server.replication import encode_error
from pylog.server.purgatory import DelayedOperation

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["FetchHandler"]

log = logging.getLogger("pylog.server")

_FETCH_SESSION_ID_NOT_FOUND = 70
_INVALID_FETCH_SESSION_EPOCH = 71
_INVALID_REQUEST = 42


def _ms(value: Any) -> int:
    """kio gives durations as timedelta; the wire has ms."""
    if hasattr(value, "total_seconds"):
        return int(value.total_seconds() * 1000)
    return int(value)


class _Wanted:
    __slots__ = ("topic", "topic_id", "partition", "offset", "max_bytes", "leader_epoch", "error")

    def __init__(self, topic: str, topic_id: Optional[uuid.UUID], partition: int, offset: int,
                 max_bytes: int, leader_epoch: int, error: int = 0) -> None:
        self.topic = topic
        self.topic_id = topic_id
        self.partition = partition
        self.offset = offset
        self.max_bytes = max_bytes
        self.leader_epoch = leader_epoch
        self.error = error


class FetchHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.broker = apis.broker
        self.purgatory = apis.server.purgatory

    # ------------------------------------------------------------------ epochs
    def check_epoch(self, topic: str, partition: int, client_epoch: int) -> None:
        """KIP-320 fencing: a client's epoch older than the leader's is FENCED_LEADER_EPOCH,
        a newer one UNKNOWN_LEADER_EPOCH (-1 skips the check)."""
        if client_epoch < 0:
            return
        ours = self.apis.server.leader_epoch(topic, partition)
        if client_epoch < ours:
            raise FencedLeaderEpoch(f"{topic}-{partition}: leader epoch {client_epoch} is older than {ours}")
        if client_epoch > ours:
            ours = self.apis.server.leader_epoch(topic, partition, refresh=True)
            if client_epoch > ours:
                raise UnknownLeaderEpoch(f"{topic}-{partition}: leader epoch {client_epoch} is newer than {ours}")

    # ------------------------------------------------------------------ Fetch
    def fetch(self, ctx: "RequestContext", req: Any) -> Any:
        v = ctx.version
        replica_id = req.replica_state.replica_id if v >= 15 else req.replica_id
        session_error = 0
        if req.__class__.__dataclass_fields__.get("session_id") is not None:
            if req.session_id != 0:
                session_error = _FETCH_SESSION_ID_NOT_FOUND
            elif req.session_epoch > 0:
                session_error = _INVALID_FETCH_SESSION_EPOCH
        if session_error:
            return ctx.respond({"throttle_time": 0, "error_code": session_error, "session_id": 0, "responses": []})
        wanted: List[_Wanted] = []
        for t in req.topics:
            tid = getattr(t, "topic_id", None)
            name = getattr(t, "topic", None)
            error = 0
            if v >= 13:
                try:
                    name = self.apis.meta.topic_ids.name_of(tid)
                except UnknownTopicId as exc:
                    name, error = "", exc.code
            for p in t.partitions:
                wanted.append(_Wanted(name or "", tid, p.partition, p.fetch_offset, p.partition_max_bytes,
                                      getattr(p, "current_leader_epoch", -1), error))
        if replica_id >= 0:  # a follower: ClusterAction on the cluster (Kafka's rule)
            if not ctx.allowed(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME):
                for w in wanted:
                    w.error = w.error or TopicAuthorizationFailed.code
        else:  # a consumer: Read on each topic
            readable: Dict[str, bool] = {}
            for w in wanted:
                if not w.error:
                    ok = readable.get(w.topic)
                    if ok is None:
                        ok = readable[w.topic] = ctx.allowed(AclOperation.READ, ResourceType.TOPIC, w.topic)
                    if not ok:
                        w.error = TopicAuthorizationFailed.code
        if replica_id >= 0:
            serve = getattr(self.broker, "replica_fetch", None)
            if serve is not None and v >= 12:
                return self._replica_fetch(ctx, req, replica_id, wanted, serve)
            for w in wanted:  # one node (or an old follower): no followers to serve
                w.error = w.error or NotLeaderOrFollower.code
        max_wait_ms = _ms(req.max_wait)
        min_bytes = req.min_bytes
        max_bytes = req.max_bytes
        topics, size, errors = self._read(wanted, max_bytes)
        if size >= min_bytes or max_wait_ms <= 0 or errors:
            return self._encode(ctx, topics)
        fut = self.apis.future()

        def try_complete() -> bool:
            t2, s2, e2 = self._read(wanted, max_bytes)
            if s2 >= min_bytes or e2:
                fut.set_result(self._encode(ctx, t2))
                return True
            return False

        def expire() -> None:
            if not fut.done():
                t2, _, _ = self._read(wanted, max_bytes)
                fut.set_result(self._encode(ctx, t2))

        keys = {(w.topic, w.partition) for w in wanted}
        self.purgatory.add(DelayedOperation(keys, try_complete, expire), max_wait_ms / 1000.0)
        return fut

    def _replica_fetch(self, ctx: "RequestContext", req: Any, replica_id: int, wanted: List[_Wanted],
                       serve: Any) -> Any:
        """A follower's Fetch: the cluster node's replication answers it (see
        :mod:`pylog.server.replication`); replies become Fetch partitions here."""
        last_epochs: Dict[Tuple[str, int], int] = {}
        for t in req.topics:
            for p in t.partitions:
                name = getattr(t, "topic", None) or ""
                last_epochs[(name, p.partition)] = getattr(p, "last_fetched_epoch", -1)
        parts = [{"topic": w.topic, "partition": w.partition, "offset": w.offset,
                  "last_epoch": last_epochs.get((w.topic, w.partition), -1), "leader_epoch": w.leader_epoch,
                  "max_bytes": max(1, w.max_bytes)}
                 for w in wanted if not w.error]
        failed = [w for w in wanted if w.error]
        fut = self.apis.future()

        def done(replies: List[Dict[str, Any]]) -> None:
            topics: Dict[str, FetchTopicData] = {}
            for w in failed:
                topics.setdefault(w.topic, FetchTopicData(w.topic, w.topic_id, [])).partitions.append(
                    FetchPartitionData(w.partition, error_code=w.error))
            for r in replies:
                pd = FetchPartitionData(r["partition"])
                if "error" in r:
                    pd.error_code = encode_error(r["error"])
                elif "diverging" in r:
                    pd.diverging_epoch = tuple(r["diverging"])
                else:
                    pd.high_watermark = pd.last_stable_offset = r["hw"]
                    pd.log_start_offset = r["log_start"]
                    data = r.get("data") or b""
                    if data:
                        pd.records = [data]
                        pd.records_size = len(data)
                topics.setdefault(r["topic"], FetchTopicData(r["topic"], None, [])).partitions.append(pd)
            self.apis.resolve(fut, self._encode(ctx, list(topics.values())))

        if not parts:
            done([])
        else:
            serve(replica_id, parts, done)
        return fut

    def _read(self, wanted: List[_Wanted], max_bytes: int) -> Tuple[List[FetchTopicData], int, int]:
        """Read every wanted partition: (topics, bytes of records, partitions with an error)."""
        topics: Dict[Tuple[str, Any], FetchTopicData] = {}
        total = 0
        errors = 0
        for w in wanted:
            key = (w.topic, w.topic_id)
            td = topics.get(key)
            if td is None:
                td = topics[key] = FetchTopicData(w.topic, w.topic_id, [])
            pd = FetchPartitionData(w.partition)
            td.partitions.append(pd)
            if w.error:
                pd.error_code = w.error
                errors += 1
                continue
            budget = min(w.max_bytes, max_bytes - total)
            try:
                self.check_epoch(w.topic, w.partition, w.leader_epoch)
                res = self.broker.fetch(w.topic, w.partition, w.offset, max_bytes=max(budget, 0))
            except PylogError as exc:
                pd.error_code = error_code(exc)
                errors += 1
                if isinstance(exc, OffsetOutOfRange):
                    self._fill_offsets(pd, w)
                continue
            except Exception as exc:  # a bug: answer this partition, keep the others
                pd.error_code = error_code(exc, f"Fetch of {w.topic}-{w.partition}")
                errors += 1
                continue
            pd.high_watermark = res.high_watermark
            pd.last_stable_offset = res.high_watermark
            pd.log_start_offset = res.log_start_offset
            batches = res.batches
            if not batches:
                continue
            taken = []
            size = 0
            for b in batches:
                n = b.size_bytes
                if taken or total > 0:
                    if size + n > budget:
                        break
                taken.append(b.buffer)
                size += n
            if taken:
                pd.records = taken
                pd.records_size = size
                total += size
        return list(topics.values()), total, errors

    def _fill_offsets(self, pd: FetchPartitionData, w: _Wanted) -> None:
        try:
            hw, _ = self.broker.list_offsets(w.topic, w.partition, -1)
            start, _ = self.broker.list_offsets(w.topic, w.partition, -2)
            pd.high_watermark = hw if hw is not None else -1
            pd.last_stable_offset = pd.high_watermark
            pd.log_start_offset = start if start is not None else -1
        except PylogError:
            pass

    def _encode(self, ctx: "RequestContext", topics: List[FetchTopicData]) -> Response:
        bufs, size = encode_fetch_response(ctx.header, topics)
        return Response(bufs, size)

    # ------------------------------------------------------------------ ListOffsets
    def list_offsets(self, ctx: "RequestContext", req: Any) -> Any:
        # As Kafka: a partition asked for more than once is answered INVALID_REQUEST
        # every time (which answer is which could not be told apart).
        seen: Set[Tuple[str, int]] = set()
        duplicated = set()
        for t in req.topics:
            for p in t.partitions:
                key = (t.name, p.partition_index)
                (duplicated if key in seen else seen).add(key)
        out = []
        for t in req.topics:
            rows = []
            describable = ctx.allowed(AclOperation.DESCRIBE, ResourceType.TOPIC, t.name)
            for p in t.partitions:
                row: Dict[str, Any] = {"partition_index": p.partition_index}
                if not describable:
                    row.update(error_code=TopicAuthorizationFailed.code, offset=-1, timestamp=-1)
                    rows.append(row)
                    continue
                if (t.name, p.partition_index) in duplicated:
                    row.update(error_code=_INVALID_REQUEST, offset=-1, timestamp=-1)
                    rows.append(row)
                    continue
                try:
                    self.check_epoch(t.name, p.partition_index, getattr(p, "current_leader_epoch", -1))
                    off, ts = self.broker.list_offsets(t.name, p.partition_index, p.timestamp)
                    row.update(error_code=0, offset=-1 if off is None else off,
                               timestamp=-1 if off is None else ts,
                               leader_epoch=self.apis.server.leader_epoch(t.name, p.partition_index))
                except PylogError as exc:
                    row.update(error_code=error_code(exc), offset=-1, timestamp=-1)
                except Exception as exc:
                    row.update(error_code=error_code(exc, "ListOffsets"), offset=-1, timestamp=-1)
                rows.append(row)
            out.append({"name": t.name, "partitions": rows})
        return ctx.respond({"throttle_time": 0, "topics": out})

    # ------------------------------------------------------------------ OffsetForLeaderEpoch
    def offset_for_leader_epoch(self, ctx: "RequestContext", req: Any) -> Any:
        out = []
        follower = getattr(req, "replica_id", -1) >= 0
        if follower:  # Kafka: a follower needs ClusterAction, a consumer Describe on the topic
            cluster_ok = ctx.allowed(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME)
        for t in req.topics:
            rows = []
            allowed = cluster_ok if follower else ctx.allowed(AclOperation.DESCRIBE, ResourceType.TOPIC, t.topic)
            for p in t.partitions:
                row: Dict[str, Any] = {"partition": p.partition}
                try:
                    if not allowed:
                        raise TopicAuthorizationFailed(f"not authorized to Describe topic {t.topic!r}")
                    self.check_epoch(t.topic, p.partition, p.current_leader_epoch)
                    epoch, end = self.broker.offset_for_leader_epoch(t.topic, p.partition, p.leader_epoch)
                    row.update(error_code=0, leader_epoch=epoch, end_offset=end)
                except PylogError as exc:
                    row.update(error_code=error_code(exc), leader_epoch=-1, end_offset=-1)
                except Exception as exc:
                    row.update(error_code=error_code(exc, "OffsetForLeaderEpoch"), leader_epoch=-1, end_offset=-1)
                rows.append(row)
            out.append({"topic": t.topic, "partitions": rows})
        return ctx.respond({"throttle_time": 0, "topics": out})

