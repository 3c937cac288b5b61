"""`pylog acls add|list|remove`: Kafka's kafka-acls.sh.

Offline on a single node's data directory (``--data-dir``: its ``acls.json``, so the
first ACLs exist before the broker starts; a running broker picks a change up within
a second), or online through any broker (``--bootstrap-server``; a secured listener
with ``--command-config FILE``, Kafka's client properties), with CreateAcls /
DescribeAcls / DeleteAcls: the connection's principal needs Alter, or Describe to list,
on the cluster.  kafka-acls.sh's flags: ``--allow-principal``,
``--deny-principal``, ``--allow-host``, ``--deny-host``, ``--operation``, ``--topic``,
``--group``, ``--cluster``, ``--transactional-id``, ``--resource-pattern-type``.
"""
from __future__ import annotations

import argparse
import itertools
from typing import Any, List, Optional, Sequence, Tuple

from pylog.cli.clientconfig import add_where_arguments, load_command_config
from pylog.errors import InvalidArgument, error_for_code
from pylog.security.acl import (CLUSTER_NAME, AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                PatternType, ResourceType)

__all__ = ["add_acls_parser", "run_acls"]


def add_acls_parser(sub: Any) -> None:
    a = sub.add_parser("acls", help="add, list or remove ACLs (kafka-acls.sh)",
                       description="ACLs of a single node's data directory (--data-dir, also while it is "
                                   "stopped) or of a running broker or cluster (--bootstrap-server HOST:PORT, "
                                   "secured ones with --command-config).  Enforced when the broker runs with "
                                   "authorizer.class.name=pylog.security.AclAuthorizer.")
    asub = a.add_subparsers(dest="action", required=True)
    for name, text in (("add", "add ACLs: every principal x host x operation x resource given"),
                       ("list", "list the ACLs (of the resources given, or all)"),
                       ("remove", "remove the ACLs that match the flags given (all of a resource's without "
                                  "principal flags)")):
        x = asub.add_parser(name, help=text)
        x.add_argument("--topic", action="append", default=[], help="a topic (repeatable; '*' for every topic)")
        x.add_argument("--group", action="append", default=[], help="a consumer group (repeatable; '*': every one)")
        x.add_argument("--transactional-id", action="append", default=[], help="a transactional id (repeatable)")
        x.add_argument("--cluster", action="store_true", help="the cluster resource")
        x.add_argument("--resource-pattern-type", default=None,
                       help="literal (default for add and remove) or prefixed; list also takes any and match "
                            "(default: any)")
        if name == "list":
            x.add_argument("--principal", action="append", default=[], help="only the ACLs of this principal")
        else:
            x.add_argument("--allow-principal", action="append", default=[], metavar="PRINCIPAL",
                           help="e.g. User:alice or 'User:CN=client,O=Team A' (repeatable)")
            x.add_argument("--deny-principal", action="append", default=[], metavar="PRINCIPAL")
            x.add_argument("--allow-host", action="append", default=[], help="an IP address or * (default *)")
            x.add_argument("--deny-host", action="append", default=[])
            x.add_argument("--operation", action="append", default=[],
                           help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, "
                                "AlterConfigs, IdempotentWrite or All (repeatable)")
        add_where_arguments(x, "offline: a single node's data directory (default ./pylog-data)")
        x.set_defaults(func=run_acls)


def _resources(args: argparse.Namespace) -> List[Tuple[ResourceType, str]]:
    out = [(ResourceType.TOPIC, t) for t in args.topic] + [(ResourceType.GROUP, g) for g in args.group]
    out += [(ResourceType.TRANSACTIONAL_ID, t) for t in args.transactional_id]
    if args.cluster:
        out.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return out


def _pattern(args: argparse.Namespace, default: PatternType) -> PatternType:
    if args.resource_pattern_type is None:
        return default
    return PatternType.parse(args.resource_pattern_type)


def _entries(args: argparse.Namespace) -> List[Tuple[str, str, AclPermissionType]]:
    """(principal, host, permission) for each principal and host given."""
    out = []
    for perm, principals, hosts in ((AclPermissionType.ALLOW, args.allow_principal, args.allow_host),
                                    (AclPermissionType.DENY, args.deny_principal, args.deny_host)):
        out += [(p, h, perm) for p, h in itertools.product(principals, hosts or ["*"])]
    return out


def _bindings(args: argparse.Namespace) -> List[AclBinding]:
    resources = _resources(args)
    if not resources:
        raise InvalidArgument("name a resource: --topic, --group, --transactional-id or --cluster")
    entries = _entries(args)
    if not entries:
        raise InvalidArgument("name a principal: --allow-principal or --deny-principal")
    if not args.operation:
        raise InvalidArgument("name an operation: --operation (Read, Write, Describe, ... or All)")
    pattern = _pattern(args, PatternType.LITERAL)
    ops = [AclOperation.parse(o) for o in args.operation]
    return [AclBinding.create(rt, name, PatternType.LITERAL if rt == ResourceType.CLUSTER else pattern,
                              principal, host, op, perm)
            for (rt, name), (principal, host, perm), op in itertools.product(resources, entries, ops)]


def _filters(args: argparse.Namespace, default: PatternType) -> List[AclBindingFilter]:
    pattern = _pattern(args, default)
    resources: List[Tuple[ResourceType, Optional[str]]] = list(_resources(args)) or [(ResourceType.ANY, None)]
    if args.action == "list":
        entries: List[Tuple[Optional[str], Optional[str], AclPermissionType]] = \
            [(p, None, AclPermissionType.ANY) for p in args.principal] or [(None, None, AclPermissionType.ANY)]
        ops = [AclOperation.ANY]
    else:
        if resources == [(ResourceType.ANY, None)]:
            raise InvalidArgument("name the resource whose ACLs to remove: --topic, --group, "
                                  "--transactional-id or --cluster")
        entries = list(_entries(args)) or [(None, None, AclPermissionType.ANY)]
        if not args.allow_host and not args.deny_host:
            entries = [(p, None, perm) for p, _, perm in entries]
        ops = [AclOperation.parse(o) for o in args.operation] or [AclOperation.ANY]
    return [AclBindingFilter(rt, name, PatternType.LITERAL if rt == ResourceType.CLUSTER and
                             pattern != PatternType.ANY else pattern, principal, host, op, perm)
            for (rt, name), (principal, host, perm), op in itertools.product(resources, entries, ops)]


def _print(bindings: Sequence[AclBinding]) -> None:
    current: Optional[Tuple[ResourceType, str, PatternType]] = None
    for b in sorted(bindings):
        key = (b.resource_type, b.name, b.pattern_type)
        if key != current:
            if current is not None:
                print()
            current = key
            print(f"Current ACLs for resource `ResourcePattern(resourceType={b.resource_type.name}, name={b.name}, "
                  f"patternType={b.pattern_type.name})`:")
        print(f" \t(principal={b.principal}, host={b.host}, operation={b.operation.name}, "
              f"permissionType={b.permission.name})")


def run_acls(args: argparse.Namespace) -> int:
    if args.bootstrap_server is None:
        args.data_dir = args.data_dir or "pylog-data"
        return _offline(args)
    return _online(args)


def _offline(args: argparse.Namespace) -> int:
    from pylog.security.aclstore import FileAclStore

    store = FileAclStore(args.data_dir)
    if args.action == "add":
        bindings = _bindings(args)
        store.add(bindings)
        print(f"Added {len(bindings)} ACLs to {store.path}:")
        _print(bindings)
    elif args.action == "list":
        filters = _filters(args, PatternType.ANY)
        _print(sorted({b for b in store.load() for f in filters if f.matches(b)}))
    else:
        removed = store.remove(_filters(args, PatternType.LITERAL))
        gone = sorted({b for r in removed for b in r})
        print(f"Removed {len(gone)} ACLs from {store.path}:")
        _print(gone)
    return 0


def _check(code: int, message: Optional[str], what: str) -> None:
    if code:
        cls = error_for_code(code)
        raise cls(f"{what}: {cls.kafka_name if cls.code == code else 'error ' + str(code)}: {message or ''}")


def _online(args: argparse.Namespace) -> int:
    from pylog.client.network.admin import AdminClient
    from pylog.protocol.apis import ApiKey

    with AdminClient(args.bootstrap_server, **load_command_config(args.command_config)) as admin:
        if args.action == "add":
            bindings = _bindings(args)
            _, resp = admin.request_any(ApiKey.CREATE_ACLS, {"creations": [
                {"resource_type": int(b.resource_type), "resource_name": b.name,
                 "resource_pattern_type": int(b.pattern_type), "principal": b.principal, "host": b.host,
                 "operation": int(b.operation), "permission_type": int(b.permission)} for b in bindings]},
                what="CreateAcls")
            for b, r in zip(bindings, resp.results):
                _check(r.error_code, r.error_message, f"creating {b}")
            print(f"Added {len(bindings)} ACLs:")
            _print(bindings)
            return 0
        if args.action == "list":
            found: set = set()
            for f in _filters(args, PatternType.ANY):
                _, resp = admin.request_any(ApiKey.DESCRIBE_ACLS, _filter_data(f), what="DescribeAcls")
                _check(resp.error_code, resp.error_message, "DescribeAcls")
                for r in resp.resources:
                    for e in r.acls:
                        found.add(AclBinding.create(r.resource_type, r.resource_name, r.pattern_type, e.principal,
                                                    e.host, e.operation, e.permission_type))
            _print(sorted(found))
            return 0
        _, resp = admin.request_any(ApiKey.DELETE_ACLS, {"filters": [
            _filter_data(f) for f in _filters(args, PatternType.LITERAL)]}, what="DeleteAcls")
        gone = set()
        for r in resp.filter_results:
            _check(r.error_code, r.error_message, "DeleteAcls")
            for m in r.matching_acls:
                gone.add(AclBinding.create(m.resource_type, m.resource_name, m.pattern_type, m.principal, m.host,
                                           m.operation, m.permission_type))
        print(f"Removed {len(gone)} ACLs:")
        _print(sorted(gone))
        return 0


def _filter_data(f: AclBindingFilter) -> dict:
    return {"resource_type_filter": int(f.resource_type), "resource_name_filter": f.name,
            "pattern_type_filter": int(f.pattern_type), "principal_filter": f.principal, "host_filter": f.host,
            "operation": int(f.operation), "permission_type": int(f.permission)}
