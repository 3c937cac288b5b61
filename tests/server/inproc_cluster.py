"""Several `pylog serve` brokers in one test process: ClusterNode + KafkaServer pairs over
one InMemoryMetadataStore, each server on an event loop of its own thread, listening on
loopback ports the system picks.

Each broker is built the way `pylog serve --zookeeper` builds it
(:func:`pylog.server.cluster.open_cluster_node`, with the shared in-memory store in
place of ZooKeeper): its server binds first, then the node registers with the
server's address.  :meth:`InProcessCluster.close` stops every broker still running, in
the order `pylog serve` shuts down (server, then node), also when a test failed.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from pylog.cluster.metadata import InMemoryMetadataStore
from pylog.server.cluster import open_cluster_node, registration
from pylog.server.config import ServerConfig
from pylog.server.server import KafkaServer
from tests.zk import wait_until as _wait_until

__all__ = ["InProcessCluster", "RunningBroker", "FAST_CLUSTER", "wait_until"]

#: Quick failure detection and small files; consumer sessions may be short.
FAST_CLUSTER: Dict[str, str] = {
    "replica.lag.time.max.ms": "3000",
    "zookeeper.session.timeout.ms": "6000",
    "group.min.session.timeout.ms": "1000",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "6",
    "offsets.topic.segment.bytes": str(1 << 20),
    "log.segment.bytes": str(1 << 20),
}
#: Upper bound for a condition other threads must bring about (never a timing claim).
WAIT_S = 60.0


def wait_until(cond: Callable[[], Any], what: str, timeout_s: float = WAIT_S, interval_s: float = 0.05) -> Any:
    """:func:`tests.zk.wait_until` with this harness's bound."""
    return _wait_until(cond, what, timeout_s, interval_s)


class RunningBroker:
    """One broker: its node, its server and the loop thread the server runs on."""

    def __init__(self, broker_id: int, node: Any, server: KafkaServer, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self.broker_id = broker_id
        self.node = node
        self.server = server
        self.loop = loop
        self.thread = thread
        self.stopped = False

    @property
    def port(self) -> int:
        return self.server.bound[0][1].port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop as `pylog serve` does: the server (connections answered and closed),
        then the node (its registration goes, so the controller moves its leaderships)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(WAIT_S)
        finally:
            try:
                self.node.close()
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(WAIT_S)
                if not self.thread.is_alive():
                    self.loop.close()


class InProcessCluster:
    """Brokers 1..n started with :meth:`start`; see the module docstring."""

    def __init__(self, root: Path, overrides: Optional[Mapping[str, str]] = None) -> None:
        self.root = Path(root)
        self.store = InMemoryMetadataStore()
        self.overrides = dict(FAST_CLUSTER if overrides is None else overrides)
        self.brokers: Dict[int, RunningBroker] = {}

    def start(self, broker_id: int) -> RunningBroker:
        """Start broker ``broker_id`` (rack r<id>) and wait until it is registered."""
        config = ServerConfig.from_sources(
            data_dir=str(self.root / f"broker-{broker_id}"), listeners="PLAINTEXT://127.0.0.1:0",
            node_id=broker_id, zookeeper="in-process:2181", rack=f"r{broker_id}", overrides=self.overrides)
        node = open_cluster_node(config, store=self.store)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"test-broker-{broker_id}", daemon=True)
        thread.start()

        async def serve() -> KafkaServer:
            server = KafkaServer(config, node, loop)  # made on its loop's thread, as `pylog serve` does
            await server.start()
            return server

        try:
            server = asyncio.run_coroutine_threadsafe(serve(), loop).result(WAIT_S)
        except BaseException:
            node.close()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT_S)
            raise
        broker = RunningBroker(broker_id, node, server, loop, thread)
        self.brokers[broker_id] = broker
        node.start(registration(server))
        return broker

    def running(self) -> List[RunningBroker]:
        return [b for _, b in sorted(self.brokers.items()) if not b.stopped]

    @property
    def bootstrap(self) -> str:
        """Every running broker's address (a Kafka client's bootstrap.servers)."""
        return ",".join(b.bootstrap for b in self.running())

    def close(self) -> None:
        """Stop every running broker (each even if another fails; the first error is raised)."""
        errors: List[BaseException] = []
        for b in self.running():
            try:
                b.stop()
            except BaseException as exc:  # noqa: B902 - the others must stop too
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> "InProcessCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
