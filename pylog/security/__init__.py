"""Security without I/O: who a connection is and what it may do.

- SASL mechanisms (PLAIN, SCRAM-SHA-256/512) as state machines over the tokens of
  SaslAuthenticate; the server layer carries the tokens.
- Credentials (SCRAM: salted, iterated; never the password) and ACLs, kept in a metadata
  store (a cluster's ZooKeeper) or in a single broker's data directory.
- The ACL authorizer (``authorizer.class.name=pylog.security.AclAuthorizer``).

This layer sits below :mod:`pylog.server` (which asks it) and above :mod:`pylog.client`;
it uses the lower layers only through their interfaces.
"""
from __future__ import annotations

from pylog.security.acl import AclAuthorizer

__all__: list = ["AclAuthorizer"]
