"""SASL mechanisms a broker offers: PLAIN (RFC 4616) and SCRAM (:mod:`.scram`).

Each mechanism is a sans-I/O state machine: ``step(client_token) -> server_token``,
raising :class:`~pylog.errors.SaslAuthenticationFailed` when the client fails (the
exchange is over then); ``complete`` says when it succeeded and ``user`` who the client
is.  Credentials come from a ``lookup(user)`` callable (a :mod:`.credentials` store's
``get``); PLAIN checks the password against the same salted SCRAM credentials (it derives
the salted password with the stored salt and iterations of the user's first SCRAM
mechanism and compares), so one ``pylog users add`` serves both.

:func:`parse_mechanisms` reads ``sasl.enabled.mechanisms``.  Kafka's default there is
GSSAPI (Kerberos), which pylog does not support; pylog's default is
``PLAIN,SCRAM-SHA-256,SCRAM-SHA-512``, and naming GSSAPI, OAUTHBEARER or any other
mechanism is refused with InvalidConfig.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from pylog.errors import IllegalSaslState, InvalidConfig, SaslAuthenticationFailed, UnsupportedSaslMechanism
from pylog.security.scram import (AUTH_FAILED_MESSAGE, MAX_TOKEN_BYTES, SCRAM_MECHANISMS, Lookup, ScramServer)

__all__ = ["PlainServer", "SUPPORTED_MECHANISMS", "DEFAULT_MECHANISMS", "parse_mechanisms", "new_server",
           "MAX_TOKEN_BYTES", "jaas_credentials"]

SUPPORTED_MECHANISMS: Tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_MECHANISMS = ",".join(SUPPORTED_MECHANISMS)
_WHY_NOT = {
    "GSSAPI": "Kerberos needs a KDC and a keytab, which pylog does not integrate",
    "OAUTHBEARER": "pylog has no token validation (JWKS, issuers) to check OAuth bearer tokens with",
}


def parse_mechanisms(value: Any, key: str = "sasl.enabled.mechanisms") -> Tuple[str, ...]:
    """``PLAIN,SCRAM-SHA-512`` as a tuple (upper case, in order, no duplicates);
    InvalidConfig naming ``key`` and an unsupported mechanism, or for an empty list."""
    out = []
    for item in str(value if value is not None else "").split(","):
        name = item.strip().upper()
        if not name:
            continue
        if name not in SUPPORTED_MECHANISMS:
            why = _WHY_NOT.get(name, "unknown to pylog")
            raise InvalidConfig(f"{key}: SASL mechanism {name} is not supported ({why}); pylog supports "
                                f"{', '.join(SUPPORTED_MECHANISMS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise InvalidConfig(f"{key} is empty: name at least one of {', '.join(SUPPORTED_MECHANISMS)}")
    return tuple(out)


class PlainServer:
    """RFC 4616: one token ``authzid NUL authcid NUL passwd``; the authzid is empty or
    the authcid (Kafka does not let a user act as another)."""

    mechanism = "PLAIN"

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._done = False
        self.user: Optional[str] = None
        self.complete = False

    def step(self, token: bytes) -> bytes:
        if self._done:
            raise IllegalSaslState("PLAIN exchange is over")
        self._done = True
        if len(token) > MAX_TOKEN_BYTES:
            raise SaslAuthenticationFailed(f"SASL token of {len(token)} bytes (at most {MAX_TOKEN_BYTES})")
        parts = bytes(token).split(b"\x00")
        if len(parts) != 3:
            raise SaslAuthenticationFailed("malformed PLAIN token (authzid NUL authcid NUL passwd expected)")
        try:
            authzid, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            raise SaslAuthenticationFailed("malformed PLAIN token (not UTF-8)") from None
        if not user or not password:
            raise SaslAuthenticationFailed("malformed PLAIN token (empty user name or password)")
        self.user = user
        if authzid and authzid != user:
            raise SaslAuthenticationFailed("PLAIN authorization id must be empty or the user name")
        creds = self._lookup(user) or {}
        for mech in SCRAM_MECHANISMS:  # one derivation: the first stored mechanism decides
            cred = creds.get(mech)
            if cred is not None:
                if cred.matches_password(password):
                    self.complete = True
                    return b""
                break
        raise SaslAuthenticationFailed(AUTH_FAILED_MESSAGE)


def new_server(mechanism: str, lookup: Lookup) -> Any:
    """The server side of ``mechanism`` (UnsupportedSaslMechanism if pylog has none)."""
    if mechanism == "PLAIN":
        return PlainServer(lookup)
    if mechanism in SCRAM_MECHANISMS:
        return ScramServer(mechanism, lookup)
    raise UnsupportedSaslMechanism(f"SASL mechanism {mechanism!r} is not supported")


_JAAS_OPTION = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def jaas_credentials(text: str) -> Tuple[Optional[str], Optional[str]]:
    """``(username, password)`` from a Kafka ``sasl.jaas.config`` line (``<LoginModule>
    required username="..." password="...";``, backslash escapes undone); None for
    either when it is missing."""
    options = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _JAAS_OPTION.findall(str(text))}
    return options.get("username"), options.get("password")
