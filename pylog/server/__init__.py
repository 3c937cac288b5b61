"""`pylog serve`: a broker that speaks Kafka's wire protocol.

Layers (docs/architecture.md): :mod:`.connection` moves bytes, :mod:`.apis` answers
requests through :class:`~pylog.broker.interface.BrokerInterface`, :mod:`.server`
owns listeners and shutdown, :mod:`.config` reads server.properties, :mod:`.metrics`
serves Prometheus.  :func:`run` is what the command line calls.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Callable, List, Optional

from pylog.server.config import Listener, ServerConfig
from pylog.server.server import KafkaServer

__all__ = ["KafkaServer", "ServerConfig", "Listener", "run", "new_event_loop"]

log = logging.getLogger("pylog.server")


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """An event loop: uvloop when installed (``auto``) or asked for, else asyncio's."""
    if kind not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop must be auto, uvloop or asyncio, got {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(config: ServerConfig, *, event_loop: str = "auto",
        on_ready: Optional[Callable[[KafkaServer], None]] = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down in order; returns the exit code.
    SIGHUP reloads the SSL listeners' key, certificates and trust store.

    Raises StorageError when another process has the data directory, OSError when a
    listener cannot bind."""
    from pylog.broker import Broker

    for key in config.ignored_keys:
        log.warning("%s has no effect in pylog (accepted for compatibility with Kafka's server.properties)", key)
    _raise_open_files_limit()
    loop = new_event_loop(event_loop)
    asyncio.set_event_loop(loop)
    if config.zookeeper_connect is not None:
        from pylog.server.cluster import open_cluster_node

        broker = open_cluster_node(config)
    else:
        broker = Broker.open(list(config.all_log_dirs), dict(config.broker_settings))
    server: Optional[KafkaServer] = None
    try:
        server = KafkaServer(config, broker, loop)
        loop.run_until_complete(server.start())
        start = getattr(broker, "start", None)
        if start is not None:  # a cluster node registers once its listeners are bound
            from pylog.server.cluster import registration

            loop.run_until_complete(loop.run_in_executor(None, start, registration(server)))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Kafka reloads certificates through dynamic configs; pylog on SIGHUP
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
        log.info("pylog %s serving %s (node %d, cluster %s) on %s, event loop %s",
                 _version(), config.data_dir, config.node_id, broker.cluster_id, ", ".join(server.addresses()),
                 type(loop).__module__.split(".")[0])
        if on_ready is not None:
            on_ready(server)
        loop.run_until_complete(stop.wait())
        log.info("shutting down")
        shutdown = getattr(broker, "controlled_shutdown", None)
        if shutdown is not None:  # move leaderships away while still serving
            loop.run_until_complete(loop.run_in_executor(None, shutdown))
            loop.run_until_complete(server.drain_clients())
        loop.run_until_complete(server.stop())
    finally:
        if server is not None and not server._stopping:
            loop.run_until_complete(server.stop())
        broker.close()
        loop.close()
        asyncio.set_event_loop(None)
    log.info("stopped cleanly")
    return 0


def _raise_open_files_limit() -> None:
    """Every connection and segment file is a descriptor: take the hard limit (as
    Kafka's packaging asks operators to raise ulimit -n)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError) as exc:  # not fatal: fewer connections
        log.warning("could not raise the open files limit: %s", exc)


def _version() -> str:
    import pylog

    return pylog.__version__


def print_ready(server: KafkaServer) -> None:
    """The line `pylog serve` prints on stdout when it accepts connections."""
    lines: List[str] = [f"pylog serve: listening on {', '.join(server.addresses())}"]
    if server.metrics_address is not None:
        host, port = server.metrics_address
        lines.append(f"pylog serve: metrics on http://{host}:{port}/metrics")
    print("\n".join(lines), flush=True)

