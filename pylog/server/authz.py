"""Authorization of requests: the server's side of :mod:`pylog.security`.

:class:`RequestAuthorizer` is what the API handlers ask before they touch data
(``ctx.allowed(...)`` / ``ctx.check_topic(...)`` in :mod:`pylog.server.apis`).  With no
``authorizer.class.name`` every request is allowed, as before, at the cost of one
attribute test.  With ``authorizer.class.name=pylog.security.AclAuthorizer`` it asks
an :class:`~pylog.security.acl.AclAuthorizer` loaded from the ACL store — the cluster's
metadata store on a ``--zookeeper`` broker, else ``acls.json`` in the data directory —
and a thread re-reads the store whenever it changed (polled every
``ACL_POLL_INTERVAL_S``), so an ACL made through any broker or offline takes effect
everywhere within a second.

Each refusal is logged at WARNING once (client address, principal, operation,
resource); the same refusal on the same connection is logged again at most every
``DENIAL_LOG_INTERVAL_S`` with how many were suppressed, so a client retrying in a loop
does not flood the log.  Every refusal is counted in
``pylog_server_authorization_failures_total{resource_type, operation}``.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from pylog.errors import PylogError
from pylog.security.acl import (AUTHORIZER_CLASS_NAMES, VALID_OPERATIONS, AclAuthorizer, AclBinding,
                                AclBindingFilter, AclOperation, ResourceType)

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.config import ServerConfig
    from pylog.server.metrics import ServerMetrics

__all__ = ["RequestAuthorizer", "open_acl_store", "ACL_POLL_INTERVAL_S", "DENIAL_LOG_INTERVAL_S"]

log = logging.getLogger("pylog.server")

ACL_POLL_INTERVAL_S = 0.2
DENIAL_LOG_INTERVAL_S = 10.0
#: Distinct refusals remembered per connection for the log's rate limit.
_MAX_REMEMBERED_DENIALS = 256


def open_acl_store(config: "ServerConfig", broker: Any) -> Any:
    """The ACL store of this server: the metadata store of a cluster node, else the
    data directory's file."""
    from pylog.security.aclstore import FileAclStore, MetadataAclStore

    cache = getattr(broker, "cache", None)
    if config.zookeeper_connect is not None and cache is not None:
        return MetadataAclStore(cache.store)
    return FileAclStore(config.data_dir)


def client_host(conn: Any) -> str:
    """The client's IP address (a connection's peer is ``host:port``)."""
    return str(conn.peer).rsplit(":", 1)[0].strip("[]")


class RequestAuthorizer:
    """Decides requests of one server (see the module docstring)."""

    def __init__(self, config: "ServerConfig", broker: Any, metrics: "ServerMetrics") -> None:
        self.metrics = metrics
        self.enabled = bool(config.authorizer_class_name)
        self.acl: Optional[AclAuthorizer] = None
        self.store: Any = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._denials: "weakref.WeakKeyDictionary[Any, Dict[Tuple[Any, ...], List[float]]]" = \
            weakref.WeakKeyDictionary()
        self._denials_lock = threading.Lock()  # refusals come from the loop and the admin threads
        if not self.enabled:
            return
        assert config.authorizer_class_name in AUTHORIZER_CLASS_NAMES, config.authorizer_class_name
        self.store = open_acl_store(config, broker)
        self.acl = AclAuthorizer(config.super_users, config.allow_everyone_if_no_acl_found, self.store.load())
        log.info("ACL authorization on (%s): %d ACLs, super.users %s, allow.everyone.if.no.acl.found=%s",
                 config.authorizer_class_name, len(self.acl.acls()), ";".join(sorted(config.super_users)) or "-",
                 str(config.allow_everyone_if_no_acl_found).lower())
        self._thread = threading.Thread(target=self._poll, name="pylog-acl-poll", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ ACL changes
    def _poll(self) -> None:
        while not self._stop.wait(ACL_POLL_INTERVAL_S):
            try:
                if self.store.changed():
                    self.reload()
            except PylogError as exc:  # the store is away: keep the ACLs we have
                log.warning("reading the ACLs failed, keeping the previous ones: %s", exc)
            except Exception:  # a bug: say so, keep polling
                log.exception("reading the ACLs failed")

    def reload(self) -> None:
        assert self.acl is not None and self.store is not None
        bindings = self.store.load()
        self.acl.load(bindings)
        log.info("ACLs reloaded: %d", len(bindings))

    def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        assert self.store is not None
        self.store.add(bindings)
        self.reload()

    def delete_acls(self, filters: Sequence[AclBindingFilter]) -> List[List[AclBinding]]:
        assert self.store is not None
        removed = self.store.remove(filters)
        self.reload()
        return removed

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.store is not None:
            self.store.close()

    # ------------------------------------------------------------------ decisions
    def allowed(self, conn: Any, operation: AclOperation, resource_type: ResourceType, name: str,
                api: str = "", log_denial: bool = True) -> bool:
        """Whether the connection's principal may; a refusal is logged and counted
        (unless ``log_denial`` is false: Metadata leaving a topic out of a list)."""
        acl = self.acl
        if acl is None:
            return True
        if acl.authorize(conn.principal, client_host(conn), operation, resource_type, name):
            return True
        if log_denial:
            self.denied(conn, operation, resource_type, name, api)
        return False

    def authorized_operations(self, conn: Any, resource_type: ResourceType, name: str) -> int:
        """Kafka's authorized-operations bit field (bit ``1 << code`` per operation the
        principal may do on the resource; every operation of the type without an
        authorizer), for Metadata, DescribeCluster and DescribeGroups when asked."""
        acl = self.acl
        host = client_host(conn) if acl is not None else ""
        bits = 0
        for op in VALID_OPERATIONS[resource_type]:
            if op != AclOperation.ALL and (acl is None or acl.authorize(conn.principal, host, op, resource_type, name)):
                bits |= 1 << int(op)
        return bits

    def allowed_any(self, conn: Any, operation: AclOperation, resource_type: ResourceType) -> bool:
        acl = self.acl
        return acl is None or acl.authorize_any(conn.principal, client_host(conn), operation, resource_type)

    def denied(self, conn: Any, operation: AclOperation, resource_type: ResourceType, name: str,
               api: str = "") -> None:
        """Count a refusal and log it (rate-limited per connection and refusal)."""
        self.metrics.authorization_failures.labels(resource_type.title, operation.title).inc()
        key = (operation, resource_type, name, api)
        now = time.monotonic()
        with self._denials_lock:
            seen = self._denials.get(conn)
            if seen is None:
                seen = self._denials[conn] = {}
            entry = seen.get(key)
            if entry is not None and now - entry[0] < DENIAL_LOG_INTERVAL_S:
                entry[1] += 1
                return
            suppressed = int(entry[1]) if entry is not None else 0
            if len(seen) >= _MAX_REMEMBERED_DENIALS:
                seen.clear()
            seen[key] = [now, 0]
        log.warning("authorization failed: principal %s from %s may not %s %s %r%s%s", conn.principal, conn.peer,
                    operation.title, resource_type.title, name, f" ({api})" if api else "",
                    f" (and {suppressed} more times in the last {DENIAL_LOG_INTERVAL_S:.0f} s)" if suppressed else "")
