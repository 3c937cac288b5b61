"""NetworkGroups: the group coordinator's blocking calls, over Kafka's group APIs.

The same calls, arguments, results and errors as
:class:`~pylog.broker.group_service.GroupService`'s join_group, sync_group, heartbeat,
leave_group, commit_offsets and fetch_offsets (what
:class:`~pylog.client.group_member.GroupMember` and the Consumer use), implemented
with FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and
OffsetFetch sent to the group's coordinator.

The coordinator is found with FindCoordinator and remembered per group.  When it
answers NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or COORDINATOR_LOAD_IN_PROGRESS, or
its connection fails, the call finds the coordinator again and retries until its
deadline (request_timeout_ms; a JoinGroup: the rebalance timeout + 5 s, as Kafka's
consumer) and then raises that (retriable) error.  A first JoinGroup answered
MEMBER_ID_REQUIRED (KIP-394) is resent at once with the member id given.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from pylog.broker.group import JoinGroupResult
from pylog.errors import (CoordinatorLoadInProgress, CoordinatorNotAvailable, InvalidArgument, NetworkException,
                          NotCoordinator, PylogError, RequestTimedOut, error_for_code)
from pylog.protocol import ApiKey

if TYPE_CHECKING:  # pragma: no cover
    from pylog.client.network.client import NetworkClient

__all__ = ["NetworkGroups", "JoinResult"]

log = logging.getLogger("pylog.client.network")

TopicPartition = Tuple[str, int]
_MEMBER_ID_REQUIRED = 79
_COORDINATOR_ERRORS = (NotCoordinator, CoordinatorNotAvailable, CoordinatorLoadInProgress, NetworkException,
                       RequestTimedOut)
#: Extra time a JoinGroup may take beyond the rebalance timeout (Kafka's consumer: 5 s).
_JOIN_SLACK_S = 5.0


#: A JoinGroup answer, the same value the in-process coordinator gives GroupMember.
JoinResult = JoinGroupResult


def _raise_for(code: int, what: str, message: Optional[str] = None) -> None:
    if code:
        cls = error_for_code(code)
        name = cls.kafka_name if cls is not PylogError else f"error code {code}"
        raise cls(f"{what}: {message or name}")


class NetworkGroups:
    """Group coordinator calls of a :class:`~pylog.client.network.client.NetworkClient`
    (see the module docstring).  Thread-safe."""

    def __init__(self, client: "NetworkClient") -> None:
        self._client = client
        self._lock = threading.Lock()
        self._coordinators: Dict[str, int] = {}
        #: group -> (protocol type, protocol name) of its last JoinGroup (SyncGroup v5 sends them)
        self._protocols: Dict[str, Tuple[str, Optional[str]]] = {}

    # ------------------------------------------------------------------ plumbing
    def coordinator(self, group_id: str) -> int:
        """The node id of the group's coordinator (FindCoordinator when not known)."""
        with self._lock:
            node = self._coordinators.get(group_id)
        if node is not None:
            return node
        resp = self._client._request_any(ApiKey.FIND_COORDINATOR, {
            "key": group_id, "key_type": 0, "coordinator_keys": [group_id]}, "FindCoordinator")
        row = resp.coordinators[0] if hasattr(resp, "coordinators") else resp
        _raise_for(int(row.error_code), f"FindCoordinator of group {group_id!r}", row.error_message)
        node = int(row.node_id)
        self._client.register_broker(node, row.host, int(row.port))
        with self._lock:
            self._coordinators[group_id] = node
        return node

    def _forget(self, group_id: str) -> None:
        with self._lock:
            self._coordinators.pop(group_id, None)

    def _call(self, group_id: str, api_key: int, data: Mapping[str, Any], check: Callable[[Any], Any], *,
              lane: str, timeout_s: float, what: str) -> Any:
        """Send to the coordinator; ``check(answer)`` raises the answer's error or
        returns the result.  Coordinator errors: find it again and retry until
        ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                node = self.coordinator(group_id)
                resp = self._client.request(node, api_key, data, lane=lane,
                                            timeout_s=max(0.1, deadline - time.monotonic()), what=what)
                return check(resp)
            except _COORDINATOR_ERRORS as exc:
                self._forget(group_id)
                if time.monotonic() + self._client.retry_backoff_s >= deadline:
                    raise
                log.info("%s of group %r: %s; looking for the coordinator again", what, group_id, exc)
            time.sleep(self._client.retry_backoff_s)

    # ------------------------------------------------------------------ membership
    def join_group(self, group_id: str, member_id: str, protocol_type: str,
                   protocols: Sequence[Tuple[str, bytes]], session_timeout_ms: int,
                   rebalance_timeout_ms: int, group_instance_id: Optional[str] = None, *,
                   client_id: str = "", timeout_s: Optional[float] = None) -> JoinResult:
        """JoinGroup (see GroupService.join_group); blocks until the rebalance completes."""
        if group_instance_id is not None:
            raise InvalidArgument("static membership (group.instance.id) is not supported")
        if timeout_s is None:
            timeout_s = rebalance_timeout_ms / 1000.0 + _JOIN_SLACK_S
        for _ in range(2):
            data = {"group_id": group_id, "session_timeout": session_timeout_ms,
                    "rebalance_timeout": rebalance_timeout_ms, "member_id": member_id,
                    "group_instance_id": None, "protocol_type": protocol_type, "reason": None,
                    "protocols": [{"name": n, "metadata": bytes(m)} for n, m in protocols]}

            def check(resp: Any) -> Any:
                self._coordinator_error(resp.error_code)
                return resp

            resp = self._call(group_id, ApiKey.JOIN_GROUP, data, check, lane="join", timeout_s=timeout_s,
                              what="JoinGroup")
            code = int(resp.error_code)
            if code == _MEMBER_ID_REQUIRED and not member_id:
                member_id = resp.member_id  # KIP-394: join again with the id given
                continue
            _raise_for(code, f"JoinGroup of group {group_id!r}")
            with self._lock:
                self._protocols[group_id] = (protocol_type, resp.protocol_name)
            return JoinResult(int(resp.generation_id), resp.protocol_name, resp.leader, resp.member_id,
                              tuple((m.member_id, bytes(m.metadata)) for m in resp.members))
        raise PylogError(f"JoinGroup of group {group_id!r}: MEMBER_ID_REQUIRED twice")

    def sync_group(self, group_id: str, generation_id: int, member_id: str,
                   assignments: Optional[Mapping[str, bytes]] = None, *,
                   timeout_s: Optional[float] = None) -> bytes:
        """SyncGroup: this member's assignment of ``generation_id`` (the leader passes
        everyone's)."""
        with self._lock:
            ptype, pname = self._protocols.get(group_id, (None, None))
        data = {"group_id": group_id, "generation_id": generation_id, "member_id": member_id,
                "group_instance_id": None, "protocol_type": ptype, "protocol_name": pname,
                "assignments": [{"member_id": m, "assignment": bytes(a)} for m, a in (assignments or {}).items()]}

        def check(resp: Any) -> bytes:
            self._coordinator_error(resp.error_code)
            _raise_for(int(resp.error_code), f"SyncGroup of group {group_id!r}")
            return bytes(resp.assignment)

        return self._call(group_id, ApiKey.SYNC_GROUP, data, check, lane="join",
                          timeout_s=self._client.request_timeout_s if timeout_s is None else timeout_s,
                          what="SyncGroup")

    @staticmethod
    def _coordinator_error(code: Any) -> None:
        """Raise coordinator errors inside :meth:`_call` (so it retries them)."""
        code = int(code)
        if code in (NotCoordinator.code, CoordinatorNotAvailable.code, CoordinatorLoadInProgress.code):
            _raise_for(code, "group coordinator")

    def heartbeat(self, group_id: str, generation_id: int, member_id: str) -> None:
        """Heartbeat: RebalanceInProgress when the member must rejoin, IllegalGeneration /
        UnknownMemberId when it is out of the group."""
        data = {"group_id": group_id, "generation_id": generation_id, "member_id": member_id,
                "group_instance_id": None}

        def check(resp: Any) -> None:
            self._coordinator_error(resp.error_code)
            _raise_for(int(resp.error_code), f"Heartbeat of group {group_id!r}")

        self._call(group_id, ApiKey.HEARTBEAT, data, check, lane="group",
                   timeout_s=self._client.request_timeout_s, what="Heartbeat")

    def leave_group(self, group_id: str, member_id: str) -> None:
        """LeaveGroup: leave at once."""
        data = {"group_id": group_id, "member_id": member_id,
                "members": [{"member_id": member_id, "group_instance_id": None, "reason": None}]}

        def check(resp: Any) -> None:
            self._coordinator_error(resp.error_code)
            _raise_for(int(resp.error_code), f"LeaveGroup of group {group_id!r}")
            for m in getattr(resp, "members", ()):
                _raise_for(int(m.error_code), f"LeaveGroup of member {m.member_id} of group {group_id!r}")

        self._call(group_id, ApiKey.LEAVE_GROUP, data, check, lane="group",
                   timeout_s=self._client.request_timeout_s, what="LeaveGroup")

    # ------------------------------------------------------------------ offsets
    def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                       offsets: Mapping[TopicPartition, Tuple[Any, ...]]) -> None:
        """OffsetCommit of (topic, partition) -> (offset, metadata[, leader epoch]);
        generation -1 and member "" for a consumer without a group membership."""
        topics: Dict[str, list] = {}
        for (t, p), v in offsets.items():
            off, meta = v[0], (v[1] if len(v) > 1 else "")
            epoch = v[2] if len(v) > 2 and v[2] is not None else -1
            topics.setdefault(t, []).append({"partition_index": p, "committed_offset": int(off),
                                             "committed_leader_epoch": epoch, "committed_metadata": meta or ""})
        data = {"group_id": group_id, "generation_id_or_member_epoch": generation_id, "member_id": member_id,
                "group_instance_id": None, "retention_time": -1,
                "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]}

        def check(resp: Any) -> None:
            for t in resp.topics:
                for p in t.partitions:
                    self._coordinator_error(p.error_code)
            for t in resp.topics:
                for p in t.partitions:
                    _raise_for(int(p.error_code), f"OffsetCommit of {t.name}-{p.partition_index} for group {group_id!r}")

        self._call(group_id, ApiKey.OFFSET_COMMIT, data, check, lane="group",
                   timeout_s=self._client.request_timeout_s, what="OffsetCommit")

    def fetch_offsets(self, group_id: str, partitions: Optional[Iterable[TopicPartition]] = None
                      ) -> Dict[TopicPartition, Tuple[int, str]]:
        """OffsetFetch: committed (offset, metadata) per partition; partitions without a
        commit are absent.  ``partitions`` None: every partition the group committed."""
        topics = None
        if partitions is not None:
            by: Dict[str, list] = {}
            for t, p in partitions:
                by.setdefault(t, []).append(p)
            topics = [{"name": t, "partition_indexes": ps} for t, ps in by.items()]
        data = {"group_id": group_id, "topics": topics, "require_stable": False,
                "groups": [{"group_id": group_id, "topics": topics}]}

        def check(resp: Any) -> Dict[TopicPartition, Tuple[int, str]]:
            if hasattr(resp, "groups"):
                g = resp.groups[0]
                code, rows = int(g.error_code), g.topics
            else:
                code, rows = int(getattr(resp, "error_code", 0)), resp.topics
            self._coordinator_error(code)
            _raise_for(code, f"OffsetFetch of group {group_id!r}")
            out: Dict[TopicPartition, Tuple[int, str]] = {}
            for t in rows:
                for p in t.partitions:
                    self._coordinator_error(p.error_code)
                    _raise_for(int(p.error_code), f"OffsetFetch of {t.name}-{p.partition_index} for group {group_id!r}")
                    if int(p.committed_offset) >= 0:
                        out[(t.name, int(p.partition_index))] = (int(p.committed_offset), p.metadata or "")
            return out

        return self._call(group_id, ApiKey.OFFSET_FETCH, data, check, lane="group",
                          timeout_s=self._client.request_timeout_s, what="OffsetFetch")
