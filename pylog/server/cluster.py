"""`pylog serve --zookeeper ...`: the server over a :class:`~pylog.cluster.node.ClusterNode`.

Builds the node's parts from the server's configuration: the metadata store on
ZooKeeper, the :class:`~pylog.server.replication.WireNetwork` that carries replication
as Kafka Fetch requests, and the registration (host, port, endpoints, rack) other
brokers and clients read once the listeners are bound.
"""
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Dict, Optional

from pylog.server.config import ServerConfig
from pylog.server.tls import build_client_context

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.server import KafkaServer

__all__ = ["open_cluster_node", "registration", "inter_broker_ssl_context"]


def open_cluster_node(config: ServerConfig, store: Optional[Any] = None) -> Any:
    """The ClusterNode for ``config`` (not started: :meth:`ClusterNode.start` registers it).

    ``store`` is a metadata store to use instead of ZooKeeper at zookeeper.connect: tests
    run several nodes in one process over one
    :class:`~pylog.cluster.metadata.InMemoryMetadataStore` (which has nothing to close,
    so closing one node leaves it to the others)."""
    from pylog.cluster.node import ClusterNode
    from pylog.server.replication import WireNetwork

    assert config.zookeeper_connect is not None
    cluster = dict(config.cluster_settings)
    session_ms = int(cluster.get("zookeeper.session.timeout.ms", 18_000))
    owned = store is None
    if store is None:
        from pylog.cluster.zookeeper import ZooKeeperMetadataStore

        # A store call that finds ZooKeeper away waits this long under the node's lock
        # before the step goes on without it (replication does not need ZooKeeper).  The
        # store's own client asks for the broker's session timeout, as Kafka's one
        # ZooKeeper client does: it also bounds a connection attempt that a starting
        # server accepted but never answers (kazoo waits session timeout / hosts).
        store = ZooKeeperMetadataStore(config.zookeeper_connect, operation_timeout_s=0.5,
                                       session_timeout_ms=session_ms, security=config.zookeeper_security)
    try:
        holder: Dict[str, Any] = {}
        network = WireNetwork(config.node_id, lambda b: holder["node"].address_of(b),
                              fetch_max_wait_ms=int(cluster.get("replica.fetch.wait.max.ms", 500)),
                              fetch_max_bytes=int(cluster.get("replica.fetch.max.bytes", 1 << 20)),
                              socket_timeout_ms=int(config.node_settings["replica.socket.timeout.ms"]),
                              ssl_context=inter_broker_ssl_context(config), sasl=config.inter_broker_sasl)
        settings = dict(config.broker_settings)
        settings.pop("broker.id", None)
        rack = settings.pop("broker.rack", None)
        settings.update(cluster)
        settings.setdefault("zookeeper.session.timeout.ms", session_ms)
        node = ClusterNode.open(list(config.all_log_dirs), config.node_id, store, rack=rack, network=network,
                                config=settings, default_replication_factor=config.default_replication_factor,
                                node_settings=config.node_settings)
        holder["node"] = node
    except BaseException:
        if owned:
            store.close()
        raise
    return node


def inter_broker_ssl_context(config: ServerConfig) -> Optional[ssl.SSLContext]:
    """The replica fetchers' client-side TLS context when the inter-broker listener is
    an SSL one (its ssl.* settings), else None."""
    name = config.inter_broker_listener_name
    if name is None or name not in config.tls:
        return None
    return build_client_context(config.tls[name])


def registration(server: "KafkaServer") -> Dict[str, Any]:
    """What this broker writes to ``/brokers/ids/<id>``: Kafka's fields.  ``host`` and
    ``port`` are the inter-broker listener's advertised address (the other brokers'
    replica fetchers connect there; the first listener's when none is named),
    ``endpoints`` every advertised listener, ``listener_security_protocol_map`` the
    security protocol of each of them."""
    cfg = server.config
    endpoints = []
    first = None
    inter = None
    pmap: Dict[str, str] = {}
    for configured, bound in server.bound:
        a = cfg.advertised_for(configured)
        port = a.port if a.port else bound.port
        host = a.host if a.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        endpoints.append(f"{a.name}://{host}:{port}")
        pmap[a.name] = configured.security_protocol
        if first is None:
            first = (host, port)
        if configured.name == cfg.inter_broker_listener_name:
            inter = (host, port)
    assert first is not None
    host, port = inter or first
    return {"host": host, "port": port, "endpoints": endpoints, "listener_security_protocol_map": pmap}
