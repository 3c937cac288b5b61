"""Kafka's ACL rules, evaluated without I/O (pylog.security.acl), and the two ACL stores."""
from __future__ import annotations

import json
import threading

import pytest

from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.errors import InvalidArgument, StorageError
from pylog.security.acl import (CLUSTER_NAME, AclAuthorizer, AclBinding, AclBindingFilter, AclOperation,
                                AclPermissionType, PatternType, ResourceType, parse_super_users)
from pylog.security.aclstore import FileAclStore, MetadataAclStore

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
O = AclOperation
ALICE, BOB = "User:CN=alice,O=Team A", "User:CN=bob,O=Team B"


def acl(rtype, name, op, perm=ALLOW, principal=ALICE, host="*", pattern=LIT) -> AclBinding:
    return AclBinding.create(rtype, name, pattern, principal, host, op, perm)


def test_enum_codes_are_kafkas():
    assert (T, G, C, ResourceType.TRANSACTIONAL_ID) == (2, 3, 4, 5)
    assert (O.ALL, O.READ, O.WRITE, O.CREATE, O.DELETE, O.ALTER, O.DESCRIBE, O.CLUSTER_ACTION,
            O.DESCRIBE_CONFIGS, O.ALTER_CONFIGS, O.IDEMPOTENT_WRITE) == (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    assert (DENY, ALLOW) == (2, 3) and (PatternType.ANY, PatternType.MATCH, LIT, PRE) == (1, 2, 3, 4)
    assert O.parse("cluster_action") is O.CLUSTER_ACTION and O.parse("ClusterAction") is O.CLUSTER_ACTION
    assert O.CLUSTER_ACTION.title == "ClusterAction" and ResourceType.TRANSACTIONAL_ID.title == "TransactionalId"


def test_no_acl_means_denied_unless_allow_everyone():
    assert not AclAuthorizer().authorize(ALICE, "10.0.0.1", O.READ, T, "t")
    assert AclAuthorizer(allow_everyone_if_no_acl_found=True).authorize(ALICE, "10.0.0.1", O.READ, T, "t")
    # an ACL for someone else on the resource: no longer "no ACL found"
    a = AclAuthorizer(allow_everyone_if_no_acl_found=True, bindings=[acl(T, "t", O.READ, principal=BOB)])
    assert not a.authorize(ALICE, "10.0.0.1", O.READ, T, "t")
    assert a.authorize(ALICE, "10.0.0.1", O.READ, T, "other")


def test_literal_allow_matches_its_name_principal_and_operation_only():
    a = AclAuthorizer(bindings=[acl(T, "orders", O.READ)])
    assert a.authorize(ALICE, "1.2.3.4", O.READ, T, "orders")
    assert not a.authorize(ALICE, "1.2.3.4", O.WRITE, T, "orders")
    assert not a.authorize(BOB, "1.2.3.4", O.READ, T, "orders")
    assert not a.authorize(ALICE, "1.2.3.4", O.READ, T, "orders2")
    assert not a.authorize(ALICE, "1.2.3.4", O.READ, G, "orders")


def test_implied_operations():
    for op in (O.READ, O.WRITE, O.DELETE, O.ALTER):
        assert AclAuthorizer(bindings=[acl(T, "t", op)]).authorize(ALICE, "h", O.DESCRIBE, T, "t"), op
    assert not AclAuthorizer(bindings=[acl(T, "t", O.CREATE)]).authorize(ALICE, "h", O.DESCRIBE, T, "t")
    a = AclAuthorizer(bindings=[acl(T, "t", O.ALTER_CONFIGS)])
    assert a.authorize(ALICE, "h", O.DESCRIBE_CONFIGS, T, "t")
    assert not a.authorize(ALICE, "h", O.ALTER, T, "t")
    # Write does not imply Read, All implies everything
    assert not AclAuthorizer(bindings=[acl(T, "t", O.WRITE)]).authorize(ALICE, "h", O.READ, T, "t")
    assert AclAuthorizer(bindings=[acl(T, "t", O.ALL)]).authorize(ALICE, "h", O.DELETE, T, "t")


def test_deny_wins_over_allow_and_all():
    a = AclAuthorizer(bindings=[acl(T, "*", O.ALL), acl(T, "secret", O.READ, DENY)])
    assert a.authorize(ALICE, "h", O.READ, T, "public")
    assert not a.authorize(ALICE, "h", O.READ, T, "secret")
    assert a.authorize(ALICE, "h", O.WRITE, T, "secret")  # the DENY names Read only
    # a DENY of All denies every operation; a DENY to User:* denies everyone
    a = AclAuthorizer(bindings=[acl(T, "t", O.READ), acl(T, "t", O.ALL, DENY, principal="User:*")])
    assert not a.authorize(ALICE, "h", O.READ, T, "t")
    # a DENY of Read does not deny Describe that Write implies
    a = AclAuthorizer(bindings=[acl(T, "t", O.WRITE), acl(T, "t", O.READ, DENY)])
    assert a.authorize(ALICE, "h", O.DESCRIBE, T, "t")


def test_prefixed_and_wildcard_patterns():
    a = AclAuthorizer(bindings=[acl(T, "team-a.", O.READ, pattern=PRE), acl(G, "*", O.READ, principal="User:*")])
    assert a.authorize(ALICE, "h", O.READ, T, "team-a.orders")
    assert a.authorize(ALICE, "h", O.READ, T, "team-a.")
    assert not a.authorize(ALICE, "h", O.READ, T, "team-b.orders")
    assert not a.authorize(ALICE, "h", O.READ, T, "team-a")
    assert a.authorize(BOB, "h", O.READ, G, "any-group") and a.authorize(ALICE, "h", O.READ, G, "g")
    # a prefixed DENY inside a wildcard ALLOW
    a = AclAuthorizer(bindings=[acl(T, "*", O.READ), acl(T, "private.", O.READ, DENY, pattern=PRE)])
    assert a.authorize(ALICE, "h", O.READ, T, "x") and not a.authorize(ALICE, "h", O.READ, T, "private.x")


def test_host_matching():
    a = AclAuthorizer(bindings=[acl(T, "t", O.READ, host="127.0.0.1"), acl(T, "t", O.WRITE, DENY, host="10.0.0.9")])
    assert a.authorize(ALICE, "127.0.0.1", O.READ, T, "t")
    assert not a.authorize(ALICE, "127.0.0.2", O.READ, T, "t")
    b = AclAuthorizer(bindings=[acl(T, "t", O.WRITE), acl(T, "t", O.WRITE, DENY, host="10.0.0.9")])
    assert b.authorize(ALICE, "10.0.0.8", O.WRITE, T, "t") and not b.authorize(ALICE, "10.0.0.9", O.WRITE, T, "t")


def test_super_users_may_do_everything():
    supers = parse_super_users("User:admin; User:CN=broker,O=x")
    assert supers == {"User:admin", "User:CN=broker,O=x"}
    a = AclAuthorizer(super_users=supers, bindings=[acl(T, "t", O.ALL, DENY, principal="User:*")])
    assert a.authorize("User:admin", "h", O.READ, T, "t")
    assert a.authorize("User:CN=broker,O=x", "h", O.CLUSTER_ACTION, C, CLUSTER_NAME)
    assert not a.authorize(ALICE, "h", O.READ, T, "t")


def test_authorize_any_for_idempotent_producers():
    assert not AclAuthorizer().authorize_any(ALICE, "h", O.WRITE, T)
    assert AclAuthorizer(bindings=[acl(T, "a.", O.WRITE, pattern=PRE)]).authorize_any(ALICE, "h", O.WRITE, T)
    assert not AclAuthorizer(bindings=[acl(T, "t", O.READ)]).authorize_any(ALICE, "h", O.WRITE, T)
    assert not AclAuthorizer(bindings=[acl(T, "t", O.WRITE), acl(T, "*", O.WRITE, DENY)]).authorize_any(
        ALICE, "h", O.WRITE, T)
    assert AclAuthorizer(bindings=[acl(T, "*", O.WRITE)]).authorize_any(ALICE, "h", O.WRITE, T)


def test_load_replaces_the_acls_and_the_cached_decisions():
    a = AclAuthorizer(bindings=[acl(T, "t", O.READ)])
    assert a.authorize(ALICE, "h", O.READ, T, "t")
    a.load([acl(T, "t", O.READ, DENY)])
    assert not a.authorize(ALICE, "h", O.READ, T, "t")


@pytest.mark.parametrize("args", [
    (T, "t", LIT, ALICE, "*", O.CLUSTER_ACTION, ALLOW),  # not a topic operation
    (G, "g", LIT, ALICE, "*", O.WRITE, ALLOW),
    (C, "other", LIT, ALICE, "*", O.ALTER, ALLOW),  # the cluster is kafka-cluster
    (T, "t", PatternType.MATCH, ALICE, "*", O.READ, ALLOW),
    (T, "t", LIT, "alice", "*", O.READ, ALLOW),  # no principal type
    (T, "t", LIT, ALICE, "not-an-ip", O.READ, ALLOW),
    (T, "t", LIT, ALICE, "*", O.ANY, ALLOW),
    (T, "t", LIT, ALICE, "*", O.READ, AclPermissionType.ANY),
    (T, "", LIT, ALICE, "*", O.READ, ALLOW),
    (T, "*", PRE, ALICE, "*", O.READ, ALLOW),
    (ResourceType.USER, "u", LIT, ALICE, "*", O.ALL, ALLOW),
    (99, "t", LIT, ALICE, "*", O.READ, ALLOW),
])
def test_invalid_bindings_are_refused(args):
    with pytest.raises(InvalidArgument):
        AclBinding.create(*args)


def test_filters():
    bs = [acl(T, "team-a.", O.READ, pattern=PRE), acl(T, "*", O.DESCRIBE), acl(T, "team-a.x", O.WRITE),
          acl(G, "g", O.READ, principal=BOB)]
    a = AclAuthorizer(bindings=bs)
    assert a.acls(AclBindingFilter()) == sorted(bs)
    assert a.acls(AclBindingFilter(resource_type=G)) == [bs[3]]
    assert set(a.acls(AclBindingFilter(resource_type=T, name="team-a.x", pattern_type=PatternType.MATCH))) == \
        set(bs[:3])
    assert a.acls(AclBindingFilter(resource_type=T, name="team-a.x")) == [bs[2]]
    assert a.acls(AclBindingFilter(principal=BOB)) == [bs[3]]
    assert a.acls(AclBindingFilter(operation=O.READ, pattern_type=PRE)) == [bs[0]]


def test_file_store_roundtrip_atomic_and_change_detection(tmp_path):
    s = FileAclStore(tmp_path)
    assert s.load() == [] and not s.changed()
    bs = [acl(T, "t", O.READ), acl(G, "g/with/slash", O.READ, principal=BOB)]
    s.add(bs)
    s.add(bs[:1])  # no duplicate
    assert s.changed()
    assert sorted(s.load()) == sorted(bs) and not s.changed()
    doc = json.loads((tmp_path / "acls.json").read_text())
    assert doc["version"] == 1 and len(doc["acls"]) == 2 and not (tmp_path / "acls.json.tmp").exists()
    other = FileAclStore(tmp_path)  # another process (pylog acls --data-dir)
    removed = other.remove([AclBindingFilter(resource_type=G)])
    assert removed == [[bs[1]]]
    assert s.changed() and s.load() == [bs[0]]
    (tmp_path / "acls.json").write_text("{not json")
    with pytest.raises(StorageError):
        s.load()


def test_metadata_store_layout_concurrent_writers_and_watch():
    ms = InMemoryMetadataStore()
    one, two = MetadataAclStore(ms), MetadataAclStore(ms)
    one.load(), two.load()
    one.changed(), two.changed()
    bs = [acl(T, "orders", O.READ), acl(T, "orders", O.WRITE, principal=BOB), acl(T, "team-a.", O.READ, pattern=PRE),
          acl(G, "*", O.READ), acl(C, CLUSTER_NAME, O.ALTER)]
    threads = [threading.Thread(target=one.add, args=([b],)) for b in bs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert two.changed()  # the other broker sees the change through its watch
    assert sorted(two.load()) == sorted(bs)
    data, _ = ms.get("/kafka-acl/Topic/orders")
    assert data["version"] == 1 and {e["operation"] for e in data["acls"]} == {"Read", "Write"}
    assert ms.exists("/kafka-acl-extended/prefixed/Topic/team-a.") and ms.exists("/kafka-acl/Group/%2A")
    assert ms.exists("/kafka-acl/Cluster/kafka-cluster")
    removed = two.remove([AclBindingFilter(resource_type=T, name="orders")])
    assert sorted(removed[0]) == sorted(bs[:2]) and not ms.exists("/kafka-acl/Topic/orders")
    assert one.changed() and sorted(one.load()) == sorted(bs[2:])


# ---------------------------------------------------------------------- settings
def test_server_settings():
    from pylog.errors import InvalidConfig
    from pylog.server.config import ServerConfig

    c = ServerConfig.from_settings({})
    assert c.authorizer_class_name == "" and c.super_users == frozenset() and not c.allow_everyone_if_no_acl_found
    c = ServerConfig.from_settings({"authorizer.class.name": "pylog.security.AclAuthorizer",
                                    "super.users": "User:admin;User:CN=b,O=x", "allow.everyone.if.no.acl.found": "true"})
    assert c.authorizer_class_name == "pylog.security.AclAuthorizer"
    assert c.super_users == {"User:admin", "User:CN=b,O=x"} and c.allow_everyone_if_no_acl_found
    for bad in ({"authorizer.class.name": "com.example.Other"}, {"super.users": "admin"},
                {"allow.everyone.if.no.acl.found": "maybe"}):
        with pytest.raises(InvalidConfig):
            ServerConfig.from_settings(bad)
    import pylog.security

    assert pylog.security.AclAuthorizer is AclAuthorizer  # what authorizer.class.name names


# ---------------------------------------------------------------------- fuzz
from hypothesis import given, settings, strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
                     max_leaves=20)
_entry = st.fixed_dictionaries({"resourceType": st.sampled_from(["Topic", "Group", "Cluster", "x", ""]),
                                "name": st.text(max_size=6), "patternType": st.sampled_from(["LITERAL", "PREFIXED", "?"]),
                                "principal": st.sampled_from(["User:a", "User:*", "bad", ""]),
                                "host": st.sampled_from(["*", "127.0.0.1", "::1", "nope"]),
                                "operation": st.sampled_from(["Read", "All", "ClusterAction", "Bogus"]),
                                "permissionType": st.sampled_from(["Allow", "Deny", "Any"])})


@settings(max_examples=300, deadline=None)
@given(doc=_json | st.fixed_dictionaries({"version": st.just(1), "acls": st.lists(_entry | _json, max_size=4)}),
       raw=st.binary(max_size=64))
def test_fuzz_acl_file_is_loaded_or_refused_with_storage_error(tmp_path_factory, doc, raw):
    d = tmp_path_factory.mktemp("fuzz")
    s = FileAclStore(d)
    for text in (json.dumps(doc).encode(), raw):
        (d / "acls.json").write_bytes(text)
        try:
            out = s.load()
        except StorageError:
            continue
        assert all(isinstance(b, AclBinding) for b in out)


@settings(max_examples=300, deadline=None)
@given(data=_json | st.fixed_dictionaries({"version": st.just(1), "acls": st.lists(_entry | _json, max_size=4)}))
def test_fuzz_acl_node_data_never_breaks_loading(data):
    ms = InMemoryMetadataStore()
    s = MetadataAclStore(ms)
    ms.create("/kafka-acl/Topic", None)
    ms.create("/kafka-acl/Topic/t", data)
    ms.create("/kafka-acl/Bogus", None)
    ms.create("/kafka-acl/Topic/u", {"version": 1, "acls": 5})
    out = s.load()  # entries that do not parse are skipped, never an exception
    assert all(b.resource_type == T and b.name == "t" for b in out)
