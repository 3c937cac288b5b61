"""Security: who a connection is and what it may do.

- SASL mechanisms (PLAIN, SCRAM-SHA-256/512) as state machines over the tokens of
  SaslAuthenticate, the server's side and the client's; the server layer and pylog's
  network connections (:mod:`pylog.client.network`) carry the tokens.
- Credentials (SCRAM: salted, iterated; never the password) and ACLs, kept in a metadata
  store (a cluster's ZooKeeper) or in a single broker's data directory.
- The ACL authorizer (``authorizer.class.name=pylog.security.AclAuthorizer``).

This layer sits below :mod:`pylog.client` (whose connections log in with its SCRAM
client) and :mod:`pylog.server` (which asks it); it imports only :mod:`pylog.errors` and
pylog.storage's atomic file writes, and reaches a metadata store only through the object
it is given.
"""
from __future__ import annotations

from pylog.security.acl import AclAuthorizer

__all__: list = ["AclAuthorizer"]
