"""ApiVersions, Metadata and DescribeCluster: what a client asks before anything else."""
from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from pylog.errors import (InvalidTopic, PylogError, TopicAlreadyExists, UnknownTopicId,
                          UnknownTopicOrPartition)
from pylog.protocol.apis import SUPPORTED, ApiKey, response_class
from pylog.protocol.codec import RequestHeader, build
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["MetadataHandler", "TopicIds"]

ZERO_UUID = uuid.UUID(int=0)
#: Kafka's "authorized operations not requested" marker.
_NO_OPERATIONS = -2147483648


class TopicIds:
    """Topic name <-> topic id (UUID), cached; a miss reloads from the broker."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._by_name: Dict[str, uuid.UUID] = {}
        self._by_id: Dict[uuid.UUID, str] = {}

    def id_of(self, name: str) -> uuid.UUID:
        tid = self._by_name.get(name)
        if tid is None:
            tid = uuid.UUID(hex=self._broker.describe_topic(name, offsets=False).topic_id)
            self._by_name[name] = tid
            self._by_id[tid] = name
        return tid

    def name_of(self, topic_id: uuid.UUID) -> str:
        """UnknownTopicId when no topic has this id."""
        name = self._by_id.get(topic_id)
        if name is not None:
            return name
        self.forget()
        for t in self._broker.list_topics(include_internal=True):
            try:
                self.id_of(t)
            except UnknownTopicOrPartition:
                continue
        name = self._by_id.get(topic_id)
        if name is None:
            raise UnknownTopicId(f"no topic has id {topic_id}")
        return name

    def forget(self, name: Optional[str] = None) -> None:
        if name is None:
            self._by_name.clear()
            self._by_id.clear()
            return
        tid = self._by_name.pop(name, None)
        if tid is not None:
            self._by_id.pop(tid, None)


class MetadataHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.broker = apis.broker
        self.server = apis.server
        self.topic_ids = TopicIds(apis.broker)

    # ------------------------------------------------------------------ ApiVersions
    def _api_keys(self) -> List[Dict[str, int]]:
        return [{"api_key": k, "min_version": s.min_version, "max_version": s.max_version}
                for k, s in sorted(SUPPORTED.items())]

    def api_versions(self, ctx: "RequestContext", req: Any) -> Any:
        return ctx.respond({"error_code": 0, "api_keys": self._api_keys(), "throttle_time": 0})

    def unsupported_api_versions(self, header: RequestHeader) -> Any:
        """Kafka's answer to an ApiVersions version it does not speak: v0 with
        UNSUPPORTED_VERSION and the supported ranges (the header is answered as v0)."""
        return build(response_class(ApiKey.API_VERSIONS, 0),
                     {"error_code": 35, "api_keys": self._api_keys()})

    # ------------------------------------------------------------------ brokers
    def brokers(self, ctx: "RequestContext") -> List[Dict[str, Any]]:
        """The live brokers with the address advertised for the listener the client used."""
        out = []
        mine = self.server.advertised_for(ctx.conn.listener)
        for n in self.broker.nodes():
            if n.host is not None and n.port is not None:
                host, port = n.address_for(mine.name)
            elif n.node_id == self.server.config.node_id:
                host, port = mine.host, mine.port
            else:
                continue
            out.append({"node_id": n.node_id, "broker_id": n.node_id, "host": host, "port": port,
                        "rack": n.rack})
        return out

    # ------------------------------------------------------------------ Metadata
    def _known(self) -> set:
        return set(self.broker.list_topics(include_internal=True))

    def metadata(self, ctx: "RequestContext", req: Any) -> Any:
        v = ctx.version
        requested = req.topics
        allow_create = getattr(req, "allow_auto_topic_creation", True)
        if requested is None or (v == 0 and not requested):
            # every topic the principal may Describe; the others are left out (Kafka)
            names: List[Any] = [(n, None) for n in self.broker.list_topics(include_internal=True)
                                if ctx.allowed(AclOperation.DESCRIBE, ResourceType.TOPIC, n, log_denial=False)]
        else:
            names = [(getattr(t, "name", None), getattr(t, "topic_id", None)) for t in requested]
        if allow_create and self.server.config.broker.auto_create_topics_enable and threading.get_ident() == \
                self.apis.loop_thread and any(n is not None and n not in self._known() for n, _ in names):
            # creating topics writes directories and fsyncs: not on the event loop
            return self.apis.in_thread(self.metadata, ctx, req)
        brokers = self.brokers(ctx)
        live = {b["node_id"] for b in brokers}
        topic_ops = bool(getattr(req, "include_topic_authorized_operations", False))
        topics = [self._topic_metadata(ctx, name, tid, allow_create, v, live, topic_ops) for name, tid in names]
        return ctx.respond({
            "throttle_time": 0, "brokers": brokers, "cluster_id": self.broker.cluster_id,
            "controller_id": self.broker.controller_id, "topics": topics,
            "cluster_authorized_operations": ctx.authorized_operations(ResourceType.CLUSTER, CLUSTER_NAME)
            if getattr(req, "include_cluster_authorized_operations", False) else _NO_OPERATIONS})

    def _topic_metadata(self, ctx: "RequestContext", name: Optional[str], topic_id: Optional[uuid.UUID],
                        allow_create: bool, version: int, live: set, topic_ops: bool = False) -> Dict[str, Any]:
        """One topic of a Metadata answer.  ``offline_replicas`` are the replicas on
        brokers that are not alive (not in ``live``), as Kafka's metadata cache says."""
        try:
            if name is None:
                if topic_id is None or topic_id == ZERO_UUID:
                    raise InvalidTopic("a Metadata topic needs a name or a topic id")
                name = self.topic_ids.name_of(topic_id)
            ctx.check_topic(AclOperation.DESCRIBE, name)
            try:
                d = self.broker.describe_topic(name, offsets=False)
            except UnknownTopicOrPartition:
                if not (allow_create and self.server.config.broker.auto_create_topics_enable):
                    raise
                # auto-creation needs Create on the cluster or on the topic (Kafka)
                if not ctx.allowed(AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, log_denial=False):
                    ctx.check_topic(AclOperation.CREATE, name)
                try:
                    self.broker.create_topic(name)
                except TopicAlreadyExists:
                    pass
                d = self.broker.describe_topic(name, offsets=False)
        except PylogError as exc:
            return {"error_code": exc.code, "name": name or "", "topic_id": topic_id or ZERO_UUID,
                    "is_internal": False, "partitions": [],
                    "topic_authorized_operations": _NO_OPERATIONS}
        parts = []
        for p in d.partitions:
            parts.append({
                "error_code": 5 if p.offline else 0,  # LEADER_NOT_AVAILABLE
                "partition_index": p.partition, "leader_id": p.leader,
                "leader_epoch": max(p.leader_epoch, 0), "replica_nodes": list(p.replicas),
                "isr_nodes": list(p.isr),
                "offline_replicas": [r for r in p.replicas if r not in live],
            })
        tid = uuid.UUID(hex=d.topic_id)
        return {"error_code": 0, "name": d.name, "topic_id": tid, "is_internal": d.internal,
                "partitions": parts, "topic_authorized_operations":
                    ctx.authorized_operations(ResourceType.TOPIC, d.name) if topic_ops else _NO_OPERATIONS}

    # ------------------------------------------------------------------ DescribeCluster
    def describe_cluster(self, ctx: "RequestContext", req: Any) -> Any:
        if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):
            return ctx.respond({"throttle_time": 0, "error_code": 31,  # CLUSTER_AUTHORIZATION_FAILED
                                "error_message": "not authorized to Describe the cluster",
                                "endpoint_type": getattr(req, "endpoint_type", 1),
                                "cluster_id": self.broker.cluster_id, "controller_id": -1, "brokers": [],
                                "cluster_authorized_operations": _NO_OPERATIONS})
        if getattr(req, "endpoint_type", 1) != 1:  # 2 = controllers (KRaft): none here
            return ctx.respond({"throttle_time": 0, "error_code": 42,
                                "error_message": "pylog has no KRaft controller endpoints",
                                "endpoint_type": req.endpoint_type, "cluster_id": self.broker.cluster_id,
                                "brokers": []})
        return ctx.respond({
            "throttle_time": 0, "error_code": 0, "error_message": None, "endpoint_type": 1,
            "cluster_id": self.broker.cluster_id, "controller_id": self.broker.controller_id,
            "brokers": self.brokers(ctx), "cluster_authorized_operations":
                ctx.authorized_operations(ResourceType.CLUSTER, CLUSTER_NAME)
                if getattr(req, "include_cluster_authorized_operations", False) else _NO_OPERATIONS})
