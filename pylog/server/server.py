"""KafkaServer: listeners, connections and an orderly shutdown, over one broker.

The server is Kafka's SocketServer + KafkaApis on an asyncio loop (uvloop when it is
installed): :mod:`pylog.server.connection` frames bytes, :mod:`pylog.server.apis`
answers requests, and everything reaches the data through
:class:`~pylog.broker.interface.BrokerInterface` — an embedded
:class:`~pylog.broker.Broker` today, a cluster node with another metadata store later.

A cluster node first moves its leaderships away (its controlled shutdown) while it
still serves, then lets its clients re-route (:meth:`KafkaServer.drain_clients`).
Shutdown (:meth:`KafkaServer.stop`), in Kafka's order: stop accepting connections;
answer every waiting request (parked fetches answer with what they have, pending
produces finish); stop reading new requests; flush what is being written; close the
connections.  The caller then closes the broker, which closes every log cleanly so
the next start needs no recovery.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from pylog.broker.interface import BrokerInterface
from pylog.errors import PylogError
from pylog.server.apis import KafkaApis
from pylog.server.authz import RequestAuthorizer
from pylog.server.cluster import inter_broker_ssl_context
from pylog.server.config import Listener, ServerConfig
from pylog.server.connection import KafkaConnection
from pylog.server.events import EventLog
from pylog.server.metrics import MetricsHTTPServer, ServerMetrics
from pylog.server.purgatory import Purgatory
from pylog.server.tls import TlsTransport, build_context

__all__ = ["KafkaServer"]

log = logging.getLogger("pylog.server")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a listener's address) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every address) or a host name
        return False


#: Hosts that mean "every address of this machine" when bound.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


class KafkaServer:
    """A Kafka-protocol server of ``broker`` on ``loop`` (see the module docstring)."""

    def __init__(self, config: ServerConfig, broker: BrokerInterface,
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.config = config
        self.broker = broker
        self.loop = loop or asyncio.get_event_loop()
        #: sendmsg from a duplicate descriptor where the loop's transport would copy
        #: (asyncio before 3.12 joins writelines' buffers; uvloop gathers them itself).
        self.gather_writes = not _is_uvloop(self.loop)
        self.metrics = ServerMetrics(broker.metrics)
        self.purgatory = Purgatory(self.loop)
        #: ACL authorization (authorizer.class.name); allows everything when it is not set.
        self.authorizer = RequestAuthorizer(config, broker, self.metrics)
        self.apis = KafkaApis(self)
        self.connections: Set[KafkaConnection] = set()
        self._servers: List[asyncio.AbstractServer] = []
        self.bound: List[Tuple[Listener, Listener]] = []  # (configured, actually bound)
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._metrics_http: Optional[MetricsHTTPServer] = None
        #: This broker's recent events (``/events`` on the metrics listener), kept from start() to stop().
        self.events = EventLog(config.node_id)
        self._epochs: Dict[Tuple[str, int], int] = {}
        self._stopping = False
        #: Each SSL listener's SSLContext (by listener name); replaced by reload_tls().
        self._tls: Dict[str, ssl.SSLContext] = {}
        #: TLS connections still in their handshake (closed by stop()).
        self.handshaking: Set[TlsTransport] = set()
        #: When a connection last handed a request to the handlers (time.monotonic()).
        self.last_request_s = 0.0
        broker.add_data_listener(self.purgatory.notify)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind every listener (and the metrics endpoint) or raise OSError."""
        self.events.attach()
        try:
            await self._bind()
        except BaseException:
            self.events.detach()
            raise
        self._schedule_sweep()
        # A single broker's group coordinator creates __consumer_offsets
        # (offsets.topic.num.partitions directories) on first use: do it now on a worker
        # thread, not on the event loop when the first consumer arrives.  A cluster node
        # (not started yet) only makes its coordinator here: the topic is created when a
        # client first asks FindCoordinator, by a registered broker.
        self.apis.in_thread(self._warm_groups)

    async def _bind(self) -> None:
        for name, settings in self.config.tls.items():
            self._tls[name] = build_context(settings)
        for lst in self.config.listeners:
            if lst.security_protocol == "PLAINTEXT" and not _is_loopback(lst.host):
                log.warning("listener %s is PLAINTEXT on a non-loopback address: anyone who can reach it can "
                            "read and write every topic, unencrypted (use an SSL listener)", lst)
            if lst.security_protocol == "SASL_PLAINTEXT" and not _is_loopback(lst.host) \
                    and "PLAIN" in self.config.sasl_mechanisms.get(lst.name, ()):
                log.warning("listener %s is SASL_PLAINTEXT on a non-loopback address with PLAIN enabled: "
                            "passwords cross the network unencrypted (use SASL_SSL)", lst)
            factory: Any
            if lst.security_protocol in ("SSL", "SASL_SSL"):
                factory = lambda lst=lst: TlsTransport(  # noqa: E731
                    self, self._bound_of(lst), lambda: KafkaConnection(self, self._bound_of(lst)))
            else:
                factory = lambda lst=lst: KafkaConnection(self, self._bound_of(lst))  # noqa: E731
            srv = await self.loop.create_server(factory, host=lst.host or None, port=lst.port, reuse_address=True,
                                                backlog=1024)
            port = srv.sockets[0].getsockname()[1] if srv.sockets else lst.port
            self._servers.append(srv)
            self.bound.append((lst, Listener(lst.name, lst.host, port, lst.security_protocol)))
        if self.config.metrics_listener is not None:
            host, port = self.config.metrics_listener
            self._metrics_http = MetricsHTTPServer(self.metrics, host, port, self.events)

    def _warm_groups(self) -> None:
        try:
            self.broker.groups
        except PylogError as exc:  # a cluster node still joining: the first client asks again
            log.info("the group coordinator is not ready yet: %s", exc)

    def _bound_of(self, lst: Listener) -> Listener:
        for configured, bound in self.bound:
            if configured == lst:
                return bound
        return lst

    @property
    def metrics_address(self) -> Optional[Tuple[str, int]]:
        return None if self._metrics_http is None else self._metrics_http.address

    @property
    def metrics_listener(self) -> Optional[str]:
        """``HOST:PORT`` of the metrics endpoint as bound (the real port when 0 was asked),
        None without one: the read-only broker config ``metrics.listener`` through which
        the console finds every broker's ``/metrics`` and ``/events``.  An endpoint bound
        to every address (``0.0.0.0``, ``::``, empty) is named by the host that clients are
        told for this broker's first advertised listener (they reach the broker there),
        or by this machine's name when that is not a host either."""
        addr = self.metrics_address
        if addr is None:
            return None
        host, port = addr
        if host in _WILDCARD_HOSTS:
            advertised = [self.advertised_for(b).host for _, b in self.bound]
            concrete = [h for h in advertised if h not in _WILDCARD_HOSTS]
            host = concrete[0] if concrete else socket.getfqdn()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def advertised_for(self, listener: Listener) -> Listener:
        """The address clients are told to use for ``listener`` (port 0 in the
        configuration means the port actually bound)."""
        adv = self.config.advertised_for(listener)
        if adv.port == 0:
            return Listener(adv.name, adv.host, listener.port, adv.security_protocol)
        return adv

    # ------------------------------------------------------------------ TLS
    def tls_context(self, listener_name: str) -> ssl.SSLContext:
        """The SSLContext new handshakes on ``listener_name`` use."""
        return self._tls[listener_name]

    def reload_tls(self) -> bool:
        """Read every SSL listener's key, certificates and CA bundle again (SIGHUP):
        new handshakes use them, open connections go on with theirs.  A file that does
        not load leaves that listener as it was (ERROR in the log); returns whether all
        reloaded."""
        ok = True
        for name, settings in self.config.tls.items():
            try:
                ctx = build_context(settings)
            except PylogError as exc:
                log.error("TLS reload of listener %s failed, keeping its previous certificates: %s", name, exc)
                ok = False
                continue
            self._tls[name] = ctx
            log.info("TLS listener %s: key, certificates and trust store reloaded", name)
        network = getattr(getattr(self.broker, "kernel", None), "network", None)
        if network is not None and getattr(network, "ssl_context", None) is not None:
            try:  # the replica fetchers' next connections use the new files
                network.ssl_context = inter_broker_ssl_context(self.config)
            except PylogError as exc:
                log.error("TLS reload for inter-broker connections failed, keeping the previous "
                          "certificates: %s", exc)
                ok = False
        return ok

    def tls_handshake_failed(self, peer: str, listener: Listener, reason: str) -> None:
        """One WARNING line and the counter: never a traceback for what a client sent."""
        self.metrics.tls_handshake_failures.labels(listener.name).inc()
        log.warning("TLS handshake with %s on listener %s failed: %s", peer, listener, reason)

    async def drain_clients(self, quiet_s: float = 0.2, max_s: float = 1.0) -> None:
        """After a controlled shutdown: go on serving until no request came for
        ``quiet_s`` (at most ``max_s``).  The clients' requests for the partitions this
        broker led are answered NOT_LEADER_OR_FOLLOWER, and their metadata from here or
        elsewhere names the new leaders; a request still unread when :meth:`stop` closes
        the connection would instead fail at the client as possibly written, and an
        idempotent producer holds the partition until every such request ended (with
        librdkafka, up to a second more before it connects to the new leader)."""
        start = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            if now - start >= max_s or now - max(self.last_request_s, start) >= quiet_s:
                return
            await asyncio.sleep(min(quiet_s, 0.02))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop in order (see the module docstring); waits up to ``timeout_s`` for
        answers in progress."""
        if self._stopping:
            return
        self._stopping = True
        try:
            await self._shut_down(timeout_s)
        finally:
            self.events.detach()

    async def _shut_down(self, timeout_s: float) -> None:
        self.broker.remove_data_listener(self.purgatory.notify)
        for srv in self._servers:
            srv.close()
        for tls in list(self.handshaking):
            tls.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.purgatory.expire_all()
        deadline = time.monotonic() + timeout_s
        for conn in list(self.connections):
            conn.stop_reading()
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        while any(c.transport is not None and c.transport.get_write_buffer_size() for c in self.connections) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)
        if self._metrics_http is not None:
            self._metrics_http.close()
        self.apis.close()
        self.authorizer.close()
        log.info("server stopped")

    # ------------------------------------------------------------------ connections
    def connection_opened(self, conn: KafkaConnection) -> bool:
        if self._stopping or len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(conn)
        self.metrics.connections.inc()
        self.metrics.connections_accepted.inc()
        log.debug("connection from %s on %s (%s)", conn.peer, conn.listener, conn.principal)
        return True

    def connection_closed(self, conn: KafkaConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.connections.dec()
            self.metrics.connections_closed.inc()

    def _schedule_sweep(self) -> None:
        idle_ms = self.config.connections_max_idle_ms
        if idle_ms < 0:
            return
        interval = min(max(idle_ms / 10_000.0, 0.05), 30.0)
        self._sweeper = self.loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        limit = self.config.connections_max_idle_ms / 1000.0
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.idle_for(now) > limit:
                conn.close(f"idle for more than connections.max.idle.ms ({self.config.connections_max_idle_ms})")
        self._schedule_sweep()

    # ------------------------------------------------------------------ leader epochs
    def leader_epoch(self, topic: str, partition: int, refresh: bool = False) -> int:
        """The partition's leader epoch (cached from describe_topic; -1 if unknown)."""
        key = (topic, partition)
        epoch = None if refresh else self._epochs.get(key)
        if epoch is None:
            try:
                d = self.broker.describe_topic(topic, offsets=False)
            except PylogError:
                return -1
            for p in d.partitions:
                self._epochs[(topic, p.partition)] = max(p.leader_epoch, 0)
            epoch = self._epochs.get(key, -1)
        return epoch

    def forget_epochs(self, topic: Optional[str] = None) -> None:
        if topic is None:
            self._epochs.clear()
        else:
            for k in [k for k in self._epochs if k[0] == topic]:
                del self._epochs[k]

    def addresses(self) -> List[str]:
        """``NAME://HOST:PORT`` of every bound listener."""
        return [str(b) for _, b in self.bound]

