"""`pylog serve` settings: Kafka's server.properties names and defaults.

Settings come from, in increasing precedence: Kafka's defaults, a server.properties
file (``--config FILE``), ``--override KEY=VALUE`` and the dedicated options
(``--listeners``, ``--node-id``, ...).  They split in two:

* the server's own (listeners, advertised.listeners, socket.request.max.bytes,
  connections.max.idle.ms, queued.max.requests, metrics listener);
* everything else goes to :class:`~pylog.broker.config.BrokerConfig` (num.partitions,
  log.retention.*, group.*, offsets.*, ...), which refuses names it does not know.

Two broker defaults differ from an embedded :class:`~pylog.broker.Broker` and follow
Kafka instead, as a server's users expect: ``auto.create.topics.enable=true`` and
``group.initial.rebalance.delay.ms=3000``.

Keys of Kafka's own server.properties that have no meaning for pylog (thread pools,
socket buffer sizes, ...) are accepted and reported once at WARNING, so a Kafka
configuration file can be reused; an unknown key is an error (a typo should not pass).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from pylog.broker.config import BrokerConfig
from pylog.cluster.zksecurity import ZK_SECURITY_DEFAULTS, ZK_SECURITY_IGNORED, ZkSecurity
from pylog.errors import InvalidConfig
from pylog.security.sasl import DEFAULT_MECHANISMS, jaas_credentials, parse_mechanisms
from pylog.server.tls import SSL_DEFAULTS, SSL_IGNORED, TlsSettings, build_client_context, build_context
from pylog.storage.logdirs import parse_log_dirs

__all__ = ["ServerConfig", "Listener", "parse_properties", "parse_listeners", "parse_protocol_map",
           "DEFAULT_LISTENER", "DEFAULT_PROTOCOL_MAP"]

DEFAULT_LISTENER = "PLAINTEXT://127.0.0.1:9092"

#: Kafka server.properties keys pylog accepts but does not use (reported at WARNING).
IGNORED_KAFKA_KEYS = frozenset({
    "num.network.threads", "num.io.threads", "num.replica.fetchers", "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes", "socket.receive.buffer.bytes", "background.threads",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions", "offsets.topic.replication.factor",
    "log.flush.scheduler.interval.ms", "log.flush.offset.checkpoint.interval.ms",
    "zookeeper.connection.timeout.ms", "group.max.size", "delete.topic.enable",
    "inter.broker.protocol.version", "log.message.format.version", "confluent.support.metrics.enable",
})

#: Kafka's default listener.security.protocol.map.
DEFAULT_PROTOCOL_MAP: Dict[str, str] = {
    "PLAINTEXT": "PLAINTEXT", "SSL": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"}
SECURITY_PROTOCOLS = frozenset(DEFAULT_PROTOCOL_MAP.values())
#: Security protocols `pylog serve` serves.
SERVED_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
#: Security protocols whose connections authenticate with SASL first.
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
#: Security protocols that run over TLS.
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})

#: Replication and controller settings: used by a cluster node (``zookeeper.connect``
#: set); a single node has no followers and reports them once at WARNING.
CLUSTER_KEYS = frozenset({
    "replica.lag.time.max.ms", "zookeeper.session.timeout.ms", "replica.fetch.wait.max.ms",
    "replica.fetch.max.bytes", "replica.fetch.backoff.ms", "auto.leader.rebalance.enable",
    "unclean.leader.election.enable", "leader.imbalance.check.interval.seconds",
    "replica.high.watermark.checkpoint.interval.ms", "controlled.shutdown.enable",
    "controlled.shutdown.max.retries", "controlled.shutdown.retry.backoff.ms",
    "leader.replication.throttled.rate", "follower.replication.throttled.rate",
})
#: A cluster node's own keys (not the kernel's), with Kafka's defaults.
NODE_DEFAULTS: Dict[str, Any] = {
    "replica.socket.timeout.ms": 30_000,
}

#: The server's own keys, with Kafka's defaults.
SERVER_DEFAULTS: Dict[str, Any] = {
    "listeners": DEFAULT_LISTENER,
    "advertised.listeners": None,
    "socket.request.max.bytes": 104_857_600,
    "connections.max.idle.ms": 600_000,
    "queued.max.requests": 500,
    "max.connections": 2_147_483_647,
    "default.replication.factor": 1,
    "log.dirs": None,
    "log.dir": None,
    "listener.security.protocol.map": None,
    "inter.broker.listener.name": None,
    "security.inter.broker.protocol": None,
    "sasl.mechanism.inter.broker.protocol": None,
    # ACLs (see pylog.security.acl): enforcement is on when authorizer.class.name names
    # pylog's authorizer; allow.everyone.if.no.acl.found is false then (Kafka's default).
    "authorizer.class.name": "",
    "super.users": None,
    "allow.everyone.if.no.acl.found": False,
    # SASL (pylog.server.apis.sasl); Kafka's default mechanism list is GSSAPI, which
    # pylog does not support: its default is every mechanism it has.
    "sasl.enabled.mechanisms": DEFAULT_MECHANISMS,
    "connection.failed.authentication.delay.ms": 100,
    "connections.max.reauth.ms": 0,
    "sasl.server.max.receive.size": 524_288,
}

#: Broker defaults of a server that differ from an embedded Broker's (Kafka's values).
SERVER_BROKER_DEFAULTS: Dict[str, Any] = {
    "auto.create.topics.enable": True,
    "group.initial.rebalance.delay.ms": 3000,
}

_LISTENER_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s]*):(?P<port>\d+)$")


@dataclass(frozen=True)
class Listener:
    """One ``NAME://HOST:PORT`` entry and its security protocol (from
    listener.security.protocol.map: PLAINTEXT or SSL are served)."""

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def parse_protocol_map(value: Any) -> Dict[str, str]:
    """listener.security.protocol.map: ``NAME:PROTOCOL[,...]`` (None: Kafka's default)."""
    if value is None:
        return dict(DEFAULT_PROTOCOL_MAP)
    out: Dict[str, str] = {}
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, proto = item.partition(":")
        name, proto = name.strip().upper(), proto.strip().upper()
        if not sep or not re.match(r"^[A-Z_][A-Z0-9_]*$", name) or proto not in SECURITY_PROTOCOLS:
            raise InvalidConfig(f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL with PROTOCOL "
                                f"one of {', '.join(sorted(SECURITY_PROTOCOLS))}")
        if name in out and out[name] != proto:
            raise InvalidConfig(f"listener.security.protocol.map names {name} twice")
        out[name] = proto
    if not out:
        raise InvalidConfig("listener.security.protocol.map is empty")
    return out


def parse_listeners(value: str, what: str = "listeners",
                    protocol_map: Optional[Mapping[str, str]] = None) -> List[Listener]:
    """``NAME://HOST:PORT[,...]``, each name's security protocol from ``protocol_map``
    (Kafka's default map when None); InvalidConfig names the bad entry.  A SASL
    listener needs sasl.enabled.mechanisms (pylog's default has them all)."""
    pmap = DEFAULT_PROTOCOL_MAP if protocol_map is None else protocol_map
    if not isinstance(value, str) or not value.strip():
        raise InvalidConfig(f"{what} must be NAME://HOST:PORT[,...], got {value!r}")
    out = []
    for item in value.split(","):
        item = item.strip()
        m = _LISTENER_RE.match(item)
        if m is None:
            raise InvalidConfig(f"{what}: {item!r} is not NAME://HOST:PORT")
        name = m.group("name").upper()
        proto = pmap.get(name)
        if proto is None:
            raise InvalidConfig(f"{what}: {item!r}: listener.security.protocol.map has no security protocol "
                                f"for {name} (add {name}:PLAINTEXT or {name}:SSL)")
        if proto not in SERVED_PROTOCOLS:
            raise InvalidConfig(f"{what}: {item!r}: security protocol {proto} is not implemented")
        port = int(m.group("port"))
        if not 0 <= port <= 65535:
            raise InvalidConfig(f"{what}: port {port} of {item!r} is out of range")
        out.append(Listener(name, m.group("host").strip("[]"), port, proto))
    names = [x.name for x in out]
    if len(set((x.host, x.port) for x in out if x.port != 0)) != len([x for x in out if x.port != 0]):
        raise InvalidConfig(f"{what}: {value!r} lists the same address twice")
    if len(names) != len(set(names)):
        raise InvalidConfig(f"{what}: each listener name may appear once, got {value!r}")
    return out


def parse_properties(text: str, source: str = "server.properties") -> Dict[str, str]:
    """A Java properties file: ``key=value`` or ``key: value`` (or ``key value``)
    lines, ``#``/``!`` comments, backslash line continuations and escapes."""
    out: Dict[str, str] = {}
    logical: List[Tuple[int, str]] = []
    buf = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip() if not buf else raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        if not buf:
            start = lineno
        # a line continues when it ends in an odd number of backslashes
        stripped = line.rstrip("\r")
        n = len(stripped) - len(stripped.rstrip("\\"))
        if n % 2 == 1:
            buf += stripped[:-1]
            continue
        logical.append((start, buf + stripped))
        buf = ""
    if buf:
        logical.append((start, buf))
    for lineno, line in logical:
        m = re.match(r"^((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)$", line)
        if m is None:
            key, value = line.strip(), ""
        else:
            key, value = m.group(1), m.group(2)
        key = _unescape(key).strip()
        if not key:
            raise InvalidConfig(f"{source}:{lineno}: line has no key")
        out[key] = _unescape(value).strip()
    return out


def _unescape(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "u" and i + 5 < len(s) + 0 and re.match(r"[0-9a-fA-F]{4}", s[i + 2:i + 6]):
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _int(key: str, value: Any, low: int, high: int = 2**63 - 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InvalidConfig(f"{key} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not low <= v <= high:
        raise InvalidConfig(f"{key} must be in [{low}, {high}], got {value!r}")
    return v


def _inter_broker_listener(own: Mapping[str, Any], listeners: List[Listener], cluster: bool) -> Optional[str]:
    """inter.broker.listener.name, validated as Kafka does: it (or the listener named
    after security.inter.broker.protocol, PLAINTEXT by default; not both) must be one of
    the listeners.  A cluster's brokers replicate over it, in plaintext or over TLS (an
    SSL listener: the replica fetchers connect with its ssl.* settings)."""
    names = {x.name: x for x in listeners}
    explicit = own["inter.broker.listener.name"]
    by_protocol = own["security.inter.broker.protocol"]
    if explicit is not None and by_protocol is not None:
        raise InvalidConfig("inter.broker.listener.name and security.inter.broker.protocol are both set; "
                            "set only inter.broker.listener.name")
    if explicit is not None:
        name = str(explicit).strip().upper()
        if name not in names:
            raise InvalidConfig(f"inter.broker.listener.name={explicit} must name one of the listeners "
                                f"({', '.join(map(str, listeners))})")
    else:
        name = str(by_protocol or "PLAINTEXT").strip().upper()
        if name not in DEFAULT_PROTOCOL_MAP:
            raise InvalidConfig(f"security.inter.broker.protocol={by_protocol} is not one of "
                                f"{', '.join(sorted(DEFAULT_PROTOCOL_MAP))}")
        if name not in names:
            if not cluster and by_protocol is None:
                return None  # a single node: no inter-broker traffic
            raise InvalidConfig(f"no listener named {name} for inter-broker traffic: set "
                                "inter.broker.listener.name to one of the listeners "
                                f"({', '.join(map(str, listeners))})")
    return name


def _inter_broker_login(own: Mapping[str, Any], listener: Listener, mechanisms: Tuple[str, ...],
                        jaas: Mapping[Tuple[str, str], Tuple[str, Any]]) -> Any:
    """The replica fetchers' SASL login on a SASL inter-broker listener, as Kafka configures
    it: sasl.mechanism.inter.broker.protocol (one of the listener's enabled mechanisms;
    Kafka's default, GSSAPI, is not supported, so it must be set) and the user and password
    from ``listener.name.<listener>.<mechanism>.sasl.jaas.config`` (``... required
    username="..." password="...";``)."""
    from pylog.client.network.connection import SaslLogin

    mech = own["sasl.mechanism.inter.broker.protocol"]
    if not mech or not str(mech).strip():
        raise InvalidConfig(f"inter.broker.listener.name={listener.name} is a {listener.security_protocol} listener: "
                            "set sasl.mechanism.inter.broker.protocol (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) and "
                            f"listener.name.{listener.name.lower()}.<mechanism>.sasl.jaas.config")
    mech = str(mech).strip().upper()
    if mech not in mechanisms:
        raise InvalidConfig(f"sasl.mechanism.inter.broker.protocol={mech} is not enabled on listener {listener.name} "
                            f"({', '.join(mechanisms)})")
    key, value = jaas.get((listener.name, mech), (None, None))
    if value is None:
        raise InvalidConfig(f"the brokers log in to listener {listener.name} with {mech}: set "
                            f"listener.name.{listener.name.lower()}.{mech.lower()}.sasl.jaas.config to "
                            "'... required username=\"...\" password=\"...\";'")
    username, password = jaas_credentials(str(value))
    if not username or not password:
        raise InvalidConfig(f"{key}: needs username=\"...\" and password=\"...\" (the brokers' SASL user)")
    return SaslLogin(mech, username, password)


def _authorizer(own: Mapping[str, Any]) -> Tuple[str, FrozenSet[str], bool]:
    """authorizer.class.name, super.users, allow.everyone.if.no.acl.found, checked."""
    from pylog.errors import InvalidArgument
    from pylog.security.acl import AUTHORIZER_CLASS_NAMES, parse_super_users

    name = str(own["authorizer.class.name"] or "").strip()
    if name and name not in AUTHORIZER_CLASS_NAMES:
        raise InvalidConfig(f"authorizer.class.name={name}: pylog's authorizer is pylog.security.AclAuthorizer "
                            "(or leave it empty: no authorization)")
    try:
        supers = parse_super_users(own["super.users"])
    except InvalidArgument as exc:
        raise InvalidConfig(f"super.users: {exc} (principals separated by ';')") from None
    allow = own["allow.everyone.if.no.acl.found"]
    if isinstance(allow, str):
        if allow.strip().lower() not in ("true", "false"):
            raise InvalidConfig(f"allow.everyone.if.no.acl.found must be true or false, got {allow!r}")
        allow = allow.strip().lower() == "true"
    return name, supers, bool(allow)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `pylog serve` runs with; build it with :meth:`from_sources`."""

    data_dir: Path
    listeners: Tuple[Listener, ...]
    advertised_listeners: Tuple[Listener, ...]
    node_id: int
    broker: BrokerConfig
    broker_settings: Mapping[str, Any]  #: the Kafka names given to BrokerConfig
    socket_request_max_bytes: int = 104_857_600
    connections_max_idle_ms: int = 600_000
    queued_max_requests: int = 500
    max_connections: int = 2_147_483_647
    default_replication_factor: int = 1
    metrics_listener: Optional[Tuple[str, int]] = None
    ignored_keys: Tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: ZooKeeper's ``host:port[,host:port...][/chroot]``: this server is one broker of a
    #: cluster (None: a single node with its metadata in its data directory).
    zookeeper_connect: Optional[str] = None
    broker_rack: Optional[str] = None
    #: Replication and controller settings (Kafka names, see CLUSTER_KEYS).
    cluster_settings: Mapping[str, Any] = field(default_factory=dict)
    #: replica.socket.timeout.ms (Kafka's name).
    node_settings: Mapping[str, Any] = field(default_factory=lambda: dict(NODE_DEFAULTS))
    #: log.dirs (JBOD): every log directory, data_dir first (it also holds the broker's
    #: own files).  Empty means just data_dir.
    log_dirs: Tuple[Path, ...] = ()
    #: listener.security.protocol.map (Kafka's default when not set).
    security_protocol_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PROTOCOL_MAP))
    #: The listener other brokers replicate through (inter.broker.listener.name, else the
    #: listener named after security.inter.broker.protocol, PLAINTEXT by default); None
    #: on a single node without such a listener (it has no inter-broker traffic).
    inter_broker_listener_name: Optional[str] = None
    #: Each SSL and SASL_SSL listener's effective ssl.* settings (by listener name).
    tls: Mapping[str, TlsSettings] = field(default_factory=dict)
    #: How a cluster node talks to ZooKeeper: TLS, digest auth, znode ACLs
    #: (zookeeper.ssl.*, zookeeper.auth.digest, zookeeper.set.acl).
    zookeeper_security: ZkSecurity = field(default_factory=ZkSecurity)
    #: The replica fetchers' SASL login (a pylog.client.network.connection.SaslLogin) when
    #: the inter-broker listener is SASL_PLAINTEXT or SASL_SSL, else None.
    inter_broker_sasl: Any = None
    #: authorizer.class.name ("" = no authorization, everything allowed).
    authorizer_class_name: str = ""
    #: super.users (principals allowed everything).
    super_users: FrozenSet[str] = frozenset()
    allow_everyone_if_no_acl_found: bool = False
    #: Each SASL listener's enabled mechanisms (listener.name.<l>.sasl.enabled.mechanisms,
    #: else sasl.enabled.mechanisms), by listener name.
    sasl_mechanisms: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    #: connection.failed.authentication.delay.ms: a failed authentication is answered
    #: (and its connection closed) this much later.
    failed_authentication_delay_ms: int = 100
    #: connections.max.reauth.ms (KIP-368): 0 is off, else a SASL session lasts this long
    #: and must re-authenticate before.
    connections_max_reauth_ms: int = 0
    #: sasl.server.max.receive.size: the largest frame before authentication.
    sasl_server_max_receive_size: int = 524_288

    @property
    def all_log_dirs(self) -> Tuple[Path, ...]:
        return self.log_dirs or (self.data_dir,)

    @classmethod
    def from_sources(cls, *, data_dir: Optional[str] = None, config_file: Optional[str] = None,
                     overrides: Optional[Mapping[str, str]] = None, listeners: Optional[str] = None,
                     advertised_listeners: Optional[str] = None, node_id: Optional[int] = None,
                     metrics_listener: Optional[str] = None, zookeeper: Optional[str] = None,
                     rack: Optional[str] = None) -> "ServerConfig":
        """Merge the sources (see the module docstring).  InvalidConfig names the key."""
        settings: Dict[str, Any] = {}
        if config_file is not None:
            try:
                text = Path(config_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidConfig(f"cannot read --config {config_file}: {exc.strerror or exc}") from None
            settings.update(parse_properties(text, config_file))
        settings.update(overrides or {})
        if listeners is not None:
            settings["listeners"] = listeners
        if advertised_listeners is not None:
            settings["advertised.listeners"] = advertised_listeners
        if node_id is not None:
            settings["node.id"] = node_id
        if zookeeper is not None:
            settings["zookeeper.connect"] = zookeeper
        if rack is not None:
            settings["broker.rack"] = rack
        return cls.from_settings(settings, data_dir=data_dir, metrics_listener=metrics_listener)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, data_dir: Optional[str] = None,
                      metrics_listener: Optional[str] = None) -> "ServerConfig":
        own = dict(SERVER_DEFAULTS)
        broker: Dict[str, Any] = dict(SERVER_BROKER_DEFAULTS)
        ignored: List[str] = []
        node: Optional[int] = None
        zk: Optional[str] = None
        rack: Optional[str] = None
        cluster: Dict[str, Any] = {}
        node_settings: Dict[str, Any] = dict(NODE_DEFAULTS)
        offsets_rf: Any = None
        ssl_settings: Dict[str, Any] = {}
        zk_security: Dict[str, Any] = {}
        sasl_settings: Dict[str, Tuple[str, Any]] = {}  # listener name -> (key, mechanisms)
        jaas_settings: Dict[Tuple[str, str], Tuple[str, Any]] = {}  # (listener, mechanism) -> (key, value)
        for key, value in settings.items():
            if key in ("node.id", "broker.id"):
                v = _int(key, value, 0, 2**31 - 1)
                if node is not None and v != node:
                    raise InvalidConfig(f"node.id ({node}) and broker.id ({v}) disagree")
                node = v
            elif key == "zookeeper.connect":
                if not isinstance(value, str) or not value.strip():
                    raise InvalidConfig(f"zookeeper.connect must be HOST:PORT[,HOST:PORT...][/chroot], got {value!r}")
                zk = value.strip()
            elif key == "broker.rack":
                if value is not None and (not isinstance(value, str) or not value.strip()):
                    raise InvalidConfig(f"broker.rack must be a non-empty name, got {value!r}")
                rack = value.strip() if value is not None else None
                broker["broker.rack"] = rack
            elif key in CLUSTER_KEYS:
                cluster[key] = value
            elif key in ZK_SECURITY_DEFAULTS:
                zk_security[key] = value
            elif key in NODE_DEFAULTS:
                node_settings[key] = value
            elif key == "offsets.topic.replication.factor":
                offsets_rf = value
            elif key in own:
                own[key] = value
            elif key in IGNORED_KAFKA_KEYS or key in SSL_IGNORED or key in ZK_SECURITY_IGNORED:
                ignored.append(key)
            elif key in SSL_DEFAULTS:
                ssl_settings[key] = value
            elif key.lower().startswith("listener.name."):
                rest = key[len("listener.name."):]
                _lname, dot, sub = rest.partition(".")
                if not dot or not _lname:
                    raise InvalidConfig(f"{key}: a per-listener setting is listener.name.<listener>.<setting>")
                if sub in SSL_DEFAULTS:
                    ssl_settings[key] = value
                elif sub in SSL_IGNORED:
                    ignored.append(key)
                elif sub == "sasl.enabled.mechanisms":
                    sasl_settings[_lname.upper()] = (key, value)
                elif sub.lower().endswith(".sasl.jaas.config") and sub.count(".") == 3:
                    jaas_settings[(_lname.upper(), sub.split(".", 1)[0].upper())] = (key, value)
                else:
                    raise InvalidConfig(f"{key}: only ssl.* settings and sasl.enabled.mechanisms can be set per "
                                        "listener in pylog (SASL credentials come from `pylog users`, not from "
                                        "sasl.jaas.config)")
            else:
                broker[key] = value
        node = 0 if node is None else node
        broker["broker.id"] = node
        if zk is not None:
            if offsets_rf is not None:
                broker["offsets.topic.replication.factor"] = offsets_rf
            node_settings["replica.socket.timeout.ms"] = _int(
                "replica.socket.timeout.ms", node_settings["replica.socket.timeout.ms"], 1, 2**31 - 1)

        else:
            ignored.extend(k for k in zk_security if k not in ignored)
            zk_security = {}
            ignored.extend(k for k in cluster if k not in ignored)
            ignored.extend(k for k in settings if k in NODE_DEFAULTS and k not in ignored)
            if offsets_rf is not None:
                ignored.append("offsets.topic.replication.factor")
            cluster = {}
        try:
            bcfg = BrokerConfig.from_settings(broker)
        except InvalidConfig as exc:
            raise InvalidConfig(f"{exc} (a server key, or a broker/topic default such as num.partitions, "
                                "log.retention.ms, group.initial.rebalance.delay.ms)") from None
        pmap = parse_protocol_map(own["listener.security.protocol.map"])
        lst = parse_listeners(str(own["listeners"]), "listeners", pmap)
        adv_raw = own["advertised.listeners"]
        adv = parse_listeners(str(adv_raw), "advertised.listeners", pmap) if adv_raw else lst
        for a in adv:
            if a.host in ("", "0.0.0.0", "::"):
                raise InvalidConfig(f"advertised.listeners: {a} is not an address clients can connect to; "
                                    "set advertised.listeners to the host name clients should use")
            if a.name not in {x.name for x in lst}:
                raise InvalidConfig(f"advertised.listeners: {a} names no listener of listeners "
                                    f"({', '.join(map(str, lst))})")
        inter = _inter_broker_listener(own, lst, zk is not None)
        tls = {x.name: TlsSettings.resolve(x.name, ssl_settings) for x in lst if x.security_protocol in TLS_PROTOCOLS}
        default_mechanisms = parse_mechanisms(own["sasl.enabled.mechanisms"])
        sasl = {}
        for x in lst:
            if x.security_protocol in SASL_PROTOCOLS:
                key, value = sasl_settings.get(x.name, ("sasl.enabled.mechanisms", None))
                sasl[x.name] = default_mechanisms if value is None else parse_mechanisms(value, key)
        inter_login = None
        if zk is not None and inter in sasl:
            inter_login = _inter_broker_login(own, next(x for x in lst if x.name == inter), sasl[inter], jaas_settings)
        for (lname, _mech), (key, _value) in jaas_settings.items():
            if inter_login is None or lname != inter or _mech != inter_login.mechanism:
                raise InvalidConfig(f"{key}: pylog reads sasl.jaas.config only for the brokers' own login on the "
                                    "inter-broker listener (clients' credentials come from `pylog users`)")
        for t in tls.values():
            build_context(t)  # missing files, wrong password, ...: refused now, not at the first client
        if zk is not None and inter in tls:
            build_client_context(tls[inter])  # the replica fetchers' side of the same settings
        authorizer, super_users, allow_everyone = _authorizer(own)
        rf = _int("default.replication.factor", own["default.replication.factor"], 1, 32767)
        if rf != 1 and zk is None:
            raise InvalidConfig(f"default.replication.factor={rf}: a single `pylog serve` node holds one replica "
                                "(a cluster on ZooKeeper, --zookeeper, can hold more)")
        # log.dirs (JBOD); --data-dir, when given, is the first of them (it holds the
        # broker's own files) and log.dirs adds the others.
        dirs = own["log.dirs"] or own["log.dir"]
        listed = parse_log_dirs(str(dirs)) if dirs else []
        if data_dir is not None:
            first = parse_log_dirs(data_dir)
            log_dirs = first + [d for d in listed if os.path.abspath(d) not in {os.path.abspath(f) for f in first}]
        else:
            log_dirs = listed or [Path("pylog-data")]
        data_dir = str(log_dirs[0])
        metrics = None
        if metrics_listener is not None:
            m = re.match(r"^(?:https?://)?(\[[0-9a-fA-F:.]+\]|[^:/\s]+):(\d+)/?$", metrics_listener.strip())
            if m is None:
                raise InvalidConfig(f"--metrics-listener must be HOST:PORT, got {metrics_listener!r}")
            metrics = (m.group(1).strip("[]"), _int("metrics listener port", m.group(2), 0, 65535))
        return cls(
            data_dir=Path(data_dir), listeners=tuple(lst), advertised_listeners=tuple(adv), node_id=node,
            broker=bcfg, broker_settings=broker,
            socket_request_max_bytes=_int("socket.request.max.bytes", own["socket.request.max.bytes"], 1024, 2**31 - 1),
            connections_max_idle_ms=_int("connections.max.idle.ms", own["connections.max.idle.ms"], -1),
            queued_max_requests=_int("queued.max.requests", own["queued.max.requests"], 1, 2**31 - 1),
            max_connections=_int("max.connections", own["max.connections"], 1, 2**31 - 1),
            default_replication_factor=rf, metrics_listener=metrics, ignored_keys=tuple(sorted(ignored)),
            zookeeper_connect=zk, broker_rack=rack, cluster_settings=cluster, node_settings=node_settings,
            log_dirs=tuple(log_dirs), security_protocol_map=pmap, inter_broker_listener_name=inter, tls=tls,
            zookeeper_security=ZkSecurity.from_settings(zk_security), inter_broker_sasl=inter_login,
            authorizer_class_name=authorizer, super_users=super_users,
            allow_everyone_if_no_acl_found=allow_everyone,
            sasl_mechanisms=sasl,
            failed_authentication_delay_ms=_int("connection.failed.authentication.delay.ms",
                                                own["connection.failed.authentication.delay.ms"], 0, 2**31 - 1),
            connections_max_reauth_ms=_int("connections.max.reauth.ms", own["connections.max.reauth.ms"], 0),
            sasl_server_max_receive_size=_int("sasl.server.max.receive.size", own["sasl.server.max.receive.size"],
                                              1024, 2**31 - 1))

    def listener_named(self, name: str) -> Listener:
        for x in self.listeners:
            if x.name == name:
                return x
        raise KeyError(name)

    def advertised_for(self, listener: Listener) -> Listener:
        """The advertised address of the listener a client connected to (same name)."""
        for a in self.advertised_listeners:
            if a.name == listener.name:
                return a
        return self.advertised_listeners[0]
