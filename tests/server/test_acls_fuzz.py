"""The request fuzz target (fuzz/fuzz_request.py) with ACL enforcement on: seeded
mutations of a valid request of every API version must be answered (allowed or refused)
or close the connection, never an internal error — once with every request allowed
(the principal a super user: the handlers run), once with every request refused (no
ACL), and once with some ACLs, so CreateAcls/DeleteAcls with mutated bindings and
filters reach the ACL file."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from pylog.security.acl import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType
from pylog.security.aclstore import FileAclStore
from tests.protocol.samples import sample_frames
from tests.protocol.test_codec import _mutations

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import fuzz_request  # noqa: E402

ON = {"authorizer.class.name": "pylog.security.AclAuthorizer"}


@pytest.mark.parametrize("mode", ["super user", "no acls", "some acls"])
def test_mutated_requests_with_acls_never_cause_internal_errors(tmp_path, mode):
    data = tmp_path / "data"
    extra = dict(ON)
    if mode == "super user":
        extra["super.users"] = "User:ANONYMOUS"
    if mode == "some acls":
        FileAclStore(data).add([
            AclBinding.create(ResourceType.TOPIC, "t", PatternType.LITERAL, "User:ANONYMOUS", "*", AclOperation.ALL,
                              AclPermissionType.ALLOW),
            AclBinding.create(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, "User:*", "127.0.0.1",
                              AclOperation.ALTER, AclPermissionType.ALLOW),
            AclBinding.create(ResourceType.GROUP, "g", PatternType.PREFIXED, "User:ANONYMOUS", "*", AclOperation.READ,
                              AclPermissionType.ALLOW)])
    h = fuzz_request.Harness(str(data), extra)
    try:
        assert h.server.authorizer.enabled
        rng = random.Random(["super user", "no acls", "some acls"].index(mode))
        n = 0
        for _, _, f in sample_frames():
            frame = bytes(f)
            fuzz_request.one_input(frame, h)
            for m in _mutations(rng, frame, 6):
                fuzz_request.one_input(m, h)
                n += 1
        assert n > 0
        FileAclStore(data).load()  # whatever CreateAcls/DeleteAcls wrote is a valid ACL file
    finally:
        h.close()
