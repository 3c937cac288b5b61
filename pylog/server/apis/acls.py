"""CreateAcls, DescribeAcls and DeleteAcls (Kafka's admin APIs for ACLs).

As Kafka: CreateAcls and DeleteAcls need Alter on the cluster, DescribeAcls needs
Describe on the cluster (CLUSTER_AUTHORIZATION_FAILED otherwise); a broker without an
authorizer answers SECURITY_DISABLED.  A binding that does not validate (an operation
that does not apply to its resource type, a bad principal or host) is answered
INVALID_REQUEST on its own row; the others are created.  The store and the reload are
:class:`~pylog.server.authz.RequestAuthorizer`'s; these run on a worker thread (a
cluster's store is ZooKeeper).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from pylog.errors import InvalidArgument, PylogError, SecurityDisabled
from pylog.security.acl import AclBinding, AclBindingFilter, AclOperation
from pylog.server.apis import error_code

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext

__all__ = ["AclHandler"]

log = logging.getLogger("pylog.server")

_INVALID_REQUEST = 42
_NO_AUTHORIZER = "no authorizer is configured (authorizer.class.name)"


def _filter_of(f: Any) -> AclBindingFilter:
    return AclBindingFilter.create(f.resource_type_filter, f.resource_name_filter,
                                   getattr(f, "pattern_type_filter", 3), f.principal_filter, f.host_filter,
                                   f.operation, f.permission_type)


class AclHandler:
    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.authorizer = apis.authorizer

    def _refusal(self, ctx: "RequestContext", op: AclOperation) -> Tuple[int, str]:
        """(error code, message) when the request may not run, else (0, "")."""
        if not self.authorizer.enabled:
            return SecurityDisabled.code, _NO_AUTHORIZER
        try:
            ctx.check_cluster(op)
        except PylogError as exc:
            return exc.code, str(exc)
        return 0, ""

    def create_acls(self, ctx: "RequestContext", req: Any) -> Any:
        code, msg = self._refusal(ctx, AclOperation.ALTER)
        rows: List[Dict[str, Any]] = []
        valid: List[Tuple[int, AclBinding]] = []
        for i, c in enumerate(req.creations):
            rows.append({"error_code": code, "error_message": msg or None})
            if code:
                continue
            try:
                valid.append((i, AclBinding.create(c.resource_type, c.resource_name,
                                                   getattr(c, "resource_pattern_type", 3), c.principal, c.host,
                                                   c.operation, c.permission_type)))
            except InvalidArgument as exc:
                rows[i] = {"error_code": _INVALID_REQUEST, "error_message": str(exc)}
        if valid:
            try:
                self.authorizer.create_acls([b for _, b in valid])
                for b in (b for _, b in valid):
                    log.info("ACL created by %s (%s): %s", ctx.client, ctx.conn.principal, b)
            except PylogError as exc:
                for i, _ in valid:
                    rows[i] = {"error_code": error_code(exc), "error_message": str(exc)}
        return ctx.respond({"throttle_time": 0, "results": rows})

    def describe_acls(self, ctx: "RequestContext", req: Any) -> Any:
        code, msg = self._refusal(ctx, AclOperation.DESCRIBE)
        if code:
            return ctx.respond({"throttle_time": 0, "error_code": code, "error_message": msg, "resources": []})
        try:
            flt = _filter_of(req)
        except InvalidArgument as exc:
            return ctx.respond({"throttle_time": 0, "error_code": _INVALID_REQUEST, "error_message": str(exc),
                                "resources": []})
        assert self.authorizer.acl is not None
        by_resource: Dict[Tuple[int, str, int], List[Dict[str, Any]]] = {}
        for b in self.authorizer.acl.acls(flt):
            by_resource.setdefault((int(b.resource_type), b.name, int(b.pattern_type)), []).append(
                {"principal": b.principal, "host": b.host, "operation": int(b.operation),
                 "permission_type": int(b.permission)})
        return ctx.respond({"throttle_time": 0, "error_code": 0, "error_message": None, "resources": [
            {"resource_type": t, "resource_name": n, "pattern_type": p, "acls": acls}
            for (t, n, p), acls in sorted(by_resource.items())]})

    def delete_acls(self, ctx: "RequestContext", req: Any) -> Any:
        code, msg = self._refusal(ctx, AclOperation.ALTER)
        results: List[Dict[str, Any]] = [{"error_code": code, "error_message": msg or None, "matching_acls": []}
                                         for _ in req.filters]
        if code:
            return ctx.respond({"throttle_time": 0, "filter_results": results})
        valid: List[Tuple[int, AclBindingFilter]] = []
        for i, f in enumerate(req.filters):
            try:
                valid.append((i, _filter_of(f)))
            except InvalidArgument as exc:
                results[i] = {"error_code": _INVALID_REQUEST, "error_message": str(exc), "matching_acls": []}
        if valid:
            try:
                removed = self.authorizer.delete_acls([f for _, f in valid])
            except PylogError as exc:
                for i, _ in valid:
                    results[i] = {"error_code": error_code(exc), "error_message": str(exc), "matching_acls": []}
                removed = []
            for (i, _), gone in zip(valid, removed):
                for b in gone:
                    log.info("ACL deleted by %s (%s): %s", ctx.client, ctx.conn.principal, b)
                results[i]["matching_acls"] = [
                    {"error_code": 0, "error_message": None, "resource_type": int(b.resource_type),
                     "resource_name": b.name, "pattern_type": int(b.pattern_type), "principal": b.principal,
                     "host": b.host, "operation": int(b.operation), "permission_type": int(b.permission)}
                    for b in gone]
        return ctx.respond({"throttle_time": 0, "filter_results": results})
