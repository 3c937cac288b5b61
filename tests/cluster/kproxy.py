"""A fault-injecting TCP proxy for Kafka connections between test brokers (loopback only).

One :class:`BrokerProxy` stands in front of each broker's listener, and the broker
advertises the proxy (``advertised.listeners=PLAINTEXT://127.0.0.1:<proxy port>``), so
that clients and the other brokers' replica fetchers connect through it.  A proxy reads
the first request frame of each connection to learn its client id (Kafka request header
v1/v2: int32 size, int16 api_key, int16 api_version, int32 correlation_id, int16-length
client_id), then forwards the bytes both ways, one thread per direction.

:class:`ProxyNet` holds the proxies of a cluster.  ``cut(X)`` separates broker X from
the others while ZooKeeper and the clients stay connected: X's proxy refuses and closes
the connections whose client id is ``pylog-replica-<other>`` (followers fetching from X),
and every other proxy those whose client id is ``pylog-replica-X`` (X fetching from
them).  ``heal()`` ends every cut.  Connections already open when a cut starts are closed
at once; new ones are closed after their first frame's header.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Dict, Iterable, List, Optional, Set, Tuple

__all__ = ["BrokerProxy", "ProxyNet", "replica_client_id", "client_id_of"]

log = logging.getLogger("tests.kproxy")

_HEADER = struct.Struct(">ihhih")  # size, api_key, api_version, correlation_id, client_id length
_FIRST_FRAME_TIMEOUT_S = 30.0


def replica_client_id(broker_id: int) -> str:
    """The client id of broker ``broker_id``'s replica fetchers (pylog.server.replication)."""
    return f"pylog-replica-{broker_id}"


def client_id_of(header: bytes) -> Optional[str]:
    """The client id in the start of a request frame (None: null client id)."""
    _size, _key, _version, _corr, n = _HEADER.unpack_from(header)
    if n < 0:
        return None
    return header[_HEADER.size:_HEADER.size + n].decode("utf-8", "replace")


def _recv_exactly(sock: socket.socket, n: int, buf: bytearray) -> bool:
    while len(buf) < n:
        chunk = sock.recv(max(4096, n - len(buf)))
        if not chunk:
            return False
        buf += chunk
    return True


class _Conn:
    """One proxied connection: the client's socket and the upstream socket."""

    def __init__(self, client: socket.socket, client_id: Optional[str]) -> None:
        self.client = client
        self.upstream: Optional[socket.socket] = None
        self.client_id = client_id
        self.closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class BrokerProxy:
    """A TCP proxy on a free loopback port in front of one broker (see the module docstring).

    ``target`` is the broker's listener ``(host, port)``; it may be set after the proxy
    started (a broker started on port 0 tells its port only once it is ready), and until
    then connections are closed.  :meth:`block` names the client ids it refuses."""

    def __init__(self, broker_id: int, host: str = "127.0.0.1") -> None:
        self.broker_id = broker_id
        self.host = host
        self.target: Optional[Tuple[str, int]] = None
        self._blocked: Set[str] = set()
        self._lock = threading.Lock()
        self._conns: List[_Conn] = []
        self._closed = False
        self.refused = 0  #: connections refused by a cut so far
        self.accepted = 0
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, 0))
        self._server.listen(128)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"kproxy-{broker_id}")
        self._thread.start()

    @property
    def advertised_listener(self) -> str:
        return f"PLAINTEXT://{self.host}:{self.port}"

    # ------------------------------------------------------------------ faults
    def block(self, client_ids: Iterable[str]) -> None:
        """Refuse connections of these client ids; close the open ones now."""
        ids = set(client_ids)
        with self._lock:
            self._blocked |= ids
            victims = [c for c in self._conns if c.client_id in ids]
        for c in victims:
            log.info("proxy %d: closing %s (cut)", self.broker_id, c.client_id)
            c.close()

    def unblock_all(self) -> None:
        with self._lock:
            self._blocked.clear()

    def blocked(self, client_id: Optional[str]) -> bool:
        with self._lock:
            return client_id in self._blocked

    def connections(self) -> List[Optional[str]]:
        """Client ids of the open connections."""
        with self._lock:
            return [c.client_id for c in self._conns if not c.closed]

    # ------------------------------------------------------------------ serving
    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client,), daemon=True,
                             name=f"kproxy-{self.broker_id}-conn").start()

    def _serve(self, client: socket.socket) -> None:
        conn = _Conn(client, None)
        try:
            client.settimeout(_FIRST_FRAME_TIMEOUT_S)
            head = bytearray()
            if not _recv_exactly(client, _HEADER.size, head):
                conn.close()
                return
            n = _HEADER.unpack_from(head)[4]
            if n > 0 and not _recv_exactly(client, _HEADER.size + n, head):
                conn.close()
                return
            conn.client_id = client_id_of(bytes(head))
            client.settimeout(None)
            with self._lock:
                if self._closed or conn.client_id in self._blocked or self.target is None:
                    self.refused += conn.client_id in self._blocked
                    refuse = True
                else:
                    refuse = False
                    self._conns.append(conn)
                    self.accepted += 1
                target = self.target
            if refuse:
                conn.close()
                return
            assert target is not None
            try:
                up = socket.create_connection(target, timeout=10)
            except OSError:
                conn.close()
                self._forget(conn)
                return
            up.settimeout(None)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.upstream = up
            if conn.closed:  # cut while connecting
                conn.close()
                self._forget(conn)
                return
            up.sendall(head)
            t = threading.Thread(target=self._pump, args=(conn, up, client), daemon=True,
                                 name=f"kproxy-{self.broker_id}-down")
            t.start()
            self._pump(conn, client, up)
            t.join()
        except OSError:
            conn.close()
        finally:
            self._forget(conn)

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        conn.close()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        except OSError:
            pass
        try:
            self._server.close()
        except OSError:
            pass
        for c in conns:
            c.close()
        self._thread.join(5)


class ProxyNet:
    """The proxies of a cluster, one per broker id (see the module docstring)."""

    def __init__(self, broker_ids: Iterable[int]) -> None:
        self.proxies: Dict[int, BrokerProxy] = {}
        try:
            for b in broker_ids:
                self.proxies[b] = BrokerProxy(b)
        except BaseException:
            self.close()
            raise
        self.cuts: Set[int] = set()

    def advertised_listeners(self) -> Dict[int, str]:
        """broker id -> the advertised.listeners that routes through its proxy."""
        return {b: p.advertised_listener for b, p in self.proxies.items()}

    def set_target(self, broker_id: int, host: str, port: int) -> None:
        self.proxies[broker_id].target = (host, port)

    def cut(self, broker_id: int) -> None:
        """Separate ``broker_id`` from every other broker (both directions)."""
        others = [b for b in self.proxies if b != broker_id]
        self.cuts.add(broker_id)
        self.proxies[broker_id].block(replica_client_id(b) for b in others)
        for b in others:
            self.proxies[b].block([replica_client_id(broker_id)])

    def heal(self) -> None:
        """End every cut."""
        self.cuts.clear()
        for p in self.proxies.values():
            p.unblock_all()

    def close(self) -> None:
        for p in self.proxies.values():
            p.close()
