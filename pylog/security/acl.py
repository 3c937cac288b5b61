"""Kafka's ACL model and the authorizer that evaluates it (no I/O).

An ACL (:class:`AclBinding`) says: *principal* from *host* is ALLOWed or DENYed
*operation* on the resources a *pattern* names.  The pattern is a resource type (Topic,
Group, Cluster, TransactionalId), a name and a pattern type: LITERAL (the name itself,
or ``*`` for every resource of the type) or PREFIXED (every name that starts with it).
The enums carry Kafka's numeric codes, which the CreateAcls/DescribeAcls/DeleteAcls
schemas use on the wire.

:class:`AclAuthorizer` decides as Kafka's ``AclAuthorizer`` does:

1. a principal of ``super.users`` may do everything;
2. an ACL that DENYs the operation (or All) to the principal (or ``User:*``) from the
   host (or ``*``) on a pattern matching the resource wins over any ALLOW;
3. when no ACL at all matches the resource, ``allow.everyone.if.no.acl.found`` decides
   (false by default);
4. otherwise an ALLOW of the operation or of All is needed; an ALLOW of Read, Write,
   Delete or Alter implies Describe, and AlterConfigs implies DescribeConfigs.

The authorizer holds an immutable snapshot of the ACLs (replaced whole by
:meth:`AclAuthorizer.load`) and a bounded cache of decisions, so the request path costs
a dictionary look-up once warm.  Where the ACLs come from is :mod:`pylog.security.aclstore`.
"""
from __future__ import annotations

import enum
import ipaddress
import threading
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from pylog.errors import InvalidArgument

__all__ = ["ResourceType", "AclOperation", "AclPermissionType", "PatternType", "AclBinding",
           "AclBindingFilter", "AclAuthorizer", "CLUSTER_NAME", "WILDCARD", "WILDCARD_PRINCIPAL",
           "AUTHORIZER_CLASS_NAMES", "parse_super_users", "parse_principal", "VALID_OPERATIONS",
           "bindings_of", "binding_json"]

#: The one Cluster resource's name (Kafka's).
CLUSTER_NAME = "kafka-cluster"
#: A LITERAL name, or a host, matching every one.
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
#: authorizer.class.name values that turn enforcement on: pylog's, and Kafka's ZooKeeper-mode
#: class name (so a Kafka server.properties keeps working).
AUTHORIZER_CLASS_NAMES = frozenset({"pylog.security.AclAuthorizer", "kafka.security.authorizer.AclAuthorizer"})
#: Decisions cached at most (the cache is cleared when it is full or the ACLs change).
MAX_CACHED_DECISIONS = 65_536


class _Named(enum.IntEnum):
    """An enum with Kafka's codes and Kafka's PascalCase names (``ClusterAction``)."""

    @property
    def title(self) -> str:
        return "".join(w.capitalize() for w in self.name.split("_"))

    @classmethod
    def parse(cls, text: str) -> "_Named":
        """By Kafka's name in any case and with or without underscores (``cluster_action``,
        ``ClusterAction``, ``CLUSTER-ACTION``); InvalidArgument lists the choices."""
        key = str(text).replace("-", "").replace("_", "").upper()
        for m in cls:
            if m.name.replace("_", "") == key and m.value > 1:
                return m
        choices = ", ".join(m.title for m in cls if m.value > 1)
        raise InvalidArgument(f"{text!r} is not a {cls.__name__} ({choices})")


class ResourceType(_Named):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class AclOperation(_Named):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(_Named):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


class PatternType(_Named):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


_O = AclOperation
#: Operations an ACL may name per resource type (Kafka's lists); All is valid for each.
VALID_OPERATIONS: Mapping[ResourceType, FrozenSet[AclOperation]] = {
    ResourceType.TOPIC: frozenset({_O.READ, _O.WRITE, _O.CREATE, _O.DELETE, _O.ALTER, _O.DESCRIBE,
                                   _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.ALL}),
    ResourceType.GROUP: frozenset({_O.READ, _O.DESCRIBE, _O.DELETE, _O.ALL}),
    ResourceType.CLUSTER: frozenset({_O.CREATE, _O.CLUSTER_ACTION, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS,
                                     _O.IDEMPOTENT_WRITE, _O.ALTER, _O.DESCRIBE, _O.ALL}),
    ResourceType.TRANSACTIONAL_ID: frozenset({_O.DESCRIBE, _O.WRITE, _O.ALL}),
}
#: An ALLOW of any of these also allows the key (Kafka's implied operations).
_ALLOWED_BY: Mapping[AclOperation, FrozenSet[AclOperation]] = {
    _O.DESCRIBE: frozenset({_O.DESCRIBE, _O.READ, _O.WRITE, _O.DELETE, _O.ALTER, _O.ALL}),
    _O.DESCRIBE_CONFIGS: frozenset({_O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.ALL}),
}


def parse_principal(text: str) -> str:
    """``Type:name`` (``User:alice``, ``User:CN=client,O=Team A``, ``User:*``), stripped;
    InvalidArgument otherwise."""
    p = str(text).strip()
    kind, sep, name = p.partition(":")
    if not sep or not kind or not name:
        raise InvalidArgument(f"a principal is TYPE:NAME such as User:alice, got {text!r}")
    return p


def _check_host(host: str) -> str:
    h = str(host).strip()
    if h == WILDCARD:
        return h
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        raise InvalidArgument(f"an ACL's host is * or an IP address, got {host!r}") from None


def parse_super_users(value: Optional[str]) -> FrozenSet[str]:
    """super.users: principals separated by semicolons (Kafka's format)."""
    if not value:
        return frozenset()
    return frozenset(parse_principal(p) for p in str(value).split(";") if p.strip())


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ACL: a resource pattern and an entry (principal, host, operation, permission)."""

    resource_type: ResourceType
    name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: AclPermissionType

    @classmethod
    def create(cls, resource_type: int, name: str, pattern_type: int, principal: str, host: str,
               operation: int, permission: int) -> "AclBinding":
        """A validated binding (InvalidArgument says what is wrong), as CreateAcls checks one."""
        try:
            rtype, ptype = ResourceType(resource_type), PatternType(pattern_type)
            op, perm = AclOperation(operation), AclPermissionType(permission)
        except ValueError as exc:
            raise InvalidArgument(f"unknown ACL code: {exc}") from None
        if rtype not in VALID_OPERATIONS:
            raise InvalidArgument(f"resource type {rtype.title} cannot carry ACLs in pylog "
                                  "(Topic, Group, Cluster, TransactionalId)")
        if ptype not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise InvalidArgument(f"an ACL's pattern type is LITERAL or PREFIXED, got {ptype.name}")
        if perm not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
            raise InvalidArgument(f"an ACL's permission is ALLOW or DENY, got {perm.name}")
        if op not in VALID_OPERATIONS[rtype]:
            raise InvalidArgument(f"operation {op.title} does not apply to a {rtype.title} "
                                  f"({', '.join(sorted(o.title for o in VALID_OPERATIONS[rtype]))})")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("an ACL's resource name is empty")
        if rtype == ResourceType.CLUSTER and (name != CLUSTER_NAME or ptype != PatternType.LITERAL):
            raise InvalidArgument(f"the Cluster resource is LITERAL {CLUSTER_NAME!r}, got {ptype.name} {name!r}")
        if ptype == PatternType.PREFIXED and name == WILDCARD:
            raise InvalidArgument("a PREFIXED pattern cannot be '*' (use LITERAL '*' for every resource)")
        return cls(rtype, name, ptype, parse_principal(principal), _check_host(host), op, perm)

    def matches_resource(self, resource_type: ResourceType, name: str) -> bool:
        """Whether this ACL's pattern covers the resource ``name`` of ``resource_type``."""
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.name == name or self.name == WILDCARD
        return name.startswith(self.name)

    def __str__(self) -> str:
        return (f"{self.resource_type.title}:{self.pattern_type.name}:{self.name} "
                f"(principal={self.principal}, host={self.host}, operation={self.operation.title}, "
                f"permissionType={self.permission.title})")


@dataclass(frozen=True)
class AclBindingFilter:
    """A filter over bindings (DescribeAcls, DeleteAcls): None / ANY match everything.
    ``pattern_type`` MATCH selects the ACLs that apply to the resource ``name`` (literal
    of that name, literal ``*``, prefixed by a prefix of it)."""

    resource_type: ResourceType = ResourceType.ANY
    name: Optional[str] = None
    pattern_type: PatternType = PatternType.ANY
    principal: Optional[str] = None
    host: Optional[str] = None
    operation: AclOperation = AclOperation.ANY
    permission: AclPermissionType = AclPermissionType.ANY

    @classmethod
    def create(cls, resource_type: int, name: Optional[str], pattern_type: int, principal: Optional[str],
               host: Optional[str], operation: int, permission: int) -> "AclBindingFilter":
        try:
            f = cls(ResourceType(resource_type), name, PatternType(pattern_type), principal, host,
                    AclOperation(operation), AclPermissionType(permission))
        except ValueError as exc:
            raise InvalidArgument(f"unknown ACL filter code: {exc}") from None
        if PatternType.UNKNOWN in (f.pattern_type,) or f.resource_type == ResourceType.UNKNOWN or \
                f.operation == AclOperation.UNKNOWN or f.permission == AclPermissionType.UNKNOWN:
            raise InvalidArgument("an ACL filter cannot name UNKNOWN")
        return f

    def matches(self, b: AclBinding) -> bool:
        if self.resource_type != ResourceType.ANY and b.resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.name is not None and not (
                    (b.pattern_type == PatternType.LITERAL and b.name in (self.name, WILDCARD))
                    or (b.pattern_type == PatternType.PREFIXED and self.name.startswith(b.name))):
                return False
        else:
            if self.pattern_type != PatternType.ANY and b.pattern_type != self.pattern_type:
                return False
            if self.name is not None and b.name != self.name:
                return False
        if self.principal is not None and b.principal != self.principal:
            return False
        if self.host is not None and b.host != self.host:
            return False
        if self.operation != AclOperation.ANY and b.operation != self.operation:
            return False
        if self.permission != AclPermissionType.ANY and b.permission != self.permission:
            return False
        return True


class _Index:
    """The ACLs of one snapshot, by resource type: literal by name, prefixed as a list."""

    def __init__(self, bindings: Iterable[AclBinding]) -> None:
        self.literal: Dict[Tuple[ResourceType, str], List[AclBinding]] = {}
        self.prefixed: Dict[ResourceType, List[AclBinding]] = {}
        self.by_type: Dict[ResourceType, List[AclBinding]] = {}
        self.all: Tuple[AclBinding, ...] = tuple(sorted(set(bindings)))
        for b in self.all:
            self.by_type.setdefault(b.resource_type, []).append(b)
            if b.pattern_type == PatternType.LITERAL:
                self.literal.setdefault((b.resource_type, b.name), []).append(b)
            else:
                self.prefixed.setdefault(b.resource_type, []).append(b)

    def matching(self, rtype: ResourceType, name: str) -> List[AclBinding]:
        out = list(self.literal.get((rtype, name), ()))
        if name != WILDCARD:
            out.extend(self.literal.get((rtype, WILDCARD), ()))
        out.extend(b for b in self.prefixed.get(rtype, ()) if name.startswith(b.name))
        return out


def _entry_applies(b: AclBinding, principal: str, host: str) -> bool:
    return b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)


class AclAuthorizer:
    """Kafka's ACL decision (see the module docstring) over a snapshot of ACLs."""

    def __init__(self, super_users: Iterable[str] = (), allow_everyone_if_no_acl_found: bool = False,
                 bindings: Iterable[AclBinding] = ()) -> None:
        self.super_users = frozenset(parse_principal(p) for p in super_users)
        self.allow_everyone_if_no_acl_found = bool(allow_everyone_if_no_acl_found)
        self._lock = threading.Lock()
        self._index = _Index(bindings)
        self._cache: Dict[Tuple[str, str, AclOperation, ResourceType, str], bool] = {}

    # ------------------------------------------------------------------ ACLs
    def load(self, bindings: Iterable[AclBinding]) -> None:
        """Replace the ACLs (a new snapshot; decisions cached before are dropped)."""
        index = _Index(bindings)
        with self._lock:
            self._index = index
            self._cache = {}

    def acls(self, flt: Optional[AclBindingFilter] = None) -> List[AclBinding]:
        """The ACLs (matching ``flt``), sorted."""
        return [b for b in self._index.all if flt is None or flt.matches(b)]

    # ------------------------------------------------------------------ decisions
    def authorize(self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType,
                  name: str) -> bool:
        """Whether ``principal`` connected from ``host`` may do ``operation`` on the
        resource ``name`` of ``resource_type``."""
        key = (principal, host, operation, resource_type, name)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        index = self._index
        decision = self._decide(index, principal, host, operation, resource_type, name)
        with self._lock:
            if self._index is index:  # not a decision over ACLs replaced meanwhile
                if len(self._cache) >= MAX_CACHED_DECISIONS:
                    self._cache = {}
                self._cache[key] = decision
        return decision

    def _decide(self, index: _Index, principal: str, host: str, operation: AclOperation,
                resource_type: ResourceType, name: str) -> bool:
        assert operation not in (AclOperation.ANY, AclOperation.UNKNOWN), operation
        if principal in self.super_users:
            return True
        acls = index.matching(resource_type, name)
        if not acls:
            return self.allow_everyone_if_no_acl_found
        for b in acls:
            if b.permission == AclPermissionType.DENY and b.operation in (operation, AclOperation.ALL) \
                    and _entry_applies(b, principal, host):
                return False
        allowed_by = _ALLOWED_BY.get(operation, frozenset({operation, AclOperation.ALL}))
        return any(b.permission == AclPermissionType.ALLOW and b.operation in allowed_by
                   and _entry_applies(b, principal, host) for b in acls)

    def authorize_any(self, principal: str, host: str, operation: AclOperation,
                      resource_type: ResourceType) -> bool:
        """Whether ``principal`` may do ``operation`` on *some* resource of the type
        (Kafka's authorizeByResourceType, KIP-679: an idempotent producer needs Write on
        any topic): a super user, an ALLOW whose pattern is not wholly denied to the
        principal, or no ACL of the type at all while allow.everyone.if.no.acl.found."""
        if principal in self.super_users:
            return True
        index = self._index
        typed = index.by_type.get(resource_type, [])
        if not typed:
            return self.allow_everyone_if_no_acl_found
        allowed_by = _ALLOWED_BY.get(operation, frozenset({operation, AclOperation.ALL}))
        for b in typed:
            if b.permission != AclPermissionType.ALLOW or b.operation not in allowed_by \
                    or not _entry_applies(b, principal, host):
                continue
            # a resource this ALLOW covers: its own name (a prefix is itself a name it covers)
            name = b.name if b.name != WILDCARD else "\x00any"
            if self._decide(index, principal, host, operation, resource_type, name):
                return True
        return False


def bindings_of(items: Sequence[Mapping[str, object]]) -> List[AclBinding]:
    """Bindings from the JSON form :func:`binding_json` writes (the ACL file)."""
    out = []
    for it in items:
        out.append(AclBinding.create(
            ResourceType.parse(str(it["resourceType"])), str(it["name"]), PatternType.parse(str(it["patternType"])),
            str(it["principal"]), str(it["host"]), AclOperation.parse(str(it["operation"])),
            AclPermissionType.parse(str(it["permissionType"]))))
    return out


def binding_json(b: AclBinding) -> Dict[str, str]:
    """A binding as JSON with Kafka's names (``Topic``, ``LITERAL``, ``Read``, ``Allow``)."""
    return {"resourceType": b.resource_type.title, "name": b.name, "patternType": b.pattern_type.name,
            "principal": b.principal, "host": b.host, "operation": b.operation.title,
            "permissionType": b.permission.title}
