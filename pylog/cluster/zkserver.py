"""A private ZooKeeper server in a subprocess, for tests, CI and single-machine clusters.

:class:`ZooKeeperServer` writes a ``zoo.cfg`` into its data directory and runs the
ZooKeeper that Debian's ``zookeeper`` package installs (``apt-get install zookeeper``:
the jars under ``/usr/share/java``) with ``java``, standalone, listening on one loopback
port.  An Apache ZooKeeper directory can be used instead through ``ZOOKEEPER_HOME``.
The admin HTTP server is off and only the ``ruok`` and ``srvr`` four-letter words are
allowed; the server is ready when ``srvr`` says it serves.  It is stopped by its PID
(SIGTERM, then SIGKILL), and :meth:`ZooKeeperServer.restart` keeps its data (sessions
survive a restart shorter than their timeout).

Layout of the data directory::

    zoo.cfg          the configuration written at each start
    data/            ZooKeeper's snapshots and transaction logs
    zookeeper.log    the server's output (appended to at each start)

:class:`ZooKeeperEnsemble` runs several such servers as one replicated ensemble on one
machine (loopback ports, one data directory each, ``server.N`` lines and ``myid`` files
as on separate machines): what the tests use to show a cluster going on while a
ZooKeeper server is down.

With ``tls=ZooKeeperTls(...)`` the server also listens for TLS clients on a second port
(``secureClientPort``, Netty; PEM key store and trust store), where a client certificate
authenticates the client as its subject (ZooKeeper's x509 scheme).

``python -m pylog.cluster.zkserver --data-dir D [--port P] [--tick-time-ms N]`` runs one
in the foreground and prints ``ready HOST:PORT`` on a line of its own once it serves; it
stops the server on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from pylog.errors import InvalidConfig, ZooKeeperServerError
from pylog.util import check_int

__all__ = ["DEBIAN_JAR_DIR", "INSTALL_HINT", "ZooKeeperInstall", "ZooKeeperServer", "ZooKeeperTls",
           "ZooKeeperEnsemble", "QuorumPeer", "find_zookeeper", "four_letter_word", "main"]

#: What to do when ZooKeeper or java is missing.
INSTALL_HINT = ("install Debian's ZooKeeper package: `apt-get install zookeeper` (it brings "
                "java), or set ZOOKEEPER_HOME to an Apache ZooKeeper directory")
#: Where Debian's libzookeeper-java puts zookeeper.jar; its manifest names its dependencies.
DEBIAN_JAR_DIR = "/usr/share/java"
#: The class that runs a server from a zoo.cfg (standalone without server.N lines).
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
#: Largest request the server accepts: node data of MAX_NODE_DATA_BYTES plus room for the
#: path and headers (ZooKeeper's default is 1 MiB - 1, a little less than pylog's limit).
JUTE_MAXBUFFER_BYTES = 4 << 20
#: Lines of the server's log that an error message quotes.
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class QuorumPeer:
    """One member of an ensemble as every member's zoo.cfg lists it:
    ``server.<server_id>=<host>:<quorum_port>:<election_port>``."""

    server_id: int
    host: str
    quorum_port: int
    election_port: int


@dataclass(frozen=True)
class ZooKeeperTls:
    """A TLS client port for a :class:`ZooKeeperServer`: its PEM key and certificate
    chain (one file), the PEM CA bundle clients' certificates are checked against, and
    whether a client certificate is required."""

    keystore: str | os.PathLike[str]
    truststore: str | os.PathLike[str]
    client_auth: bool = True


@dataclass(frozen=True)
class ZooKeeperInstall:
    """Where ``java`` and ZooKeeper's jars are."""

    java: str
    classpath: tuple[str, ...]


def find_zookeeper() -> ZooKeeperInstall:
    """Find ``java`` (``$JAVA_HOME/bin/java`` or on PATH) and ZooKeeper's jars
    (``$ZOOKEEPER_HOME/lib`` when set, else Debian's ``/usr/share/java/zookeeper.jar``).
    Raises ZooKeeperServerError naming the package to install when either is missing."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else None
    if java is None or not os.access(java, os.X_OK):
        java = shutil.which("java")
    if java is None:
        raise ZooKeeperServerError(f"no java found (JAVA_HOME or PATH): {INSTALL_HINT}")
    zk_home = os.environ.get("ZOOKEEPER_HOME")
    if zk_home:
        jars = sorted(glob.glob(os.path.join(zk_home, "lib", "*.jar"))
                      + glob.glob(os.path.join(zk_home, "zookeeper-*.jar")))
        if not any(os.path.basename(j).startswith("zookeeper-") for j in jars):
            raise ZooKeeperServerError(f"ZOOKEEPER_HOME={zk_home} has no zookeeper jar in lib/: "
                                       f"{INSTALL_HINT}")
        return ZooKeeperInstall(java, tuple(jars))
    jar = os.path.join(DEBIAN_JAR_DIR, "zookeeper.jar")
    if not os.path.isfile(jar):
        raise ZooKeeperServerError(f"ZooKeeper is not installed ({jar} is missing): {INSTALL_HINT}")
    # Debian's jars carry their dependencies in their manifests; slf4j-simple (from
    # libslf4j-java, a dependency) makes the server log to its output instead of nowhere.
    extra = [p for p in (os.path.join(DEBIAN_JAR_DIR, "slf4j-simple.jar"),) if os.path.isfile(p)]
    return ZooKeeperInstall(java, (jar, *extra))


def _bind_probe(host: str, port: int) -> int:
    """Bind ``host:port`` as the server will (SO_REUSEADDR, so a port in TIME_WAIT after a
    restart counts as free) and return the port bound; OSError if it is in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return int(s.getsockname()[1])


def four_letter_word(host: str, port: int, word: str, timeout_s: float = 2.0) -> str:
    """Send a four-letter word (``ruok``, ``srvr``...) and return the answer ("" if the
    server closed without one).  Raises OSError if it cannot connect."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(word.encode("ascii"))
        chunks = []
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


#: Servers started by this process, stopped at its exit if their owner did not.
_RUNNING: weakref.WeakSet[ZooKeeperServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop()


class ZooKeeperServer:
    """One standalone ZooKeeper server in a subprocess, its files in ``data_dir``.

    ``port=0`` picks a free port at the first start (kept by restarts).  ``tick_time_ms``
    is ZooKeeper's tick: sessions may ask for 2 to 20 ticks.  ``force_sync=False`` skips
    fsync of the transaction log (for tests: a killed server may lose its last writes).
    ``start_timeout_s`` bounds :meth:`start`; ``stop_timeout_s`` how long SIGTERM is given
    before SIGKILL.  A server still running when the Python process exits normally is
    stopped then.

    ``server_id`` and ``peers`` (every member, this one included) make it a member of a
    replicated ensemble (see :class:`ZooKeeperEnsemble`): it serves once a majority of the
    peers runs, so :meth:`start` of the first member alone does not return until others
    start.
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int = 0, *,
                 host: str = "127.0.0.1", tick_time_ms: int = 2000, force_sync: bool = True,
                 start_timeout_s: float = 60.0, stop_timeout_s: float = 10.0,
                 heap_mb: int = 256, server_id: int | None = None,
                 peers: tuple[QuorumPeer, ...] = (), tls: ZooKeeperTls | None = None) -> None:
        check_int("port", port, min=0, max=65535, error=InvalidConfig)
        check_int("tick_time_ms", tick_time_ms, min=1, error=InvalidConfig)
        check_int("heap_mb", heap_mb, min=16, error=InvalidConfig)
        if not isinstance(host, str) or not host:
            raise InvalidConfig(f"host must be a non-empty string, got {host!r}")
        for name, value in (("start_timeout_s", start_timeout_s), ("stop_timeout_s", stop_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidConfig(f"{name} must be a positive number of seconds, got {value!r}")
        self.data_dir = Path(data_dir)
        self.host = host
        self.tick_time_ms = tick_time_ms
        self.force_sync = force_sync
        self.start_timeout_s = float(start_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.heap_mb = heap_mb
        if (server_id is None) != (not peers):
            raise InvalidConfig("an ensemble member needs both server_id and peers")
        if server_id is not None and server_id not in {q.server_id for q in peers}:
            raise InvalidConfig(f"server_id {server_id} is not one of the peers {[q.server_id for q in peers]}")
        self.server_id = server_id
        self.peers = tuple(peers)
        self._port = port
        self._port_chosen = port != 0
        #: TLS clients' port (``secureClientPort``) when ``tls`` is given; the plain
        #: ``port`` stays for the readiness probe (ZooKeeper's four-letter words).
        self.tls = tls
        self._secure_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        """The client port (0 until a free one was picked by the first start)."""
        return self._port

    @property
    def secure_port(self) -> int:
        """The TLS client port (0 without ``tls`` or before the first start)."""
        return self._secure_port

    @property
    def secure_connect_string(self) -> str:
        """``host:secure_port`` for TLS clients."""
        if not self._secure_port:
            raise ZooKeeperServerError("the ZooKeeper server has no TLS port: give tls= and start() it")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._secure_port}"

    @property
    def connect_string(self) -> str:
        """``host:port`` for ``zookeeper.connect`` (append a chroot as needed)."""
        if self._port == 0:
            raise ZooKeeperServerError("the ZooKeeper server has no port yet: start() it first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "zoo.cfg"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "zookeeper.log"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the server and wait until it serves (ZooKeeperServerError with the end of
        its log if it exits or does not serve within ``start_timeout_s``).  No-op if it
        runs."""
        if self.running:
            return
        for _attempt in range(3):
            self.spawn()
            failure = self._wait_ready()
            if failure is None:
                self._port_chosen = True
                return
            self._kill()
            # A port picked here may have been taken before the server bound it: pick again.
            if self._port_chosen or "Address already in use" not in self.log_tail():
                break
        raise ZooKeeperServerError(f"ZooKeeper on {self.host}:{self._port} did not start: "
                                   f"{failure}; the end of {self.log_path}:\n{self.log_tail()}")

    def spawn(self) -> None:
        """Start the server process without waiting for it to serve (an ensemble's
        members are all spawned, then waited for: :meth:`wait_ready`).  No-op if it runs."""
        if self.running:
            return
        install = find_zookeeper()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A server already on the port would answer the readiness probe for ours.
        try:
            self._port = _bind_probe(self.host, self._port if self._port_chosen else 0)
            if self.tls is not None and not self._secure_port:
                self._secure_port = next(p for p in _free_ports(self.host, 2) if p != self._port)
        except OSError as e:
            raise ZooKeeperServerError(f"cannot start ZooKeeper on {self.host}:{self._port}: "
                                       f"the port is in use or not bindable ({e})") from None
        self._spawn(install)

    def wait_ready(self) -> None:
        """Wait until a spawned server serves (ZooKeeperServerError with the end of its
        log if it exits or does not within ``start_timeout_s``)."""
        failure = self._wait_ready()
        if failure is not None:
            self._kill()
            raise ZooKeeperServerError(f"ZooKeeper on {self.host}:{self._port} did not start: "
                                       f"{failure}; the end of {self.log_path}:\n{self.log_tail()}")
        self._port_chosen = True

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after ``stop_timeout_s``;
        returns when it has exited.  No-op if it is not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
        self._reap()

    def kill(self) -> None:
        """Kill the server by its PID (SIGKILL: a crash, or a machine losing power)."""
        self._kill()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log ("" if there is none)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ internals
    def _write_config(self) -> None:
        data = (self.data_dir / "data").resolve()
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by pylog.cluster.zkserver at each start; edits are lost.",
            f"tickTime={self.tick_time_ms}",
            f"dataDir={data}",
            f"clientPort={self._port}",
            f"clientPortAddress={self.host}",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,cons",
            f"forceSync={'yes' if self.force_sync else 'no'}",
            "autopurge.snapRetainCount=3",
            "autopurge.purgeInterval=1",
        ]
        if self.tls is not None:
            # Netty serves TLS on secureClientPort (and plaintext on clientPort); a client's
            # certificate is required and becomes its x509 identity for ACLs.
            lines += [
                "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                f"secureClientPort={self._secure_port}",
                f"secureClientPortAddress={self.host}",
                f"ssl.keyStore.location={Path(self.tls.keystore).resolve()}",
                "ssl.keyStore.type=PEM",
                f"ssl.trustStore.location={Path(self.tls.truststore).resolve()}",
                "ssl.trustStore.type=PEM",
                f"ssl.clientAuth={'need' if self.tls.client_auth else 'none'}",
                "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider",
            ]
        if self.server_id is not None:
            lines += ["initLimit=10", "syncLimit=5"]
            for q in self.peers:
                host = f"[{q.host}]" if ":" in q.host else q.host
                lines.append(f"server.{q.server_id}={host}:{q.quorum_port}:{q.election_port}")
            (data / "myid").write_text(f"{self.server_id}\n", encoding="ascii")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spawn(self, install: ZooKeeperInstall) -> None:
        self._write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by _reap
        self._log.write(f"--- pylog.cluster.zkserver: starting on {self.host}:{self._port}\n"
                        .encode())
        self._log.flush()
        command = [
            install.java, f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", "-Dzookeeper.admin.enableServer=false",
            f"-Djute.maxbuffer={JUTE_MAXBUFFER_BYTES}",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp", os.pathsep.join(install.classpath + self._tls_jars(install)), MAIN_CLASS,
            str(self.config_path.resolve()),
        ]
        self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=self.data_dir)
        _RUNNING.add(self)

    def _tls_jars(self, install: ZooKeeperInstall) -> tuple[str, ...]:
        """Jars the Netty server needs that Debian's zookeeper.jar manifest leaves out
        (netty-codec); none without TLS or with ZOOKEEPER_HOME (its lib/ has them)."""
        if self.tls is None or os.environ.get("ZOOKEEPER_HOME"):
            return ()
        jar = os.path.join(DEBIAN_JAR_DIR, "netty-codec.jar")
        return (jar,) if os.path.isfile(jar) and jar not in install.classpath else ()

    def _wait_ready(self) -> str | None:
        """None once ``srvr`` reports a serving mode, else why not."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                return f"the server exited with status {code}"
            try:
                if "Mode:" in four_letter_word(self.host, self._port, "srvr", timeout_s=1.0):
                    return None
            except OSError:
                pass
            time.sleep(0.1)
        return f"it did not serve within {self.start_timeout_s} s"

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None and self._log is not None:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------- command line
def _free_ports(host: str, n: int) -> list[int]:
    """``n`` distinct ports free on ``host`` now (bound together, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class ZooKeeperEnsemble:
    """``size`` ZooKeeper servers replicating one another (a quorum of size // 2 + 1), on
    loopback ports of this machine, each in ``root/zk<id>``: Kafka's recommended three
    (or five) servers, for tests and demonstrations of a server going down.

    ``servers[i]`` (ids 1..size) are :class:`ZooKeeperServer` members: stop, kill and
    start them one by one.  :attr:`connect_string` lists them all (``h:p1,h:p2,h:p3``).
    Other arguments are passed to every member.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 3, *, host: str = "127.0.0.1",
                 **server_args: object) -> None:
        check_int("ensemble size", size, min=1, max=255, error=InvalidConfig)
        ports = _free_ports(host, 3 * size)
        peers = tuple(QuorumPeer(i + 1, host, ports[3 * i + 1], ports[3 * i + 2]) for i in range(size))
        self.root = Path(root)
        self.servers = [ZooKeeperServer(self.root / f"zk{q.server_id}", ports[3 * i], host=host,
                                        server_id=q.server_id, peers=peers, **server_args)  # type: ignore[arg-type]
                        for i, q in enumerate(peers)]

    @property
    def connect_string(self) -> str:
        """Every member's ``host:port``, comma-separated (add a chroot as needed)."""
        return ",".join(s.connect_string for s in self.servers)

    def start(self) -> None:
        """Start every member and wait until each serves (they serve once a quorum
        runs); on failure every member is stopped and ZooKeeperServerError raised."""
        try:
            for s in self.servers:
                s.spawn()
            for s in self.servers:
                s.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every member by its PID."""
        for s in self.servers:
            s.stop()

    def mode(self, server_id: int) -> str:
        """"leader", "follower" (or "standalone"), or "" when the member does not serve."""
        s = self.servers[server_id - 1]
        try:
            answer = four_letter_word(s.host, s.port, "srvr", timeout_s=1.0)
        except OSError:
            return ""
        for line in answer.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground until SIGTERM or SIGINT; print ``ready HOST:PORT``."""
    parser = argparse.ArgumentParser(prog="python -m pylog.cluster.zkserver",
                                     description="Run a private ZooKeeper server.")
    parser.add_argument("--data-dir", required=True, help="its config, data and log")
    parser.add_argument("--port", type=int, default=0, help="client port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--tick-time-ms", type=int, default=2000,
                        help="ZooKeeper's tick; sessions may last 2 to 20 ticks")
    parser.add_argument("--no-fsync", action="store_true",
                        help="do not fsync the transaction log (tests only)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = ZooKeeperServer(args.data_dir, args.port, host=args.host,
                                 tick_time_ms=args.tick_time_ms, force_sync=not args.no_fsync)
        server.start()
    except (ZooKeeperServerError, InvalidConfig) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        print(f"ready {server.connect_string}", flush=True)
        print(f"ZooKeeper pid {server.pid}, log {server.log_path}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not server.running:
                print(f"error: ZooKeeper exited; the end of {server.log_path}:\n"
                      f"{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
