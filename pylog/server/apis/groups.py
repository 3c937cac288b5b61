"""Consumer groups over the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups,
OffsetDelete.

The coordinator is the broker's :class:`~pylog.broker.group_service.GroupService`
(a sans-I/O state machine under a thin driver); every call here uses its
non-blocking form, so a JoinGroup waiting for a rebalance holds no thread — it is a
future completed by the coordinator's answer.

FindCoordinator names the broker the broker interface's ``coordinator_id`` gives: this
one for a single node; in a cluster the leader of the group's ``__consumer_offsets``
partition (COORDINATOR_NOT_AVAILABLE while there is none).  A cluster node's service
answers NOT_COORDINATOR for the groups of partitions it does not lead and
COORDINATOR_LOAD_IN_PROGRESS while it replays one it just took over; clients then ask
FindCoordinator again, or retry.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from pylog.errors import (CoordinatorLoadInProgress, CoordinatorNotAvailable, GroupAuthorizationFailed,
                          InvalidArgument, NotCoordinator, PylogError, TopicAuthorizationFailed)
from pylog.protocol.apis import API_NAMES
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from pylog.server.apis import error_code
from pylog.server.apis.fetch import _ms

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["GroupHandler"]

log = logging.getLogger("pylog.server")

_INVALID_REQUEST = 42
#: Errors that say "ask another broker, or later", not something about one member.
_NOT_HERE = (NotCoordinator, CoordinatorLoadInProgress, CoordinatorNotAvailable)
#: Kafka's "authorized operations not requested" marker.
_NO_OPERATIONS = -2147483648


class GroupHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.broker = apis.broker
        #: member id -> "/host" of the connection that joined (DescribeGroups shows it)
        self._hosts: Dict[str, str] = {}

    @property
    def groups(self) -> Any:
        return self.broker.groups

    def _call(self, ctx: "RequestContext", method: Any, *args: Any,
              on_result: Any, group_op: Any = None, **kwargs: Any) -> Any:
        """Run a GroupService call without blocking: a future of ``on_result(result,
        error)`` (the kio response).  ``group_op`` (an AclOperation on the group, the
        first argument) is authorized first: refused, the call does not run and the
        answer is GROUP_AUTHORIZATION_FAILED."""
        if group_op is not None:
            try:
                ctx.check_group(group_op, args[0])
            except GroupAuthorizationFailed as exc:
                return on_result(None, exc)
        fut = self.apis.future()

        def callback(result: Any, error: Optional[BaseException]) -> None:
            self.apis.resolve(fut, (result, None if error is None else error.with_traceback(None)))

        try:
            method(*args, callback=callback, **kwargs)
        except PylogError as exc:
            callback(None, exc)
        out = self.apis.future()

        def done(f: Any) -> None:
            result, error = f.result()
            try:
                out.set_result(on_result(result, error))
            except Exception as exc:  # building the answer failed: a bug
                log.exception("answering %s failed", API_NAMES.get(ctx.header.api_key))
                out.set_exception(exc)

        fut.add_done_callback(done)
        return out

    # ------------------------------------------------------------------ coordinator
    def find_coordinator(self, ctx: "RequestContext", req: Any) -> Any:
        """Each key's coordinator with the address its broker registered (v4: many keys
        at once).  COORDINATOR_NOT_AVAILABLE when there is none now, never another
        broker than the one coordinating the group."""
        brokers = {b["node_id"]: b for b in self.apis.meta.brokers(ctx)}
        key_type = getattr(req, "key_type", 0)
        keys = list(req.coordinator_keys) if ctx.version >= 4 else [req.key]
        rows = []
        for key in keys:
            if key_type == 0 and not ctx.allowed(AclOperation.DESCRIBE, ResourceType.GROUP, key):
                rows.append({"key": key, "node_id": -1, "host": "", "port": -1,
                             "error_code": GroupAuthorizationFailed.code,
                             "error_message": f"not authorized to Describe group {key!r}"})
                continue
            if key_type != 0:
                rows.append({"key": key, "node_id": -1, "host": "", "port": -1, "error_code": _INVALID_REQUEST,
                             "error_message": "transactions are not supported by pylog"})
                continue
            try:
                node = brokers.get(self.broker.coordinator_id(key))
                if node is None:
                    raise CoordinatorNotAvailable(f"the coordinator of group {key!r} is not registered")
            except PylogError as exc:
                code = error_code(exc, "FindCoordinator")
                rows.append({"key": key, "node_id": -1, "host": "", "port": -1,
                             "error_code": code if code > 0 else CoordinatorNotAvailable.code,
                             "error_message": str(exc)})
                continue
            rows.append({"key": key, "node_id": node["node_id"], "host": node["host"], "port": node["port"],
                         "error_code": 0, "error_message": None})
        if ctx.version >= 4:
            return ctx.respond({"throttle_time": 0, "coordinators": rows})
        r = rows[0]
        return ctx.respond({"throttle_time": 0, "error_code": r["error_code"], "error_message": r["error_message"],
                            "node_id": r["node_id"], "host": r["host"], "port": r["port"]})

    # ------------------------------------------------------------------ membership
    def join_group(self, ctx: "RequestContext", req: Any) -> Any:
        session_ms = _ms(req.session_timeout)
        rebalance_ms = _ms(getattr(req, "rebalance_timeout", session_ms))
        if rebalance_ms < 0:
            rebalance_ms = session_ms
        protocols = [(p.name, bytes(p.metadata)) for p in req.protocols]
        host = "/" + ctx.conn.peer.rsplit(":", 1)[0]

        def answer(result: Any, error: Optional[BaseException]) -> Any:
            if error is not None:
                # protocol_name is nullable from v7; before, Kafka answers "" (v0-v6 cannot carry null)
                return ctx.respond({"throttle_time": 0, "error_code": error_code(error, "JoinGroup"),
                                    "generation_id": -1, "protocol_type": None,
                                    "protocol_name": None if ctx.version >= 7 else "",
                                    "leader": "", "member_id": req.member_id, "members": []})
            self._hosts[result.member_id] = host
            return ctx.respond({
                "throttle_time": 0, "error_code": 0, "generation_id": result.generation_id,
                "protocol_type": req.protocol_type, "protocol_name": result.protocol_name,
                "leader": result.leader_id, "member_id": result.member_id,
                "members": [{"member_id": m, "metadata": meta} for m, meta in result.members]})

        return self._call(ctx, self.groups.join_group, req.group_id, req.member_id, req.protocol_type,
                          protocols, session_ms, rebalance_ms, getattr(req, "group_instance_id", None),
                          client_id=ctx.header.client_id or "", on_result=answer, group_op=AclOperation.READ)

    def sync_group(self, ctx: "RequestContext", req: Any) -> Any:
        assignments = {a.member_id: bytes(a.assignment) for a in req.assignments} or None

        def answer(result: Any, error: Optional[BaseException]) -> Any:
            if error is not None:
                return ctx.respond({"throttle_time": 0, "error_code": error_code(error, "SyncGroup"),
                                    "assignment": b""})
            return ctx.respond({"throttle_time": 0, "error_code": 0,
                                "protocol_type": getattr(req, "protocol_type", None),
                                "protocol_name": getattr(req, "protocol_name", None),
                                "assignment": bytes(result or b"")})

        return self._call(ctx, self.groups.sync_group, req.group_id, req.generation_id, req.member_id,
                          assignments, timeout_s=None, on_result=answer, group_op=AclOperation.READ)

    def heartbeat(self, ctx: "RequestContext", req: Any) -> Any:
        def answer(result: Any, error: Optional[BaseException]) -> Any:
            code = 0 if error is None else error_code(error, "Heartbeat")
            return ctx.respond({"throttle_time": 0, "error_code": code})

        return self._call(ctx, self.groups.heartbeat, req.group_id, req.generation_id, req.member_id,
                          on_result=answer, group_op=AclOperation.READ)

    def leave_group(self, ctx: "RequestContext", req: Any) -> Any:
        if ctx.version < 3:
            def answer(result: Any, error: Optional[BaseException]) -> Any:
                code = 0 if error is None else error_code(error, "LeaveGroup")
                if error is None:
                    self._hosts.pop(req.member_id, None)
                return ctx.respond({"throttle_time": 0, "error_code": code})

            return self._call(ctx, self.groups.leave_group, req.group_id, req.member_id, on_result=answer,
                              group_op=AclOperation.READ)
        members = list(req.members)
        if not ctx.allowed(AclOperation.READ, ResourceType.GROUP, req.group_id):
            return ctx.respond({"throttle_time": 0, "error_code": GroupAuthorizationFailed.code, "members": []})

        def leave(m: Any, callback: Any) -> None:
            if m.group_instance_id is not None:
                callback(None, InvalidArgument("static membership (group.instance.id) is not supported"))
                return
            self.groups.leave_group(req.group_id, m.member_id, callback=callback)

        def finish(results: List[Tuple[Any, Optional[BaseException]]]) -> Any:
            wrong = next((e for _, e in results if isinstance(e, _NOT_HERE)), None)
            if wrong is not None:  # Kafka answers the whole request with it
                return ctx.respond({"throttle_time": 0, "error_code": error_code(wrong, "LeaveGroup"),
                                    "members": []})
            rows = []
            for m, (_, err) in zip(members, results):
                if err is None:
                    self._hosts.pop(m.member_id, None)
                rows.append({"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                             "error_code": 0 if err is None else error_code(err, "LeaveGroup")})
            return ctx.respond({"throttle_time": 0, "error_code": 0, "members": rows})

        return self._sequential(members, leave, finish)

    # ------------------------------------------------------------------ offsets
    def offset_commit(self, ctx: "RequestContext", req: Any) -> Any:
        offsets: Dict[Tuple[str, int], Tuple[Any, ...]] = {}
        # Read on the group (else every partition is refused), then Read on each topic:
        # a partition of a topic the principal may not read is refused on its own
        group_ok = ctx.allowed(AclOperation.READ, ResourceType.GROUP, req.group_id)
        readable = {t.name: group_ok and ctx.allowed(AclOperation.READ, ResourceType.TOPIC, t.name)
                    for t in req.topics}
        for t in req.topics:
            if not readable[t.name]:
                continue
            for p in t.partitions:
                offsets[(t.name, p.partition_index)] = (p.committed_offset, p.committed_metadata or "",
                                                        getattr(p, "committed_leader_epoch", -1))
        if not group_ok:
            error: Optional[BaseException] = GroupAuthorizationFailed(f"not authorized to Read group {req.group_id!r}")
        elif getattr(req, "group_instance_id", None) is not None:
            error = InvalidArgument("static membership (group.instance.id) is not supported")
        else:
            error = None

        def answer(result: Any, err: Optional[BaseException]) -> Any:
            code = 0 if err is None else error_code(err, "OffsetCommit")
            return ctx.respond({"throttle_time": 0, "topics": [
                {"name": t.name, "partitions": [
                    {"partition_index": p.partition_index,
                     "error_code": code if readable[t.name] or not group_ok else TopicAuthorizationFailed.code}
                    for p in t.partitions]} for t in req.topics]})

        if error is not None or not offsets:
            return answer(None, error)
        return self._call(ctx, self.groups.commit_offsets, req.group_id, req.generation_id_or_member_epoch,
                          req.member_id, offsets, on_result=answer)

    def _fetch_group_offsets(self, ctx: "RequestContext", group_id: str,
                             topics: Any) -> Tuple[List[Dict[str, Any]], int]:
        """Describe on the group, then on each topic: a topic the principal may not
        Describe is left out of an all-topics answer, refused when named (Kafka)."""
        if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            return [], GroupAuthorizationFailed.code
        denied: set = set()
        try:
            if topics is None:
                got = self.groups.fetch_offsets(group_id)
                wanted: Dict[str, List[int]] = {}
                for (t, p) in sorted(got):
                    wanted.setdefault(t, []).append(p)
                wanted = {t: ps for t, ps in wanted.items()
                          if ctx.allowed(AclOperation.DESCRIBE, ResourceType.TOPIC, t, log_denial=False)}
            else:
                wanted = {t.name: list(t.partition_indexes) for t in topics}
                denied = {t for t in wanted if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.TOPIC, t)}
                got = self.groups.fetch_offsets(group_id, [(t, p) for t, ps in wanted.items() for p in ps
                                                           if t not in denied])
        except PylogError as exc:
            return [], error_code(exc)
        rows = []
        for t, ps in wanted.items():
            parts = []
            for p in ps:
                v = got.get((t, p))
                parts.append({"partition_index": p, "committed_offset": -1 if v is None else v[0],
                              "committed_leader_epoch": -1, "metadata": "" if v is None else v[1],
                              "error_code": TopicAuthorizationFailed.code if t in denied else 0})
            rows.append({"name": t, "partitions": parts})
        return rows, 0

    def offset_fetch(self, ctx: "RequestContext", req: Any) -> Any:
        if ctx.version >= 8:
            groups = []
            for g in req.groups:
                rows, code = self._fetch_group_offsets(ctx, g.group_id, g.topics)
                groups.append({"group_id": g.group_id, "topics": rows, "error_code": code})
            return ctx.respond({"throttle_time": 0, "groups": groups})
        rows, code = self._fetch_group_offsets(ctx, req.group_id, req.topics)
        if code and ctx.version < 2 and req.topics is not None:  # no top-level error code before v2
            rows = [{"name": t.name, "partitions": [
                {"partition_index": p, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "",
                 "error_code": code} for p in t.partition_indexes]} for t in req.topics]
        return ctx.respond({"throttle_time": 0, "topics": rows, "error_code": code})

    # ------------------------------------------------------------------ admin
    def list_groups(self, ctx: "RequestContext", req: Any) -> Any:
        wanted = {s.lower() for s in getattr(req, "states_filter", ())}
        try:
            groups = self.groups
            loading = bool(groups.loading_partitions)
            listing = groups.list_groups()
        except PylogError as exc:
            return ctx.respond({"throttle_time": 0, "error_code": error_code(exc), "groups": []})
        rows = []
        # Describe on the cluster lists every group; else the groups the principal may Describe
        every = ctx.allowed(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME, log_denial=False)
        for g in sorted(listing, key=lambda x: x.group_id):
            state = getattr(g.state, "value", str(g.state))
            if wanted and state.lower() not in wanted:
                continue
            if not every and not ctx.allowed(AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id,
                                             log_denial=False):
                continue
            rows.append({"group_id": g.group_id, "protocol_type": g.protocol_type, "group_state": state})
        # Kafka: the groups it has, and COORDINATOR_LOAD_IN_PROGRESS while it loads more
        return ctx.respond({"throttle_time": 0, "error_code": CoordinatorLoadInProgress.code if loading else 0,
                            "groups": rows})

    def describe_groups(self, ctx: "RequestContext", req: Any) -> Any:
        out = []
        for gid in req.groups:
            try:
                ctx.check_group(AclOperation.DESCRIBE, gid)
                d = self.groups.describe_group(gid)
            except PylogError as exc:
                out.append({"error_code": error_code(exc), "group_id": gid, "group_state": "Dead",
                            "protocol_type": "", "protocol_data": "", "members": [],
                            "authorized_operations": _NO_OPERATIONS})
                continue
            members = [{"member_id": m.member_id, "group_instance_id": None, "client_id": m.client_id,
                        "client_host": self._hosts.get(m.member_id, ""), "member_metadata": m.metadata,
                        "member_assignment": m.assignment} for m in d.members]
            out.append({"error_code": 0, "group_id": d.group_id,
                        "group_state": getattr(d.state, "value", str(d.state)),
                        "protocol_type": d.protocol_type, "protocol_data": d.protocol_name, "members": members,
                        "authorized_operations": ctx.authorized_operations(ResourceType.GROUP, d.group_id)
                        if getattr(req, "include_authorized_operations", False) else _NO_OPERATIONS})
        return ctx.respond({"throttle_time": 0, "groups": out})

    def _sequential(self, items: List[Any], start: Any, finish: Any) -> Any:
        """Run ``start(item, callback)`` for each item in turn; ``finish(results)``."""
        results: List[Tuple[Any, Optional[BaseException]]] = []
        out = self.apis.future()
        if not items:
            return finish(results)

        def run_next() -> None:
            step = self.apis.future()

            def stepped(f: Any) -> None:
                results.append(f.result())
                if len(results) < len(items):
                    run_next()
                else:
                    out.set_result(finish(results))

            step.add_done_callback(stepped)

            def callback(result: Any, error: Optional[BaseException]) -> None:
                self.apis.resolve(step, (result, error))

            try:
                start(items[len(results)], callback)
            except PylogError as exc:
                callback(None, exc)

        run_next()
        return out

    def delete_groups(self, ctx: "RequestContext", req: Any) -> Any:
        names = list(req.groups_names)

        def finish(results: List[Tuple[Any, Optional[BaseException]]]) -> Any:
            return ctx.respond({"throttle_time": 0, "results": [
                {"group_id": g, "error_code": 0 if e is None else error_code(e, "DeleteGroups")}
                for g, (_, e) in zip(names, results)]})

        def delete(g: str, cb: Any) -> None:
            ctx.check_group(AclOperation.DELETE, g)  # raised: this group's row is refused
            self.groups.delete_group(g, callback=cb)

        return self._sequential(names, delete, finish)

    def offset_delete(self, ctx: "RequestContext", req: Any) -> Any:
        readable = {t.name: ctx.allowed(AclOperation.READ, ResourceType.TOPIC, t.name) for t in req.topics}
        tps = [(t.name, p.partition_index) for t in req.topics for p in t.partitions if readable[t.name]]
        refused = [(t.name, p.partition_index) for t in req.topics for p in t.partitions if not readable[t.name]]

        def answer(result: Any, error: Optional[BaseException]) -> Any:
            if error is not None:
                return ctx.respond({"error_code": error_code(error, "OffsetDelete"), "throttle_time": 0,
                                    "topics": []})
            topics: Dict[str, List[Dict[str, Any]]] = {}
            for (t, p) in tps:
                e = result.get((t, p))
                topics.setdefault(t, []).append({"partition_index": p,
                                                 "error_code": 0 if e is None else error_code(e)})
            for (t, p) in refused:
                topics.setdefault(t, []).append({"partition_index": p, "error_code": TopicAuthorizationFailed.code})
            return ctx.respond({"error_code": 0, "throttle_time": 0,
                                "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()]})

        return self._call(ctx, self.groups.delete_offsets, req.group_id, tps, on_result=answer,
                          group_op=AclOperation.DELETE)
