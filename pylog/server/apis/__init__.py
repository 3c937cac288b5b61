"""KafkaApis: decode a request, dispatch it by API key, encode the answer.

Kafka's ``KafkaApis`` in one class: :meth:`KafkaApis.handle` takes one request frame
from a connection and returns the encoded answer, a future of it (the request waits:
a JoinGroup for the rebalance, a Fetch for data), or None (acks=0 Produce).  The
handlers live in one module per API family (:mod:`.metadata`, :mod:`.produce`,
:mod:`.fetch`, :mod:`.groups`, :mod:`.admin`) and talk to the broker only through
:class:`~pylog.broker.interface.BrokerInterface`.

Bad input: a frame that does not parse, an unknown API key or an unsupported version
closes the connection with a WARNING naming the client (Kafka does the same), except
an ApiVersions request of a version pylog does not speak, which gets Kafka's v0
answer: UNSUPPORTED_VERSION with the supported ranges, so the client can retry.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from kio.schema.errors import ErrorCode

from pylog.broker.interface import BrokerInterface
from pylog.errors import (ClusterAuthorizationFailed, GroupAuthorizationFailed, InvalidRequest, PylogError,
                          TopicAuthorizationFailed)
from pylog.protocol.apis import API_NAMES, SUPPORTED, ApiKey, response_class
from pylog.protocol.codec import (RequestHeader, UnsupportedRequest, build, decode_request,
                                  encode_response)
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from pylog.server.connection import CloseConnection, Response

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.connection import KafkaConnection
    from pylog.server.server import KafkaServer

__all__ = ["KafkaApis", "RequestContext", "error_code", "Handler"]

log = logging.getLogger("pylog.server")

_KNOWN_CODES = {e.value for e in ErrorCode}

#: APIs whose handler authorizes what it touches (Kafka's rules per API; ApiVersions
#: needs nothing).  With an authorizer on, a request of any other API — one added
#: without its rules — is refused unless the principal has ClusterAction on the
#: cluster (the brokers' own right), never allowed by default.
AUTHORIZED_BY_HANDLER = frozenset({
    ApiKey.API_VERSIONS, ApiKey.METADATA, ApiKey.DESCRIBE_CLUSTER, ApiKey.PRODUCE, ApiKey.FETCH,
    ApiKey.LIST_OFFSETS, ApiKey.OFFSET_FOR_LEADER_EPOCH, ApiKey.INIT_PRODUCER_ID, ApiKey.CREATE_TOPICS,
    ApiKey.DELETE_TOPICS, ApiKey.CREATE_PARTITIONS, ApiKey.DELETE_RECORDS, ApiKey.DESCRIBE_CONFIGS,
    ApiKey.ALTER_CONFIGS, ApiKey.INCREMENTAL_ALTER_CONFIGS, ApiKey.DESCRIBE_LOG_DIRS, ApiKey.ELECT_LEADERS,
    ApiKey.ALTER_PARTITION_REASSIGNMENTS, ApiKey.LIST_PARTITION_REASSIGNMENTS, ApiKey.FIND_COORDINATOR,
    ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP, ApiKey.HEARTBEAT, ApiKey.LEAVE_GROUP, ApiKey.OFFSET_COMMIT,
    ApiKey.OFFSET_FETCH, ApiKey.LIST_GROUPS, ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS, ApiKey.OFFSET_DELETE,
    ApiKey.CREATE_ACLS, ApiKey.DESCRIBE_ACLS, ApiKey.DELETE_ACLS,
    # SASL's login needs nothing (it is how the principal is known); the credential APIs
    # need Describe / Alter on the cluster
    ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE, ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS,
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
})


def error_code(exc: BaseException, what: str = "request") -> int:
    """Kafka's error code for ``exc``; an unexpected exception is logged with its
    traceback and answered UNKNOWN_SERVER_ERROR (-1)."""
    if isinstance(exc, PylogError):
        code = exc.code
        return code if code in _KNOWN_CODES else -1
    log.error("%s failed unexpectedly", what, exc_info=exc)
    return -1


class RequestContext:
    """What a handler knows about the request besides its body."""

    __slots__ = ("header", "conn", "apis", "start")

    def __init__(self, header: RequestHeader, conn: "KafkaConnection", apis: "KafkaApis", start: float) -> None:
        self.header = header
        self.conn = conn
        self.apis = apis
        self.start = start

    @property
    def version(self) -> int:
        return self.header.api_version

    @property
    def client(self) -> str:
        return f"{self.header.client_id or '-'}@{self.conn.peer}"

    def respond(self, data: Dict[str, Any]) -> Any:
        """A kio response object of this request's version from a plain mapping."""
        return build(response_class(self.header.api_key, self.header.api_version), data)

    # ------------------------------------------------------------------ authorization
    def allowed(self, op: AclOperation, rtype: ResourceType, name: str, log_denial: bool = True) -> bool:
        """Whether this connection's principal may do ``op`` on the resource (always,
        without authorizer.class.name); a refusal is logged and counted."""
        return self.apis.authorizer.allowed(self.conn, op, rtype, name, API_NAMES.get(self.header.api_key, ""),
                                            log_denial)

    def authorized_operations(self, rtype: ResourceType, name: str) -> int:
        """Kafka's bit field of the operations this principal may do on the resource."""
        return self.apis.authorizer.authorized_operations(self.conn, rtype, name)

    def check_topic(self, op: AclOperation, topic: str) -> None:
        """TopicAuthorizationFailed unless allowed."""
        if not self.allowed(op, ResourceType.TOPIC, topic):
            raise TopicAuthorizationFailed(f"not authorized to {op.title} topic {topic!r}")

    def check_group(self, op: AclOperation, group: str) -> None:
        """GroupAuthorizationFailed unless allowed."""
        if not self.allowed(op, ResourceType.GROUP, group):
            raise GroupAuthorizationFailed(f"not authorized to {op.title} group {group!r}")

    def check_cluster(self, op: AclOperation) -> None:
        """ClusterAuthorizationFailed unless allowed."""
        if not self.allowed(op, ResourceType.CLUSTER, CLUSTER_NAME):
            raise ClusterAuthorizationFailed(f"not authorized to {op.title} the cluster")


Handler = Callable[[RequestContext, Any], Any]


class KafkaApis:
    """The request handler of one server (see the module docstring)."""

    def __init__(self, server: "KafkaServer") -> None:
        from pylog.server.apis import acls, admin, fetch, groups, metadata, produce, sasl

        self.server = server
        self.broker: BrokerInterface = server.broker
        self.config = server.config
        self.metrics = server.metrics
        self.loop: asyncio.AbstractEventLoop = server.loop
        self.loop_thread = threading.get_ident()
        #: Every handler asks it before touching data (see pylog.server.authz).
        self.authorizer = server.authorizer
        self.fetcher = fetch.FetchHandler(self)
        self.group_handler = groups.GroupHandler(self)
        self.admin = admin.AdminHandler(self)
        self.meta = metadata.MetadataHandler(self)
        self.acl_handler = acls.AclHandler(self)
        self.sasl = sasl.SaslHandler(self)
        h: Dict[int, Handler] = {
            ApiKey.API_VERSIONS: self.meta.api_versions,
            ApiKey.METADATA: self.meta.metadata,
            ApiKey.DESCRIBE_CLUSTER: self.meta.describe_cluster,
            ApiKey.PRODUCE: produce.ProduceHandler(self).produce,
            ApiKey.FETCH: self.fetcher.fetch,
            ApiKey.LIST_OFFSETS: self.fetcher.list_offsets,
            ApiKey.OFFSET_FOR_LEADER_EPOCH: self.fetcher.offset_for_leader_epoch,
            ApiKey.INIT_PRODUCER_ID: self.admin.init_producer_id,
            ApiKey.CREATE_TOPICS: self.admin.create_topics,
            ApiKey.DELETE_TOPICS: self.admin.delete_topics,
            ApiKey.CREATE_PARTITIONS: self.admin.create_partitions,
            ApiKey.DELETE_RECORDS: self.admin.delete_records,
            ApiKey.DESCRIBE_CONFIGS: self.admin.describe_configs,
            ApiKey.ALTER_CONFIGS: self.admin.alter_configs,
            ApiKey.INCREMENTAL_ALTER_CONFIGS: self.admin.incremental_alter_configs,
            ApiKey.DESCRIBE_LOG_DIRS: self.admin.describe_log_dirs,
            ApiKey.ELECT_LEADERS: self.admin.elect_leaders,
            ApiKey.ALTER_PARTITION_REASSIGNMENTS: self.admin.alter_partition_reassignments,
            ApiKey.LIST_PARTITION_REASSIGNMENTS: self.admin.list_partition_reassignments,
            ApiKey.FIND_COORDINATOR: self.group_handler.find_coordinator,
            ApiKey.JOIN_GROUP: self.group_handler.join_group,
            ApiKey.SYNC_GROUP: self.group_handler.sync_group,
            ApiKey.HEARTBEAT: self.group_handler.heartbeat,
            ApiKey.LEAVE_GROUP: self.group_handler.leave_group,
            ApiKey.OFFSET_COMMIT: self.group_handler.offset_commit,
            ApiKey.OFFSET_FETCH: self.group_handler.offset_fetch,
            ApiKey.LIST_GROUPS: self.group_handler.list_groups,
            ApiKey.DESCRIBE_GROUPS: self.group_handler.describe_groups,
            ApiKey.DELETE_GROUPS: self.group_handler.delete_groups,
            ApiKey.OFFSET_DELETE: self.group_handler.offset_delete,
            ApiKey.CREATE_ACLS: self.acl_handler.create_acls,
            ApiKey.DESCRIBE_ACLS: self.acl_handler.describe_acls,
            ApiKey.DELETE_ACLS: self.acl_handler.delete_acls,
            ApiKey.SASL_HANDSHAKE: self.sasl.handshake,
            ApiKey.SASL_AUTHENTICATE: self.sasl.authenticate,
            ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: self.sasl.describe_user_scram_credentials,
            ApiKey.ALTER_USER_SCRAM_CREDENTIALS: self.sasl.alter_user_scram_credentials,
        }
        missing = set(SUPPORTED) - set(h)
        assert not missing, f"advertised APIs without a handler: {missing}"
        self._handlers = h
        #: APIs whose work can take long (creating or deleting thousands of partition
        #: directories, fsyncs, waiting for the controller's answer to an election or a
        #: reassignment): they run on worker threads, so the event loop — every other
        #: client — never waits for them.  The broker is thread-safe.
        self.threaded = frozenset({ApiKey.CREATE_TOPICS, ApiKey.DELETE_TOPICS, ApiKey.CREATE_PARTITIONS,
                                   ApiKey.DELETE_RECORDS, ApiKey.ALTER_CONFIGS, ApiKey.INCREMENTAL_ALTER_CONFIGS,
                                   ApiKey.DESCRIBE_LOG_DIRS, ApiKey.ELECT_LEADERS,
                                   ApiKey.ALTER_PARTITION_REASSIGNMENTS, ApiKey.LIST_PARTITION_REASSIGNMENTS,
                                   ApiKey.CREATE_ACLS, ApiKey.DELETE_ACLS, ApiKey.DESCRIBE_ACLS,
                                   ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, ApiKey.ALTER_USER_SCRAM_CREDENTIALS})
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pylog-admin")

    # ------------------------------------------------------------------ dispatch
    def handle(self, conn: "KafkaConnection", frame: Any, start: float) -> Any:
        """Answer one request frame (see the module docstring for what comes back)."""
        if conn.sasl_check:  # a SASL listener's connection before (or between) authentications
            early = self.sasl.gate(conn, frame, start)
            if early is not None:
                return early
        try:
            header, request = decode_request(frame)
        except UnsupportedRequest as exc:
            if exc.header.api_key == ApiKey.API_VERSIONS:
                self.metrics.request_error("ApiVersions", "UNSUPPORTED_VERSION")
                return self._encode(exc.header, self.meta.unsupported_api_versions(exc.header), start)
            self.metrics.request_error(API_NAMES.get(exc.header.api_key, "unknown"), "UNSUPPORTED_VERSION")
            raise CloseConnection(f"{exc} (client id {exc.header.client_id!r})") from None
        except InvalidRequest as exc:
            log.debug("malformed request from %s: %s", conn.peer, bytes(frame[:256]).hex())
            self.metrics.request_error("unknown", "INVALID_REQUEST")
            raise CloseConnection(f"malformed request: {exc}") from None
        ctx = RequestContext(header, conn, self, start)
        if header.api_key not in AUTHORIZED_BY_HANDLER and self.authorizer.enabled \
                and not ctx.allowed(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME):
            raise CloseConnection(f"{API_NAMES[header.api_key]} is refused: {conn.principal} lacks ClusterAction "
                                  "on the cluster")
        try:
            if header.api_key in self.threaded:
                result = self.in_thread(self._handlers[header.api_key], ctx, request)
            else:
                result = self._handlers[header.api_key](ctx, request)
        except CloseConnection:
            raise
        except InvalidRequest as exc:
            self.metrics.request_error(API_NAMES[header.api_key], "INVALID_REQUEST")
            raise CloseConnection(f"invalid {API_NAMES[header.api_key]} v{header.api_version}: {exc}") from None
        except Exception as exc:  # a bug: say so loudly, and drop only this client
            raise self._internal_error(header, ctx, exc) from None
        if isinstance(result, asyncio.Future):
            out = self.loop.create_future()

            def finish(fut: "asyncio.Future[Any]") -> None:
                if out.done():
                    return
                try:
                    out.set_result(self._encode(header, fut.result(), start))
                except CloseConnection as exc:
                    out.set_exception(exc)
                except Exception as exc:
                    out.set_exception(self._internal_error(header, ctx, exc))

            result.add_done_callback(finish)
            return out
        try:
            return self._encode(header, result, start)
        except Exception as exc:
            raise self._internal_error(header, ctx, exc) from None

    def _internal_error(self, header: RequestHeader, ctx: RequestContext, exc: BaseException) -> CloseConnection:
        """A handler bug: log it with its traceback; only this client's connection closes."""
        name = API_NAMES.get(header.api_key, str(header.api_key))
        log.error("%s v%d from %s failed", name, header.api_version, ctx.client, exc_info=exc)
        self.metrics.request_error(name, "UNKNOWN_SERVER_ERROR")
        return CloseConnection(f"internal error answering {name}: {exc!r}")

    def _encode(self, header: RequestHeader, result: Any, start: float) -> Optional[Response]:
        name = API_NAMES[header.api_key]
        if result is None:  # acks=0: no answer
            self.metrics.request_done(name, time.perf_counter() - start, 0)
            return None
        if isinstance(result, Response):
            resp = result
        else:
            data = encode_response(header, result)
            resp = Response([data], len(data))
        self.metrics.request_done(name, time.perf_counter() - start, resp.size)
        return resp

    # ------------------------------------------------------------------ helpers
    def in_thread(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """Run ``fn(*args)`` on a worker thread; a future (on the loop) of its result."""
        return asyncio.wrap_future(self.executor.submit(fn, *args), loop=self.loop)

    def close(self) -> None:
        """Wait for work on the worker threads to finish."""
        self.executor.shutdown(wait=True)

    def future(self) -> "asyncio.Future[Any]":
        return self.loop.create_future()

    def resolve(self, fut: "asyncio.Future[Any]", value: Any) -> None:
        """Set ``fut``'s result from any thread."""
        if threading.get_ident() == self.loop_thread:
            if not fut.done():
                fut.set_result(value)
        else:
            self.loop.call_soon_threadsafe(_set_if_pending, fut, value)


def _set_if_pending(fut: "asyncio.Future[Any]", value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
