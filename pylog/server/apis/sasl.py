"""SaslHandshake, SaslAuthenticate and the SCRAM credential APIs.

A connection on a SASL_PLAINTEXT or SASL_SSL listener authenticates first, as in Kafka:
until it did, only ApiVersions, SaslHandshake (v0, v1) and SaslAuthenticate (v0..v2)
are served; any other request closes the connection with a WARNING naming the client
(:meth:`SaslHandler.gate`).

* SaslHandshake names the mechanism (one of the listener's ``sasl.enabled.mechanisms``,
  else UNSUPPORTED_SASL_MECHANISM with the enabled list, and the connection closes).
  v1 wraps every token in a SaslAuthenticate request, which every current client
  does; after v0 the tokens come raw, each as a size-prefixed frame (answered the same
  way), as old clients send them.
* SaslAuthenticate hands the token to the mechanism (:mod:`pylog.security.sasl`) on a
  worker thread (credential lookups read the store: ZooKeeper or a file; PLAIN derives
  a key).  Success: the principal becomes ``User:<name>``.  Failure: after
  ``connection.failed.authentication.delay.ms`` the client gets
  SASL_AUTHENTICATION_FAILED with a message that does not say whether the user exists,
  the broker logs one WARNING line (client address, listener, mechanism, user; never a
  password) and counts it, and the connection closes.
* Re-authentication (KIP-368): with ``connections.max.reauth.ms`` > 0, SaslAuthenticate
  v1+ answers the session lifetime; the client re-authenticates (SaslHandshake +
  SaslAuthenticate on the same connection, as the same user) before it ends, else its
  next request closes the connection.
* DescribeUserScramCredentials / AlterUserScramCredentials read and change the
  credential store (:mod:`pylog.security.credentials`): a cluster's ``/config/users``
  in its metadata store, a single broker's file in its data directory.  The client
  sends the salted password (Kafka's AdminClient computes it), never the password.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from pylog.errors import (ClusterAuthorizationFailed, PylogError, ResourceNotFound, SaslAuthenticationFailed,
                          UnacceptableCredential, UnsupportedSaslMechanism)
from pylog.protocol.apis import ApiKey
from pylog.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from pylog.security.credentials import FileCredentialStore, MetadataCredentialStore, check_user_name
from pylog.security.sasl import new_server
from pylog.security.scram import (AUTH_FAILED_MESSAGE, credential_from_salted_password,
                                  mechanism_of_type, mechanism_type)
from pylog.server.connection import CloseConnection, Response

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.apis import KafkaApis, RequestContext
    from pylog.server.connection import KafkaConnection

__all__ = ["SaslHandler", "SaslState", "open_credential_store"]

log = logging.getLogger("pylog.server")

#: Requests a connection may send before it authenticated.
PRE_AUTH_APIS = frozenset({ApiKey.API_VERSIONS, ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE})
_NONE = 0
_UNSUPPORTED_SASL_MECHANISM = 33
_ILLEGAL_SASL_STATE = 34
_SASL_AUTHENTICATION_FAILED = 58
_RESOURCE_NOT_FOUND = 91
_DUPLICATE_RESOURCE = 92
_UNACCEPTABLE_CREDENTIAL = 93


def open_credential_store(config: Any, broker: Any) -> Any:
    """A cluster node's store under ``/config/users`` of its metadata store; a single
    broker's file in its data directory."""
    kernel = getattr(broker, "kernel", None)
    store = getattr(kernel, "store", None)
    if config.zookeeper_connect is not None and store is not None:
        return MetadataCredentialStore(store)
    return FileCredentialStore(config.data_dir)


class SaslState:
    """One connection's SASL exchange."""

    __slots__ = ("mechanism", "server", "raw", "user", "expires_at")

    def __init__(self) -> None:
        self.mechanism: Optional[str] = None
        self.server: Any = None  # the mechanism's state machine, once a handshake chose it
        self.raw = False  # SaslHandshake v0: tokens come as raw frames
        self.user: Optional[str] = None  # authenticated user
        self.expires_at: Optional[float] = None  # session end (time.monotonic()), KIP-368


class SaslHandler:
    """The SASL APIs of one server (see the module docstring)."""

    def __init__(self, apis: "KafkaApis") -> None:
        self.apis = apis
        self.config = apis.config
        self.metrics = apis.metrics
        self.credentials = open_credential_store(apis.config, apis.server.broker)

    # ------------------------------------------------------------------ gate
    def gate(self, conn: "KafkaConnection", frame: Any, start: float) -> Any:
        """Called for every request of a connection with ``sasl_check`` set, before it is
        decoded.  None: go on as usual.  Else the answer (a raw token of a v0 exchange).
        Raises CloseConnection for a request a connection may not send now."""
        st: Optional[SaslState] = conn.sasl
        if st is not None and st.raw and st.server is not None:
            return self._raw_token(conn, st, frame)
        api_key = int.from_bytes(bytes(frame[:2]), "big", signed=True) if len(frame) >= 2 else -1
        if api_key in PRE_AUTH_APIS:
            return None
        if st is None or st.user is None:
            self.apis.metrics.request_error("unauthenticated", "ILLEGAL_SASL_STATE")
            raise CloseConnection(f"request (api key {api_key}) before SASL authentication on a "
                                  f"{conn.listener.security_protocol} listener")
        if st.expires_at is not None and time.monotonic() >= st.expires_at:
            raise CloseConnection("SASL session expired (connections.max.reauth.ms) and the client did not "
                                  "re-authenticate")
        return None

    # ------------------------------------------------------------------ handshake
    def handshake(self, ctx: "RequestContext", req: Any) -> Dict[str, Any]:
        conn = ctx.conn
        enabled = list(self.config.sasl_mechanisms.get(conn.listener.name, ()))
        if not enabled:
            conn.close_after_write = True
            log.warning("SaslHandshake from %s on listener %s, which is not a SASL listener", ctx.client,
                        conn.listener)
            return ctx.respond({"error_code": _ILLEGAL_SASL_STATE, "mechanisms": []})
        st: Optional[SaslState] = conn.sasl
        if st is not None and st.server is not None and not (st.user is not None and st.server.complete):
            conn.close_after_write = True
            log.warning("second SaslHandshake from %s on listener %s during an exchange", ctx.client, conn.listener)
            return ctx.respond({"error_code": _ILLEGAL_SASL_STATE, "mechanisms": enabled})
        if st is not None and st.user is not None and self.config.connections_max_reauth_ms <= 0:
            conn.close_after_write = True
            log.warning("SaslHandshake from %s (%s) on an authenticated connection (re-authentication is off: "
                        "connections.max.reauth.ms=0)", ctx.client, conn.principal)
            return ctx.respond({"error_code": _ILLEGAL_SASL_STATE, "mechanisms": enabled})
        mechanism = req.mechanism
        if mechanism not in enabled:
            conn.close_after_write = True
            self.metrics.failed_authentication.labels(conn.listener.name, "unsupported").inc()
            log.warning("failed authentication from %s on listener %s: SASL mechanism %r is not enabled (%s)",
                        conn.peer, conn.listener, str(mechanism)[:64], ", ".join(enabled))
            return ctx.respond({"error_code": _UNSUPPORTED_SASL_MECHANISM, "mechanisms": enabled})
        if st is not None and st.user is not None and (mechanism != st.mechanism or ctx.version == 0):
            conn.close_after_write = True  # KIP-368: the same mechanism, with SaslAuthenticate
            log.warning("re-authentication from %s (%s) with %s v%d; it authenticated with %s", ctx.client,
                        conn.principal, str(mechanism)[:64], ctx.version, st.mechanism)
            return ctx.respond({"error_code": _ILLEGAL_SASL_STATE, "mechanisms": enabled})
        if st is None:
            st = conn.sasl = SaslState()
        st.mechanism = mechanism
        st.server = new_server(mechanism, self.credentials.get)
        st.raw = ctx.version == 0
        return ctx.respond({"error_code": _NONE, "mechanisms": enabled})

    # ------------------------------------------------------------------ authenticate
    def authenticate(self, ctx: "RequestContext", req: Any) -> Any:
        conn = ctx.conn
        st: Optional[SaslState] = conn.sasl
        if st is None or st.server is None or st.raw or st.server.complete:
            conn.close_after_write = True
            log.warning("SaslAuthenticate from %s on listener %s without a SaslHandshake v1 before it",
                        ctx.client, conn.listener)
            return ctx.respond({"error_code": _ILLEGAL_SASL_STATE,
                                "error_message": "SaslAuthenticate before SaslHandshake v1",
                                "auth_bytes": b"", "session_lifetime": 0})
        token = bytes(req.auth_bytes)
        out = self.apis.future()
        work = self.apis.in_thread(self._step, st, token)

        def done(fut: Any) -> None:
            answer, failure = fut.result()
            if failure is None:
                try:
                    reply = self._succeeded(conn, st)
                except CloseConnection as exc:
                    out.set_exception(exc)
                    return
                reply["auth_bytes"] = answer
                self.apis.resolve(out, ctx.respond(reply))
                return
            self._failed(conn, st, failure)
            reply = {"error_code": _SASL_AUTHENTICATION_FAILED, "error_message": failure, "auth_bytes": b"",
                     "session_lifetime": 0}
            self._after_delay(conn, out, ctx.respond(reply))

        work.add_done_callback(done)
        return out

    def _step(self, st: SaslState, token: bytes) -> Any:
        """On a worker thread: (server token, None) or (None, the client's message)."""
        try:
            return st.server.step(token), None
        except SaslAuthenticationFailed as exc:
            return None, str(exc) if str(exc) == AUTH_FAILED_MESSAGE else f"{AUTH_FAILED_MESSAGE}: {exc}"
        except PylogError as exc:  # IllegalSaslState, a store that is away (StorageError, timeouts)
            log.warning("SASL %s exchange could not go on: %s", st.mechanism, exc)
            return None, f"Authentication failed: {exc}"
        except Exception as exc:  # a bug: never a traceback to the client, but one in the log
            log.error("SASL %s step failed unexpectedly", st.mechanism, exc_info=exc)
            return None, "Authentication failed"

    def _succeeded(self, conn: "KafkaConnection", st: SaslState) -> Dict[str, Any]:
        """After a step: if the exchange is complete, the connection is authenticated."""
        reply: Dict[str, Any] = {"error_code": _NONE, "error_message": None, "session_lifetime": 0}
        if not st.server.complete:
            return reply
        user = st.server.user
        if st.user is not None and st.user != user:  # KIP-368: a re-authentication keeps the principal
            raise CloseConnection(f"re-authentication as User:{user} on a connection of User:{st.user}")
        first = st.user is None
        st.user = user
        conn.principal = f"User:{user}"
        self.metrics.successful_authentication.labels(conn.listener.name, st.mechanism).inc()
        reauth_ms = self.config.connections_max_reauth_ms
        if reauth_ms > 0:
            st.expires_at = time.monotonic() + reauth_ms / 1000.0
            reply["session_lifetime"] = reauth_ms
            conn.sasl_check = True
        else:
            conn.sasl_check = False  # nothing more to check on this connection
        if first:
            conn.max_frame = self.config.socket_request_max_bytes
            log.debug("%s authenticated as %s with %s on listener %s", conn.peer, conn.principal, st.mechanism,
                      conn.listener)
        return reply

    def _failed(self, conn: "KafkaConnection", st: SaslState, message: str) -> None:
        """One WARNING line and the counter (the answer and the close come later)."""
        self.metrics.failed_authentication.labels(conn.listener.name, st.mechanism or "unknown").inc()
        user = getattr(st.server, "user", None)
        log.warning("failed authentication from %s on listener %s with %s (user %r): %s", conn.peer,
                    conn.listener, st.mechanism, None if user is None else str(user)[:128], message)
        st.server = None

    def _after_delay(self, conn: "KafkaConnection", out: Any, reply: Any) -> None:
        """Answer ``reply`` after connection.failed.authentication.delay.ms, then close."""
        def answer() -> None:
            conn.close_after_write = True
            self.apis.resolve(out, reply)

        delay_s = self.config.failed_authentication_delay_ms / 1000.0
        if delay_s > 0:
            self.apis.loop.call_later(delay_s, answer)
        else:
            answer()

    def _raw_token(self, conn: "KafkaConnection", st: SaslState, frame: Any) -> Any:
        """SaslHandshake v0: the frame is a raw token; the answer is a raw token (an
        empty frame for PLAIN's success); a failure closes the connection (v0 has no
        error answer) after the delay."""
        out = self.apis.future()
        work = self.apis.in_thread(self._step, st, bytes(frame))

        def done(fut: Any) -> None:
            answer, failure = fut.result()
            if failure is None:
                try:
                    self._succeeded(conn, st)
                except CloseConnection as exc:
                    out.set_exception(exc)
                    return
                if st.server is not None and st.server.complete:
                    st.raw = False
                data = len(answer).to_bytes(4, "big") + answer
                self.apis.resolve(out, Response([data], len(data)))
                return
            self._failed(conn, st, failure)

            def close() -> None:
                if not out.done():
                    conn.close_after_write = True
                    out.set_result(None)

            delay_s = self.config.failed_authentication_delay_ms / 1000.0
            self.apis.loop.call_later(delay_s, close)

        work.add_done_callback(done)
        return out

    # ------------------------------------------------------------------ credentials
    def describe_user_scram_credentials(self, ctx: "RequestContext", req: Any) -> Dict[str, Any]:
        """On a worker thread (it reads the store)."""
        try:
            return self._describe(ctx, req)
        except PylogError as exc:  # the store is away (ZooKeeper), an unreadable file
            log.warning("reading the SCRAM credentials failed: %s", exc)
            return ctx.respond({"throttle_time": 0, "error_code": exc.code if exc.code > 0 else -1,
                                "error_message": f"{type(exc).__name__}: {exc}", "results": []})

    def _describe(self, ctx: "RequestContext", req: Any) -> Dict[str, Any]:
        if not ctx.allowed(AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):  # Kafka's rule
            return ctx.respond({"throttle_time": 0, "error_code": ClusterAuthorizationFailed.code,
                                "error_message": "not authorized to Describe the cluster", "results": []})
        if req.users is None or len(req.users) == 0:
            everyone = self.credentials.users()
            results = [self._described(u, c) for u, c in everyone.items()]
            return ctx.respond({"throttle_time": 0, "error_code": _NONE, "error_message": None, "results": results})
        results = []
        names = [u.name for u in req.users]
        for name in dict.fromkeys(names):
            if names.count(name) > 1:
                results.append({"user": name, "error_code": _DUPLICATE_RESOURCE,
                                "error_message": "Cannot describe the same user twice in one request",
                                "credential_infos": []})
                continue
            creds = self.credentials.get(name)
            if not creds:
                results.append({"user": name, "error_code": _RESOURCE_NOT_FOUND,
                                "error_message": "Attempt to describe a user credential that does not exist",
                                "credential_infos": []})
            else:
                results.append(self._described(name, creds))
        return ctx.respond({"throttle_time": 0, "error_code": _NONE, "error_message": None, "results": results})

    @staticmethod
    def _described(user: str, creds: Any) -> Dict[str, Any]:
        return {"user": user, "error_code": _NONE, "error_message": None,
                "credential_infos": [{"mechanism": mechanism_type(m), "iterations": c.iterations}
                                     for m, c in sorted(creds.items())]}

    def alter_user_scram_credentials(self, ctx: "RequestContext", req: Any) -> Dict[str, Any]:
        """On a worker thread (it writes the store).  One result per user named; a user
        whose changes are refused keeps its credentials as they were."""
        errors: Dict[str, Any] = {}
        order: List[str] = []
        seen: Dict[Any, int] = {}
        for item in list(req.deletions) + list(req.upsertions):
            if item.name not in errors:
                errors[item.name] = None
                order.append(item.name)
            seen[(item.name, item.mechanism)] = seen.get((item.name, item.mechanism), 0) + 1
        for (name, _mech), n in seen.items():
            if n > 1 and errors[name] is None:
                errors[name] = (_DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request")
        if not ctx.allowed(AclOperation.ALTER, ResourceType.CLUSTER, CLUSTER_NAME):  # Kafka's rule
            for name in order:
                errors[name] = (ClusterAuthorizationFailed.code, "not authorized to Alter the cluster")
        changes: Dict[str, List[Any]] = {name: [] for name in order}
        for d in req.deletions:
            self._check(errors, d.name, lambda d=d: changes[d.name].append(("delete", self._mechanism(d.mechanism))))
        for u in req.upsertions:
            def build(u: Any = u) -> None:
                mech = self._mechanism(u.mechanism)
                changes[u.name].append(("upsert", credential_from_salted_password(
                    mech, bytes(u.salted_password), bytes(u.salt), int(u.iterations))))
            self._check(errors, u.name, build)
        for name in order:
            if errors[name] is not None:
                continue
            for kind, what in changes[name]:
                try:
                    if kind == "delete":
                        self.credentials.delete(name, what)
                    else:
                        self.credentials.upsert(name, what)
                except ResourceNotFound as exc:
                    errors[name] = (_RESOURCE_NOT_FOUND, f"Attempt to delete a user credential that does not "
                                                         f"exist: {exc}")
                    break
                except UnacceptableCredential as exc:
                    errors[name] = (_UNACCEPTABLE_CREDENTIAL, str(exc))
                    break
                except PylogError as exc:  # the store is away (ZooKeeper), a file that cannot be written
                    log.warning("changing the SCRAM credentials of user %r failed: %s", name, exc)
                    errors[name] = (exc.code if exc.code > 0 else -1, f"{type(exc).__name__}: {exc}")
                    break
            if errors[name] is None:
                log.info("SCRAM credentials of user %r changed by %s (%s)", name, ctx.client, ctx.conn.principal)
        results = [{"user": name, "error_code": errors[name][0] if errors[name] else _NONE,
                    "error_message": errors[name][1] if errors[name] else None} for name in order]
        return ctx.respond({"throttle_time": 0, "results": results})

    @staticmethod
    def _mechanism(type_id: int) -> str:
        try:
            return mechanism_of_type(int(type_id))
        except UnacceptableCredential:
            raise UnsupportedSaslMechanism(f"unknown SCRAM mechanism {type_id}") from None

    @staticmethod
    def _check(errors: Dict[str, Any], name: str, fn: Any) -> None:
        if errors.get(name) is not None:
            return
        try:
            check_user_name(name)
            fn()
        except UnsupportedSaslMechanism as exc:
            errors[name] = (_UNSUPPORTED_SASL_MECHANISM, str(exc))
        except UnacceptableCredential as exc:
            errors[name] = (_UNACCEPTABLE_CREDENTIAL, str(exc))

