"""`pylog cluster up`: a private ZooKeeper and N `pylog serve` brokers on loopback.

For development, demos and tests: :class:`ProcessCluster` starts Debian's ZooKeeper
(:class:`~pylog.cluster.zkserver.ZooKeeperServer`, its data under ``DATA/zookeeper``) —
or uses one given by its connect string — and one ``python -m pylog serve --zookeeper``
process per broker (``DATA/broker-<id>``, rack ``rack-<id>`` unless racks are given), each
on a free loopback port it reports when ready.  Every process is stopped by its PID:
brokers with SIGTERM (a controlled shutdown) and then SIGKILL if one does not exit, the
ZooKeeper last.  :class:`BrokerProcess` also kills (-9), pauses (SIGSTOP) and resumes
(SIGCONT) one broker, which the fault tests and the benchmark use.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

__all__ = ["ProcessCluster", "BrokerProcess", "broker_env"]

_READY = re.compile(r"listening on (?P<addrs>[A-Z_0-9]+://[^\n]+)\n")
_ADDR = re.compile(r"(?P<name>[A-Z_0-9]+)://(?P<host>[^:,\s]+):(?P<port>\d+)")
_METRICS = re.compile(r"metrics on http://(?P<host>[^:\s]+):(?P<port>\d+)/metrics")
_CONSOLE = re.compile(r"console on (?P<url>http://(?P<host>[^\s/]+):(?P<port>\d+)/)")


def broker_env() -> Dict[str, str]:
    """A broker process's environment: it imports the same pylog as this process."""
    import pylog

    root = str(Path(pylog.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=root + (os.pathsep + path if path else ""))


class BrokerProcess:
    """One `pylog serve --zookeeper ...` process."""

    def __init__(self, broker_id: int, data_dir: Path, zookeeper: str, *, rack: Optional[str] = None,
                 port: int = 0, overrides: Optional[Mapping[str, object]] = None, metrics: bool = True,
                 log_level: str = "info", advertised_listeners: Optional[str] = None,
                 listeners: Optional[str] = None, console: Optional[str] = None) -> None:
        self.broker_id = broker_id
        #: ``--console HOST:PORT`` of this broker (port 0: a free one, kept across restarts)
        self.console = console
        #: the console's URL once started
        self.console_url: Optional[str] = None
        self.data_dir = Path(data_dir)
        self.zookeeper = zookeeper
        self.rack = rack
        self.port = port
        self.overrides = dict(overrides or {})
        self.metrics = metrics
        self.log_level = log_level
        #: ``advertised.listeners`` (e.g. a proxy in front of the listener), or None: the
        #: listener itself is advertised.
        self.advertised_listeners = advertised_listeners
        #: ``listeners`` (NAME://HOST:PORT[,...], port 0 for a free one), or None: one
        #: PLAINTEXT listener on ``port``.  :attr:`port` is then the PLAINTEXT
        #: listener's (else the first's), :attr:`ports` every listener's.
        self.listeners = listeners
        self.ports: Dict[str, int] = {}
        self.host = "127.0.0.1"
        self.metrics_port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        #: Stopped by :meth:`pause` (SIGSTOP) and not resumed since.
        self.paused = False
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> List[str]:
        cmd = [sys.executable, "-X", "faulthandler", "-m", "pylog", "serve", "--node-id", str(self.broker_id),
               "--zookeeper", self.zookeeper, "--data-dir", str(self.data_dir),
               "--listeners", self._listeners_arg(), "--log-level", self.log_level]
        if self.rack is not None:
            cmd += ["--rack", self.rack]
        if self.advertised_listeners is not None:
            cmd += ["--advertised-listeners", self.advertised_listeners]
        if self.metrics:
            cmd += ["--metrics-listener", f"127.0.0.1:{self.metrics_port or 0}"]
        if self.console is not None:
            cmd += ["--console", self.console]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def _listeners_arg(self) -> str:
        if self.listeners is None:
            return f"PLAINTEXT://127.0.0.1:{self.port}"
        out = []
        for m in _ADDR.finditer(self.listeners):  # a restart binds the ports of the last run
            out.append(f"{m.group('name')}://{m.group('host')}:{self.ports.get(m.group('name'), m.group('port'))}")
        return ",".join(out)

    def start(self, timeout_s: float = 60.0) -> "BrokerProcess":
        """Start and wait for the ready line (RuntimeError with the log's end if it exits
        or is not ready in time; the process is killed then)."""
        assert not self.running, f"broker {self.broker_id} is already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.paused = False
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, env=broker_env())
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        buf = ""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker {self.broker_id} exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.log_tail()}")
            try:
                chunk = os.read(fd, 65536).decode("utf-8", "replace")
            except BlockingIOError:
                chunk = ""
            buf += chunk
            m = _READY.search(buf)
            if m is not None and (not self.metrics or _METRICS.search(buf)) and \
                    (self.console is None or _CONSOLE.search(buf)):
                self.ports = {a.group("name"): int(a.group("port")) for a in _ADDR.finditer(m.group("addrs"))}
                self.port = self.ports.get("PLAINTEXT", next(iter(self.ports.values())))
                mm = _METRICS.search(buf)
                if mm is not None:
                    self.metrics_port = int(mm.group("port"))
                mc = _CONSOLE.search(buf)
                if mc is not None and self.console is not None:
                    self.console_url = mc.group("url")
                    self.console = f"{self.console.rpartition(':')[0]}:{mc.group('port')}"
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"broker {self.broker_id} was not ready within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (controlled shutdown) and wait; SIGKILL if it does not exit in time."""
        if not self.running:
            return self.proc.returncode if self.proc is not None else 0
        assert self.proc is not None
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"broker {self.broker_id} did not exit within {timeout_s} s of SIGTERM:\n"
                               f"{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all (what was written stays in the page cache)."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: the process stays, its sockets and ZooKeeper session go silent."""
        if self.running:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def restart(self, timeout_s: float = 60.0) -> "BrokerProcess":
        """Start again on the same data directory and port."""
        return self.start(timeout_s)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:]) or "(no log)"


class ProcessCluster:
    """A ZooKeeper (private unless ``zookeeper`` names one) and ``brokers`` brokers."""

    def __init__(self, data_dir: os.PathLike, brokers: int = 3, *, racks: Optional[Sequence[str]] = None,
                 zookeeper: Optional[str] = None, chroot: str = "/pylog",
                 overrides: Optional[Mapping[str, object]] = None, zk_tick_time_ms: int = 500,
                 metrics: bool = True, log_level: str = "info",
                 advertised_listeners: Optional[Mapping[int, str]] = None,
                 listeners: Optional[str] = None, consoles: Optional[Mapping[int, str]] = None) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        if racks is not None and len(racks) != brokers:
            raise ValueError(f"racks must name one rack per broker ({brokers}), got {list(racks)}")
        self.data_dir = Path(data_dir)
        self.count = brokers
        self.racks = list(racks) if racks is not None else [f"rack-{i}" for i in range(1, brokers + 1)]
        self.chroot = chroot
        self.overrides = dict(overrides or {})
        self.metrics = metrics
        self.log_level = log_level
        #: broker id -> ``advertised.listeners`` of that broker (brokers not named
        #: advertise their listener).
        self.advertised_listeners: Dict[int, str] = dict(advertised_listeners or {})
        #: every broker's ``listeners`` (None: one PLAINTEXT listener), see BrokerProcess.
        self.listeners = listeners
        #: broker id -> ``--console HOST:PORT`` of that broker (the others serve none)
        self.consoles: Dict[int, str] = dict(consoles or {})
        self.zk_server = None
        self._zk_given = zookeeper
        self._zk_tick_time_ms = zk_tick_time_ms
        self.brokers: Dict[int, BrokerProcess] = {}

    @property
    def zookeeper(self) -> str:
        """``zookeeper.connect`` of this cluster (with its chroot)."""
        if self._zk_given is not None:
            base = self._zk_given
        else:
            assert self.zk_server is not None, "not started"
            base = self.zk_server.connect_string
        return base + self.chroot if "/" not in base else base

    @property
    def bootstrap(self) -> str:
        """The running brokers that are not paused (a paused one would hold a client's
        first request until it times out)."""
        return ",".join(b.bootstrap for b in self.brokers.values() if b.running and not b.paused)

    def start_zookeeper(self) -> None:
        """Start the private ZooKeeper (ZooKeeperServerError naming the Debian package
        when ZooKeeper or Java is not installed)."""
        if self._zk_given is not None:
            return
        from pylog.cluster.zkserver import ZooKeeperServer

        if self.zk_server is None:
            self.zk_server = ZooKeeperServer(self.data_dir / "zookeeper", tick_time_ms=self._zk_tick_time_ms)
        self.zk_server.start()

    def add_broker(self, broker_id: int, rack: Optional[str] = None, *, start: bool = True,
                   overrides: Optional[Mapping[str, object]] = None,
                   advertised_listeners: Optional[str] = None) -> BrokerProcess:
        """A new broker process (started unless ``start`` is False); ``advertised_listeners``
        as :class:`BrokerProcess` takes it (default: :attr:`advertised_listeners` of this
        cluster for ``broker_id``, else the listener itself)."""
        if broker_id in self.brokers:
            raise ValueError(f"broker {broker_id} exists")
        o = dict(self.overrides)
        o.update(overrides or {})
        if advertised_listeners is None:
            advertised_listeners = self.advertised_listeners.get(broker_id)
        b = BrokerProcess(broker_id, self.data_dir / f"broker-{broker_id}", self.zookeeper, rack=rack, overrides=o,
                          metrics=self.metrics, log_level=self.log_level,
                          advertised_listeners=advertised_listeners, listeners=self.listeners,
                          console=self.consoles.get(broker_id))
        self.brokers[broker_id] = b
        if start:
            b.start()
        return b

    def start(self) -> "ProcessCluster":
        """ZooKeeper first, then every broker (each waits for its registration)."""
        try:
            self.start_zookeeper()
            for i in range(1, self.count + 1):
                self.add_broker(i, self.racks[i - 1])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Every broker (SIGTERM, SIGKILL if needed), then the ZooKeeper; by PID."""
        errors = []
        for b in self.brokers.values():
            try:
                b.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
        for b in self.brokers.values():
            b.kill()
        if self.zk_server is not None:
            self.zk_server.stop()
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> "ProcessCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cluster_up(data_dir: str, brokers: int, racks: Optional[Sequence[str]], zookeeper: Optional[str],
                   overrides: Mapping[str, object], console: Optional[str] = None) -> int:
    """`pylog cluster up`: start, print where everything is, wait for Ctrl-C, stop.
    ``console``: broker 1 also serves the web console there."""
    from pylog.errors import PylogError

    cluster = ProcessCluster(data_dir, brokers, racks=racks, zookeeper=zookeeper, overrides=overrides,
                             zk_tick_time_ms=2000, consoles={1: console} if console else None)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster.start()
        except PylogError as exc:
            print(f"pylog cluster up: {exc}", file=sys.stderr)
            return 1
        except RuntimeError as exc:
            print(f"pylog cluster up: a broker did not start: {exc}", file=sys.stderr)
            return 1
        print(f"pylog cluster: zookeeper.connect {cluster.zookeeper}", flush=True)
        for b in cluster.brokers.values():
            print(f"pylog cluster: broker {b.broker_id} (rack {b.rack}) on {b.bootstrap}, "
                  f"metrics http://127.0.0.1:{b.metrics_port}/metrics, log {b.log_path}", flush=True)
        for b in cluster.brokers.values():
            if b.console_url:
                print(f"pylog cluster: console {b.console_url} (served by broker {b.broker_id})", flush=True)
        print(f"pylog cluster: bootstrap.servers={cluster.bootstrap}  (Ctrl-C stops everything)", flush=True)
        while not stop["now"]:
            for b in cluster.brokers.values():
                if not b.running:
                    print(f"pylog cluster: broker {b.broker_id} exited ({b.proc.returncode if b.proc else '?'}); "
                          f"see {b.log_path}", file=sys.stderr, flush=True)
                    stop["now"] = True
            time.sleep(0.2)
        print("pylog cluster: stopping", flush=True)
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        cluster.stop()
