"""SCRAM (RFC 5802, RFC 7677) as Kafka speaks it: SCRAM-SHA-256 and SCRAM-SHA-512.

Sans-I/O state machines over the tokens SaslAuthenticate carries:

* :class:`ScramServer` takes the client's tokens and returns the server's, or raises
  :class:`~pylog.errors.SaslAuthenticationFailed`.  Its credentials come from a
  ``lookup(user)`` callable given to it (it reads no store itself).
* :class:`ScramClient` is the other side (pylog's CLI and the tests).

Messages (Kafka's profile: no channel binding, so the GS2 header is ``n,,`` or
``n,a=<authzid>,`` with the authzid equal to the user; extensions such as
``tokenauth=true`` are refused since pylog has no delegation tokens)::

    client-first  n,,n=<user>,r=<client nonce>
    server-first  r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final  c=biws,r=<nonce>,p=<base64 ClientProof>
    server-final  v=<base64 ServerSignature>

Keys: SaltedPassword = PBKDF2-HMAC(password, salt, iterations);
ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
ServerKey = HMAC(SaltedPassword, "Server Key").  A broker keeps only salt, iterations,
StoredKey and ServerKey (:class:`ScramCredential`), never the password; it checks a
proof by recovering ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage) and
comparing H(ClientKey) to StoredKey with :func:`hmac.compare_digest`.

Passwords are UTF-8 without SASLprep, as Kafka and its clients do.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

from pylog.errors import IllegalSaslState, SaslAuthenticationFailed, UnacceptableCredential

__all__ = ["ScramCredential", "ScramServer", "ScramClient", "SCRAM_MECHANISMS", "MIN_ITERATIONS",
           "MAX_ITERATIONS", "DEFAULT_ITERATIONS", "MAX_TOKEN_BYTES", "AUTH_FAILED_MESSAGE", "new_credential",
           "credential_from_salted_password", "salted_password", "mechanism_type", "mechanism_of_type",
           "check_iterations"]

#: mechanism -> hashlib name.
SCRAM_MECHANISMS: Dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: Kafka's ScramMechanism type ids (DescribeUserScramCredentials / AlterUserScramCredentials).
_TYPES: Dict[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
#: RFC 7677 asks for at least 4096; Kafka refuses fewer, and more than 16384.
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096
#: Largest SASL token pylog reads (a SCRAM or PLAIN token is a few hundred bytes).
MAX_TOKEN_BYTES = 8192
#: What a failed authentication says, whatever failed (a wrong password and an unknown
#: user read the same, as in Kafka).
AUTH_FAILED_MESSAGE = "Authentication failed: Invalid username or password"
_NONCE_BYTES = 24
_SALT_BYTES = 32


def mechanism_type(mechanism: str) -> int:
    """Kafka's int8 id of a SCRAM mechanism (UnacceptableCredential if not SCRAM)."""
    try:
        return _TYPES[mechanism]
    except KeyError:
        raise UnacceptableCredential(f"{mechanism!r} is not a SCRAM mechanism "
                                     f"({', '.join(SCRAM_MECHANISMS)})") from None


def mechanism_of_type(type_id: int) -> str:
    for name, t in _TYPES.items():
        if t == type_id:
            return name
    raise UnacceptableCredential(f"unknown SCRAM mechanism type {type_id}")


def _hash_name(mechanism: str) -> str:
    try:
        return SCRAM_MECHANISMS[mechanism]
    except KeyError:
        raise UnacceptableCredential(f"{mechanism!r} is not a SCRAM mechanism "
                                     f"({', '.join(SCRAM_MECHANISMS)})") from None


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def check_iterations(iterations: int) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise UnacceptableCredential(f"SCRAM iterations must be in [{MIN_ITERATIONS}, {MAX_ITERATIONS}], "
                                     f"got {iterations!r}")
    return iterations


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(password, salt, iterations): PBKDF2-HMAC of the mechanism's hash."""
    return hashlib.pbkdf2_hmac(_hash_name(mechanism), password.encode("utf-8"), salt, iterations)


@dataclass(frozen=True)
class ScramCredential:
    """What a broker keeps of one user's password for one SCRAM mechanism."""

    mechanism: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def to_text(self) -> str:
        """Kafka's form in ``/config/users/<name>``: ``salt=..,stored_key=..,server_key=..,iterations=N``."""
        b = base64.b64encode
        return (f"salt={b(self.salt).decode()},stored_key={b(self.stored_key).decode()},"
                f"server_key={b(self.server_key).decode()},iterations={self.iterations}")

    @classmethod
    def from_text(cls, mechanism: str, text: str) -> "ScramCredential":
        """Parse :meth:`to_text`; UnacceptableCredential if it does not parse."""
        fields: Dict[str, str] = {}
        for part in str(text).split(","):
            k, sep, v = part.partition("=")
            if sep:
                fields[k.strip()] = v.strip()
        try:
            dec = base64.b64decode
            cred = cls(mechanism, dec(fields["salt"], validate=True), dec(fields["stored_key"], validate=True),
                       dec(fields["server_key"], validate=True), int(fields["iterations"]))
        except (KeyError, ValueError, binascii.Error):
            raise UnacceptableCredential(f"malformed {mechanism} credential") from None
        _hash_name(mechanism)
        return cred

    def matches_password(self, password: str) -> bool:
        """Whether ``password`` derives this credential (PLAIN checks passwords this way)."""
        sp = salted_password(self.mechanism, password, self.salt, self.iterations)
        h = _hash_name(self.mechanism)
        client_key = _hmac(h, sp, b"Client Key")
        return hmac.compare_digest(hashlib.new(h, client_key).digest(), self.stored_key)


def credential_from_salted_password(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    """The stored credential from a salted password (what AlterUserScramCredentials carries)."""
    h = _hash_name(mechanism)
    check_iterations(iterations)
    if not salt:
        raise UnacceptableCredential("a SCRAM credential needs a non-empty salt")
    if len(salted) != hashlib.new(h).digest_size:
        raise UnacceptableCredential(f"a {mechanism} salted password is {hashlib.new(h).digest_size} bytes, "
                                     f"got {len(salted)}")
    client_key = _hmac(h, salted, b"Client Key")
    return ScramCredential(mechanism, bytes(salt), hashlib.new(h, client_key).digest(),
                           _hmac(h, salted, b"Server Key"), iterations)


def new_credential(mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS,
                   salt: Optional[bytes] = None) -> ScramCredential:
    """A credential for ``password`` with a fresh random salt."""
    check_iterations(iterations)
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    return credential_from_salted_password(mechanism, salted_password(mechanism, password, salt, iterations),
                                           salt, iterations)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _nonce() -> str:
    # printable ASCII without ',': base64 of random bytes
    return base64.b64encode(os.urandom(_NONCE_BYTES)).decode("ascii")


def _decode_name(value: str) -> str:
    """saslname: ``=2C`` is ',' and ``=3D`` is '='; any other '=' is malformed."""
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            esc = value[i:i + 3]
            if esc == "=2C":
                out.append(",")
            elif esc == "=3D":
                out.append("=")
            else:
                raise SaslAuthenticationFailed("malformed SCRAM user name")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _encode_name(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _attributes(message: str) -> list:
    """``k=v,k=v`` as [(k, v)]; SaslAuthenticationFailed when an item is not ``k=v``."""
    out = []
    for item in message.split(","):
        if len(item) < 2 or item[1] != "=" or not item[0].isalpha():
            raise SaslAuthenticationFailed("malformed SCRAM message")
        out.append((item[0], item[2:]))
    return out


def _token_text(token: bytes) -> str:
    if len(token) > MAX_TOKEN_BYTES:
        raise SaslAuthenticationFailed(f"SASL token of {len(token)} bytes (at most {MAX_TOKEN_BYTES})")
    try:
        return bytes(token).decode("utf-8")
    except UnicodeDecodeError:
        raise SaslAuthenticationFailed("SCRAM message is not UTF-8") from None


Lookup = Callable[[str], Optional[Mapping[str, ScramCredential]]]


class ScramServer:
    """The broker's side of one SCRAM exchange (see the module docstring).

    ``lookup(user)`` returns the user's credentials by mechanism (None or no entry for
    this mechanism: an unknown user).  ``nonce`` fixes the server nonce (tests)."""

    def __init__(self, mechanism: str, lookup: Lookup, *, nonce: Optional[str] = None) -> None:
        self.mechanism = mechanism
        self.hash_name = _hash_name(mechanism)
        self._lookup = lookup
        self._server_nonce = nonce if nonce is not None else _nonce()
        self._state = "first"
        self._cred: Optional[ScramCredential] = None
        self._nonce = ""
        self._auth_prefix = ""  # client-first-bare "," server-first
        self._gs2 = ""
        #: The authenticated user (None until :attr:`complete`), or the claimed one once
        #: the first message parsed (for the log line of a failure).
        self.user: Optional[str] = None
        self.complete = False

    def step(self, token: bytes) -> bytes:
        """The server's answer to the client's next token; SaslAuthenticationFailed on
        any failure (the exchange is over then), IllegalSaslState after the end."""
        if self._state == "first":
            return self._first(_token_text(token))
        if self._state == "final":
            return self._final(_token_text(token))
        raise IllegalSaslState(f"{self.mechanism} exchange is over")

    def _fail(self) -> SaslAuthenticationFailed:
        self._state = "failed"
        return SaslAuthenticationFailed(AUTH_FAILED_MESSAGE)

    def _first(self, msg: str) -> bytes:
        self._state = "failed"  # until this step succeeds
        gs2_flag, sep, rest = msg.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2:
            raise SaslAuthenticationFailed("malformed SCRAM client-first message")
        if gs2_flag != "n":
            raise SaslAuthenticationFailed("SCRAM channel binding is not supported (GS2 header must be 'n,,')")
        if authzid and not authzid.startswith("a="):
            raise SaslAuthenticationFailed("malformed SCRAM authorization id")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise SaslAuthenticationFailed("malformed SCRAM client-first message (n=, r= expected)")
        if len(attrs) > 2:
            raise SaslAuthenticationFailed("SCRAM extensions are not supported")
        user = _decode_name(attrs[0][1])
        cnonce = attrs[1][1]
        if not user or not cnonce or any(not 0x21 <= ord(c) <= 0x7E or c == "," for c in cnonce):
            raise SaslAuthenticationFailed("malformed SCRAM client-first message (empty name or bad nonce)")
        self.user = user
        if authzid and _decode_name(authzid[2:]) != user:
            raise SaslAuthenticationFailed("SCRAM authorization id must be the user name")
        creds = self._lookup(user)
        cred = creds.get(self.mechanism) if creds else None
        if cred is None:
            raise self._fail()
        self._cred = cred
        self._nonce = cnonce + self._server_nonce
        server_first = f"r={self._nonce},s={_b64(cred.salt)},i={cred.iterations}"
        self._auth_prefix = bare + "," + server_first
        self._gs2 = gs2_flag + "," + authzid + ","
        self._state = "final"
        return server_first.encode("ascii")

    def _final(self, msg: str) -> bytes:
        self._state = "failed"
        assert self._cred is not None
        attrs = _attributes(msg)
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise SaslAuthenticationFailed("malformed SCRAM client-final message")
        try:
            binding = base64.b64decode(attrs[0][1], validate=True)
            proof = base64.b64decode(attrs[-1][1], validate=True)
        except (binascii.Error, ValueError):
            raise SaslAuthenticationFailed("malformed SCRAM client-final message (base64)") from None
        if binding != self._gs2.encode("utf-8"):
            raise SaslAuthenticationFailed("SCRAM channel binding does not match the GS2 header")
        if attrs[1][1] != self._nonce:
            raise SaslAuthenticationFailed("SCRAM nonce does not match")
        without_proof = msg[:msg.rindex(",p=")]
        auth_message = (self._auth_prefix + "," + without_proof).encode("utf-8")
        h = self.hash_name
        signature = _hmac(h, self._cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise self._fail()
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(hashlib.new(h, client_key).digest(), self._cred.stored_key):
            raise self._fail()
        self._state = "done"
        self.complete = True
        return ("v=" + _b64(_hmac(h, self._cred.server_key, auth_message))).encode("ascii")


class ScramClient:
    """The client's side of one SCRAM exchange: :meth:`first`, then :meth:`final` with
    the server-first message, then :meth:`verify` the server-final one."""

    def __init__(self, mechanism: str, user: str, password: str, *, nonce: Optional[str] = None) -> None:
        self.mechanism = mechanism
        self.hash_name = _hash_name(mechanism)
        self.user = user
        self.password = password
        self._nonce = nonce if nonce is not None else _nonce()
        self._bare = f"n={_encode_name(user)},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self._bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        msg = _token_text(server_first)
        attrs = dict(_attributes(msg))
        nonce, salt_b64, iters = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslAuthenticationFailed("the server's SCRAM nonce does not extend ours")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
            iterations = int(iters)
        except (binascii.Error, ValueError):
            raise SaslAuthenticationFailed("malformed SCRAM server-first message") from None
        if iterations < MIN_ITERATIONS:
            raise SaslAuthenticationFailed(f"the server asks for {iterations} SCRAM iterations (< {MIN_ITERATIONS})")
        h = self.hash_name
        sp = hashlib.pbkdf2_hmac(h, self.password.encode("utf-8"), salt, iterations)
        client_key = _hmac(h, sp, b"Client Key")
        stored_key = hashlib.new(h, client_key).digest()
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = f"{self._bare},{msg},{without_proof}".encode("utf-8")
        proof = _xor(client_key, _hmac(h, stored_key, auth_message))
        self._server_signature = _hmac(h, _hmac(h, sp, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        msg = _token_text(server_final)
        if not msg.startswith("v="):
            raise SaslAuthenticationFailed(f"SCRAM server-final message: {msg[:100]!r}")
        try:
            sig = base64.b64decode(msg[2:], validate=True)
        except (binascii.Error, ValueError):
            raise SaslAuthenticationFailed("malformed SCRAM server-final message") from None
        if not hmac.compare_digest(sig, self._server_signature):
            raise SaslAuthenticationFailed("the server's SCRAM signature does not verify")

