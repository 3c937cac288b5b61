"""Admin APIs: topics, partitions, records, configs, log dirs, producer ids, leader
elections and partition reassignments.

Each maps onto one :class:`~pylog.broker.interface.BrokerInterface` call per resource;
errors are answered per resource with Kafka's code and the exception's message, and
a refused resource changed nothing (the broker's guarantee).

Configs: topics have Kafka's topic settings (DescribeConfigs shows every one, with its
source: set for the topic, or the broker's default); the broker resource shows the
settings `pylog serve` started with, read-only, and ``metrics.listener`` (``HOST:PORT``
of the metrics endpoint as bound, null without one: where the console finds the
broker's ``/metrics`` and ``/events``).  A cluster's only dynamic broker configs
are the replication throttle's ``leader.replication.throttled.rate`` and
``follower.replication.throttled.rate`` (IncrementalAlterConfigs/AlterConfigs on a BROKER
resource: a broker id, or "" for every broker), kept in the metadata store where Kafka's
ZooKeeper mode keeps them; the replicas they throttle are the topic configs
``leader/follower.replication.throttled.replicas``.

ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments go to the
cluster's controller through the metadata store (:class:`~pylog.cluster.node.ClusterNode`
waits for its answer, on a worker thread); a single broker answers them itself.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from pylog.broker.config import BROKER_TOPIC_DEFAULT_NAMES, TOPIC_DEFAULTS
from pylog.errors import (ClusterAuthorizationFailed, ElectionNotNeeded, InvalidConfig, InvalidReplicaAssignment,
                          InvalidRequest, NoReassignmentInProgress, PylogError, StorageError, TopicAuthorizationFailed,
                          UnknownTopicOrPartition)
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from pylog.server.apis import error_code
from pylog.server.config import Listener

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["AdminHandler"]

log = logging.getLogger("pylog.server")

TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4
# Kafka's ConfigSource ids
_SOURCE_TOPIC = 1
_SOURCE_DYNAMIC_BROKER = 2
_SOURCE_DYNAMIC_DEFAULT_BROKER = 3
_SOURCE_STATIC_BROKER = 4
_SOURCE_DEFAULT = 5
#: The dynamic broker configs of a cluster (the replication throttle's rates, bytes/s)
#: and their default, Kafka's: no limit (Long.MAX_VALUE).
_DYNAMIC_BROKER_CONFIGS = ("follower.replication.throttled.rate", "leader.replication.throttled.rate")
_NO_RATE_LIMIT = (1 << 63) - 1
# IncrementalAlterConfigs operations
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3
_LIST_SETTINGS = frozenset({"cleanup.policy"})


def config_string(value: Any) -> Optional[str]:
    """A setting's value as Kafka's admin APIs show it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _config_type(default: Any) -> int:
    if isinstance(default, bool):
        return 1  # BOOLEAN
    if isinstance(default, int):
        return 5  # LONG
    if isinstance(default, float):
        return 6  # DOUBLE
    return 2  # STRING


class AdminHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.broker = apis.broker
        self.config = apis.server.config

    def _advertised(self) -> List[Any]:
        """The advertised listeners as clients are told them (port 0 in the configuration
        stands for the port the listener of the same name actually bound)."""
        bound = {b.name: b for _, b in self.apis.server.bound}
        return [Listener(a.name, a.host, bound[a.name].port) if a.port == 0 and a.name in bound else a
                for a in self.config.advertised_listeners]

    def _topics_changed(self, name: Optional[str] = None) -> None:
        self.apis.meta.topic_ids.forget(name)
        self.apis.server.forget_epochs(name)

    # ------------------------------------------------------------------ producer ids
    def init_producer_id(self, ctx: "RequestContext", req: Any) -> Any:
        if req.transactional_id is not None:
            return ctx.respond({"throttle_time": 0, "error_code": 42, "producer_id": -1, "producer_epoch": -1})
        # an idempotent producer: IdempotentWrite on the cluster, or Write on some topic (KIP-679)
        if not ctx.allowed(AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME, log_denial=False) \
                and not self.apis.authorizer.allowed_any(ctx.conn, AclOperation.WRITE, ResourceType.TOPIC):
            self.apis.authorizer.denied(ctx.conn, AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME,
                                        "InitProducerId")
            return ctx.respond({"throttle_time": 0, "error_code": ClusterAuthorizationFailed.code,
                                "producer_id": -1, "producer_epoch": -1})
        try:
            pid, epoch = self.broker.init_producer_id()
        except PylogError as exc:
            return ctx.respond({"throttle_time": 0, "error_code": error_code(exc), "producer_id": -1,
                                "producer_epoch": -1})
        return ctx.respond({"throttle_time": 0, "error_code": 0, "producer_id": pid, "producer_epoch": epoch})

    # ------------------------------------------------------------------ topics
    def _check_assignment(self, replicas: List[Any]) -> None:
        """A manual replica assignment names live brokers only (InvalidReplicaAssignment)."""
        nodes = {n.node_id for n in self.broker.nodes()}
        for i, brokers in enumerate(replicas):
            if not brokers or any(b not in nodes for b in brokers):
                raise InvalidReplicaAssignment(f"partition {i}: brokers {list(brokers)} are not all live brokers "
                                               f"{sorted(nodes)}")

    def create_topics(self, ctx: "RequestContext", req: Any) -> Any:
        rows = []
        # Create on the cluster, else Create on each topic (Kafka)
        on_cluster = ctx.allowed(AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, log_denial=False)
        for t in req.topics:
            row: Dict[str, Any] = {"name": t.name, "topic_id": uuid.UUID(int=0), "error_code": 0,
                                   "error_message": None, "num_partitions": -1, "replication_factor": -1,
                                   "configs": []}
            try:
                if not on_cluster:
                    ctx.check_topic(AclOperation.CREATE, t.name)
                rf = t.replication_factor if t.replication_factor != -1 else self.config.default_replication_factor
                partitions = None if t.num_partitions == -1 else t.num_partitions
                if t.assignments:
                    if partitions is not None or t.replication_factor != -1:
                        raise InvalidRequest("give either num_partitions and replication_factor or assignments, "
                                             "not both")
                    self._check_assignment([a.broker_ids for a in t.assignments])
                    if sorted(a.partition_index for a in t.assignments) != list(range(len(t.assignments))):
                        raise InvalidReplicaAssignment("assignments must number partitions 0..n-1")
                    partitions = len(t.assignments)
                    rf = len(t.assignments[0].broker_ids)
                configs = {c.name: c.value for c in t.configs}
                assignment = [list(a.broker_ids) for a in sorted(t.assignments, key=lambda a: a.partition_index)] \
                    if t.assignments else None
                d = self.broker.create_topic(t.name, partitions, rf, configs, validate_only=req.validate_only,
                                             replica_assignment=assignment)
                self._topics_changed(t.name)
                row.update(topic_id=uuid.UUID(hex=d.topic_id) if not req.validate_only else uuid.UUID(int=0),
                           num_partitions=len(d.partitions),
                           replication_factor=len(d.partitions[0].replicas) if d.partitions else rf,
                           configs=self._topic_config_rows(d, None, False, False))
                log.info("%s topic %s (%d partitions) for %s", "validated" if req.validate_only else "created",
                         t.name, len(d.partitions), ctx.client)
            except PylogError as exc:
                row.update(error_code=error_code(exc), error_message=str(exc))
            rows.append(row)
        return ctx.respond({"throttle_time": 0, "topics": rows})

    def delete_topics(self, ctx: "RequestContext", req: Any) -> Any:
        if ctx.version >= 6:
            wanted: List[Tuple[Optional[str], Optional[uuid.UUID]]] = [(t.name, t.topic_id) for t in req.topics]
        else:
            wanted = [(n, None) for n in req.topic_names]
        rows = []
        for name, tid in wanted:
            row: Dict[str, Any] = {"name": name, "topic_id": tid or uuid.UUID(int=0), "error_code": 0,
                                   "error_message": None}
            try:
                if name is None:
                    name = self.apis.meta.topic_ids.name_of(tid)  # type: ignore[arg-type]
                    row["name"] = name
                ctx.check_topic(AclOperation.DELETE, name)
                if row["topic_id"] == uuid.UUID(int=0):
                    row["topic_id"] = self.apis.meta.topic_ids.id_of(name)
                self.broker.delete_topic(name)
                self._topics_changed(name)
                log.info("deleted topic %s for %s", name, ctx.client)
            except PylogError as exc:
                row.update(error_code=error_code(exc), error_message=str(exc))
            rows.append(row)
        return ctx.respond({"throttle_time": 0, "responses": rows})

    def create_partitions(self, ctx: "RequestContext", req: Any) -> Any:
        rows = []
        for t in req.topics:
            try:
                ctx.check_topic(AclOperation.ALTER, t.name)
                if t.assignments:
                    self._check_assignment([a.broker_ids for a in t.assignments])
                self.broker.create_partitions(t.name, t.count, validate_only=req.validate_only)
                self._topics_changed(t.name)
                rows.append({"name": t.name, "error_code": 0, "error_message": None})
            except PylogError as exc:
                rows.append({"name": t.name, "error_code": error_code(exc), "error_message": str(exc)})
        return ctx.respond({"throttle_time": 0, "results": rows})

    def delete_records(self, ctx: "RequestContext", req: Any) -> Any:
        out = []
        for t in req.topics:
            parts = []
            deletable = ctx.allowed(AclOperation.DELETE, ResourceType.TOPIC, t.name)
            for p in t.partitions:
                try:
                    if not deletable:
                        raise TopicAuthorizationFailed(f"not authorized to Delete topic {t.name!r}")
                    low = self.broker.delete_records(t.name, p.partition_index, p.offset)
                    parts.append({"partition_index": p.partition_index, "low_watermark": low, "error_code": 0})
                except PylogError as exc:
                    parts.append({"partition_index": p.partition_index, "low_watermark": -1,
                                  "error_code": error_code(exc)})
            out.append({"name": t.name, "partitions": parts})
        return ctx.respond({"throttle_time": 0, "topics": out})

    # ------------------------------------------------------------------ configs
    def _topic_config_rows(self, d: Any, keys: Optional[List[str]], synonyms: bool,
                           documentation: bool) -> List[Dict[str, Any]]:
        rows = []
        for name in sorted(d.config):
            if keys and name not in keys:
                continue
            value = d.config[name]
            overridden = name in d.overrides
            source = _SOURCE_TOPIC if overridden else _SOURCE_DEFAULT
            row: Dict[str, Any] = {"name": name, "value": config_string(value), "read_only": False,
                                   "config_source": source, "is_sensitive": False, "synonyms": [],
                                   "config_type": _config_type(TOPIC_DEFAULTS.get(name)),
                                   "documentation": None}
            if synonyms:
                row["synonyms"] = [{"name": name, "value": config_string(value), "source": source}]
            rows.append(row)
        return rows

    def _broker_config_rows(self, keys: Optional[List[str]]) -> List[Dict[str, Any]]:
        from dataclasses import fields

        b = self.config.broker
        values: Dict[str, Any] = {}
        for f in fields(b):
            if f.name == "topic_defaults":
                continue
            values[f.name.replace("_", ".")] = getattr(b, f.name)
        defaults = b.topic_config_defaults()
        for broker_name, topic_name in BROKER_TOPIC_DEFAULT_NAMES.items():
            values[broker_name] = defaults.get(topic_name)
        values.update({"socket.request.max.bytes": self.config.socket_request_max_bytes,
                       "connections.max.idle.ms": self.config.connections_max_idle_ms,
                       "queued.max.requests": self.config.queued_max_requests,
                       "default.replication.factor": self.config.default_replication_factor,
                       "listeners": ",".join(map(str, self.config.listeners)),
                       "advertised.listeners": ",".join(map(str, self._advertised())),
                       "listener.security.protocol.map": ",".join(
                           f"{k}:{v}" for k, v in self.config.security_protocol_map.items()),
                       "inter.broker.listener.name": self.config.inter_broker_listener_name,
                       "log.dirs": ",".join(str(d) for d in self.config.all_log_dirs)})
        # Where the console finds this broker's /metrics and /events (as bound; None without one).
        values["metrics.listener"] = self.apis.server.metrics_listener
        given = set(self.config.broker_settings)
        if self.config.metrics_listener is not None:
            given.add("metrics.listener")
        rows = []
        for name in sorted(values):
            if keys and name not in keys:
                continue
            rows.append({"name": name, "value": config_string(values[name]), "read_only": True,
                         "config_source": _SOURCE_STATIC_BROKER if name in given else _SOURCE_DEFAULT,
                         "is_sensitive": False, "synonyms": [], "config_type": _config_type(values[name]),
                         "documentation": None})
        dynamic = getattr(self.broker, "dynamic_broker_configs", None)
        if dynamic is not None:  # a cluster: the replication throttle's rates
            own, default = dynamic(self.config.node_id), dynamic(None)
            for name in _DYNAMIC_BROKER_CONFIGS:
                if keys and name not in keys:
                    continue
                value, source = (own[name], _SOURCE_DYNAMIC_BROKER) if name in own else \
                    (default[name], _SOURCE_DYNAMIC_DEFAULT_BROKER) if name in default else \
                    (str(_NO_RATE_LIMIT), _SOURCE_DEFAULT)
                rows.append({"name": name, "value": config_string(value), "read_only": False,
                             "config_source": source, "is_sensitive": False, "synonyms": [],
                             "config_type": 5, "documentation": None})
            rows.sort(key=lambda r: r["name"])
        return rows

    def describe_configs(self, ctx: "RequestContext", req: Any) -> Any:
        results = []
        for r in req.resources:
            keys = list(r.configuration_keys) if r.configuration_keys else None
            row: Dict[str, Any] = {"error_code": 0, "error_message": None, "resource_type": r.resource_type,
                                   "resource_name": r.resource_name, "configs": []}
            try:
                self._authorize_config(ctx, r, AclOperation.DESCRIBE_CONFIGS)
                if r.resource_type == TOPIC_RESOURCE:
                    d = self.broker.describe_topic(r.resource_name, offsets=False)
                    row["configs"] = self._topic_config_rows(d, keys, req.include_synonyms,
                                                             getattr(req, "include_documentation", False))
                elif r.resource_type == BROKER_RESOURCE:
                    if r.resource_name not in ("", str(self.config.node_id)):
                        raise InvalidRequest(f"broker {r.resource_name!r} is not this broker ({self.config.node_id})")
                    row["configs"] = self._broker_config_rows(keys)
                else:
                    raise InvalidRequest(f"resource type {r.resource_type} is not supported (2 topic, 4 broker)")
            except PylogError as exc:
                row.update(error_code=error_code(exc), error_message=str(exc))
            results.append(row)
        return ctx.respond({"throttle_time": 0, "results": results})

    @staticmethod
    def _authorize_config(ctx: "RequestContext", r: Any, op: AclOperation) -> None:
        """DescribeConfigs/AlterConfigs on the topic, or on the cluster for a broker."""
        if r.resource_type == TOPIC_RESOURCE:
            ctx.check_topic(op, r.resource_name)
        elif r.resource_type == BROKER_RESOURCE:
            ctx.check_cluster(op)

    def _alter(self, ctx: "RequestContext", r: Any, changes: Dict[str, Optional[Any]], replace: bool,
               validate_only: bool) -> None:
        self._authorize_config(ctx, r, AclOperation.ALTER_CONFIGS)
        if r.resource_type == BROKER_RESOURCE:
            alter = getattr(self.broker, "alter_broker_config", None)
            if alter is None:
                raise InvalidRequest("a single pylog broker has no dynamic broker configs; change "
                                     "server.properties and restart")
            name = r.resource_name
            if name != "" and not name.isdigit():
                raise InvalidRequest(f"a broker resource is named by a broker id (or '' for every broker), "
                                     f"got {name!r}")
            alter(None if name == "" else int(name), changes, replace=replace, validate_only=validate_only)
            return
        if r.resource_type != TOPIC_RESOURCE:
            raise InvalidRequest(f"resource type {r.resource_type} is not supported (2 topic)")
        self.broker.alter_topic_config(r.resource_name, changes, replace=replace, validate_only=validate_only)

    def alter_configs(self, ctx: "RequestContext", req: Any) -> Any:
        rows = []
        for r in req.resources:
            row: Dict[str, Any] = {"error_code": 0, "error_message": None, "resource_type": r.resource_type,
                                   "resource_name": r.resource_name}
            try:
                self._alter(ctx, r, {c.name: c.value for c in r.configs}, True, req.validate_only)
                log.info("configs of topic %r replaced by %s", r.resource_name, ctx.client)
            except PylogError as exc:
                row.update(error_code=error_code(exc), error_message=str(exc))
            rows.append(row)
        return ctx.respond({"throttle_time": 0, "responses": rows})

    def incremental_alter_configs(self, ctx: "RequestContext", req: Any) -> Any:
        rows = []
        for r in req.resources:
            row: Dict[str, Any] = {"error_code": 0, "error_message": None, "resource_type": r.resource_type,
                                   "resource_name": r.resource_name}
            try:
                self._authorize_config(ctx, r, AclOperation.ALTER_CONFIGS)
                changes: Dict[str, Optional[Any]] = {}
                current: Dict[str, Any] = {}
                if r.resource_type == TOPIC_RESOURCE and any(c.config_operation in (_APPEND, _SUBTRACT)
                                                             for c in r.configs):
                    current = dict(self.broker.describe_topic(r.resource_name).config)
                for c in r.configs:
                    op = c.config_operation
                    if op == _SET:
                        changes[c.name] = c.value
                    elif op == _DELETE:
                        changes[c.name] = None
                    elif op in (_APPEND, _SUBTRACT):
                        if c.name not in _LIST_SETTINGS:
                            raise InvalidConfig(f"{c.name} is not a list setting; APPEND/SUBTRACT need one")
                        items = [x for x in str(changes.get(c.name, current.get(c.name, ""))).split(",") if x]
                        given = [x.strip() for x in (c.value or "").split(",") if x.strip()]
                        if op == _APPEND:
                            items += [x for x in given if x not in items]
                        else:
                            items = [x for x in items if x not in given]
                        changes[c.name] = ",".join(items)
                    else:
                        raise InvalidRequest(f"unknown config operation {op} for {c.name}")
                self._alter(ctx, r, changes, False, req.validate_only)
            except PylogError as exc:
                row.update(error_code=error_code(exc), error_message=str(exc))
            rows.append(row)
        return ctx.respond({"throttle_time": 0, "responses": rows})

    # ------------------------------------------------------------------ log dirs
    def describe_log_dirs(self, ctx: "RequestContext", req: Any) -> Any:
        """Each log directory (log.dirs) with its partitions and space; an offline one
        (its disk failed) answers KAFKA_STORAGE_ERROR and no partitions, as Kafka's."""
        if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):
            return ctx.respond({"throttle_time": 0, "error_code": ClusterAuthorizationFailed.code, "results": []})
        dirs = getattr(self.broker, "log_dirs", None)
        roots = list(dirs.dirs) if dirs is not None else [self.config.data_dir]
        if req.topics is None:
            wanted = {t: None for t in self.broker.list_topics(include_internal=True)}
        else:
            wanted = {t.topic: set(t.partitions) for t in req.topics}
        by_dir: Dict[Path, Dict[str, List[Dict[str, Any]]]] = {r: {} for r in roots}
        for name, parts in wanted.items():
            try:
                d = self.broker.describe_topic(name)
            except UnknownTopicOrPartition:
                continue
            for p in d.partitions:
                if (parts is not None and p.partition not in parts) or p.offline:
                    continue
                where = dirs.locate(f"{name}-{p.partition}") if dirs is not None else roots[0]
                if where is None or where not in by_dir:
                    continue
                by_dir[where].setdefault(name, []).append(
                    {"partition_index": p.partition, "partition_size": p.size_bytes,
                     "offset_lag": max(0, p.log_end_offset - p.high_watermark), "is_future_key": False})
        results = []
        for root in roots:
            offline = dirs is not None and dirs.is_offline(root)
            total = free = -1
            if not offline:
                try:
                    usage = shutil.disk_usage(root)
                    total, free = usage.total, usage.free
                except OSError:
                    pass
            topics = [{"name": n, "partitions": rows} for n, rows in sorted(by_dir[root].items())]
            results.append({"error_code": StorageError.code if offline else 0, "log_dir": str(root.resolve()),
                            "topics": [] if offline else topics, "total_bytes": total, "usable_bytes": free})
        return ctx.respond({"throttle_time": 0, "error_code": 0, "results": results})

    # ------------------------------------------------------------------ leaders and replicas
    # A cluster (ClusterNode) carries these out through its controller; a single broker
    # answers them itself: its one replica per partition always leads and cannot move.
    def _single_broker_partitions(self, wanted: Optional[List[Tuple[str, int]]]) -> Dict[Tuple[str, int], bool]:
        """(topic, partition) -> whether it exists on this single broker (every partition
        when ``wanted`` is None)."""
        out: Dict[Tuple[str, int], bool] = {}
        counts: Dict[str, int] = {}

        def count(topic: str) -> int:  # describe_topic never auto-creates a topic
            if topic not in counts:
                try:
                    counts[topic] = len(self.broker.describe_topic(topic).partitions)
                except UnknownTopicOrPartition:
                    counts[topic] = 0
            return counts[topic]

        if wanted is None:
            for t in self.broker.list_topics(include_internal=True):
                for p in range(count(t)):
                    out[(t, p)] = True
            return out
        for t, p in wanted:
            out[(t, p)] = 0 <= p < count(t)
        return out

    def elect_leaders(self, ctx: "RequestContext", req: Any) -> Any:
        """ElectLeaders (v0: preferred only; v1+: election_type 0 preferred, 1 unclean)."""
        etype = int(getattr(req, "election_type", 0))
        wanted = None if req.topic_partitions is None else \
            [(t.topic, int(p)) for t in req.topic_partitions for p in t.partitions]
        top = 0
        results: Dict[Tuple[str, int], Optional[PylogError]] = {}
        elect = getattr(self.broker, "elect_leaders", None)
        if not ctx.allowed(AclOperation.ALTER, ResourceType.CLUSTER, CLUSTER_NAME):
            top = ClusterAuthorizationFailed.code
        elif etype not in (0, 1):
            top = InvalidRequest.code
        elif elect is None:
            for tp, exists in self._single_broker_partitions(wanted).items():
                results[tp] = ElectionNotNeeded(f"{tp[0]}-{tp[1]}: its only replica leads") if exists else \
                    UnknownTopicOrPartition(f"{tp[0]}-{tp[1]} does not exist")
        else:
            try:
                results = elect(wanted, "preferred" if etype == 0 else "unclean",
                                timeout_s=_timeout_s(req.timeout))
                log.info("%s leader election for %s: %d partitions", "preferred" if etype == 0 else "unclean",
                         ctx.client, len(results))
            except PylogError as exc:
                top = error_code(exc)
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for (t, p), exc in results.items():
            topics.setdefault(t, []).append({"partition_id": p, "error_code": 0 if exc is None else error_code(exc),
                                             "error_message": None if exc is None else str(exc)})
        if top and wanted is not None:  # v0 has no top-level error: every partition gets it
            for t, p in wanted:
                topics.setdefault(t, []).append({"partition_id": p, "error_code": top, "error_message": None})
        return ctx.respond({"throttle_time": 0, "error_code": top, "replica_election_results": [
            {"topic": t, "partition_result": rows} for t, rows in topics.items()]})

    def alter_partition_reassignments(self, ctx: "RequestContext", req: Any) -> Any:
        """AlterPartitionReassignments v0 (KIP-455)."""
        if not ctx.allowed(AclOperation.ALTER, ResourceType.CLUSTER, CLUSTER_NAME):
            return ctx.respond({"throttle_time": 0, "error_code": ClusterAuthorizationFailed.code,
                                "error_message": "not authorized to Alter the cluster", "responses": []})
        wanted: Dict[Tuple[str, int], Optional[List[int]]] = {}
        for t in req.topics:
            for p in t.partitions:
                wanted[(t.name, int(p.partition_index))] = None if p.replicas is None else [int(b) for b in p.replicas]
        alter = getattr(self.broker, "alter_partition_reassignments", None)
        results: Dict[Tuple[str, int], Optional[PylogError]] = {}
        if alter is None:
            exists = self._single_broker_partitions(list(wanted))
            me = [self.config.node_id]
            for tp, replicas in wanted.items():
                results[tp] = (UnknownTopicOrPartition(f"{tp[0]}-{tp[1]} does not exist") if not exists[tp] else
                               NoReassignmentInProgress(f"{tp[0]}-{tp[1]} is not being reassigned")
                               if replicas is None else None if replicas == me else
                               InvalidReplicaAssignment(f"{tp[0]}-{tp[1]}: this single broker ({me[0]}) is the "
                                                        f"only one, got {replicas}"))
        else:
            try:
                results = alter(wanted, timeout_s=_timeout_s(req.timeout))
            except PylogError as exc:
                return ctx.respond({"throttle_time": 0, "error_code": error_code(exc), "error_message": str(exc),
                                    "responses": []})
            log.info("partition reassignment for %s: %s", ctx.client,
                     ", ".join(f"{t}-{p} -> {r if r is not None else 'cancel'}" for (t, p), r in wanted.items()))
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for (t, p), exc in results.items():
            topics.setdefault(t, []).append({"partition_index": p,
                                             "error_code": 0 if exc is None else error_code(exc),
                                             "error_message": None if exc is None else str(exc)})
        return ctx.respond({"throttle_time": 0, "error_code": 0, "error_message": None,
                            "responses": [{"name": t, "partitions": rows} for t, rows in topics.items()]})

    def list_partition_reassignments(self, ctx: "RequestContext", req: Any) -> Any:
        """ListPartitionReassignments v0 (KIP-455): the reassignments in progress."""
        if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):
            return ctx.respond({"throttle_time": 0, "error_code": ClusterAuthorizationFailed.code,
                                "error_message": "not authorized to Describe the cluster", "topics": []})
        wanted = None if req.topics is None else \
            [(t.name, int(p)) for t in req.topics for p in t.partition_indexes]
        listing = getattr(self.broker, "list_partition_reassignments", None)
        moving: Dict[Tuple[str, int], Dict[str, List[int]]] = {}
        if listing is not None:
            try:
                moving = listing(wanted)
            except PylogError as exc:
                return ctx.respond({"throttle_time": 0, "error_code": error_code(exc), "error_message": str(exc),
                                    "topics": []})
        topics: Dict[str, List[Dict[str, Any]]] = {}
        for (t, p), r in moving.items():
            topics.setdefault(t, []).append({"partition_index": p, "replicas": r["replicas"],
                                             "adding_replicas": r["adding"], "removing_replicas": r["removing"]})
        return ctx.respond({"throttle_time": 0, "error_code": 0, "error_message": None,
                            "topics": [{"name": t, "partitions": rows} for t, rows in topics.items()]})


def _timeout_s(value: Any) -> float:
    """A request's timeout field (kio gives a timedelta) in seconds, 30 s when unset."""
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value or 0) / 1000.0
    return seconds if seconds > 0 else 30.0
