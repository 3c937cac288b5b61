"""The replication throttle (Kafka's replication quotas, KIP-73), sans-I/O.

A broker limits the bytes of *throttled* replication: on the leader side, what it sends
to followers of the partitions listed for it in the topic config
``leader.replication.throttled.replicas`` ("partition:leader broker" pairs, or "*");
on the follower side, what it fetches for the partitions listed for it in
``follower.replication.throttled.replicas``.  The limits are the broker settings
``leader.replication.throttled.rate`` and ``follower.replication.throttled.rate``
(bytes per second; unset: no limit).  As in Kafka, a replica in the ISR is never
throttled: only replicas catching up are (a reassignment's new replicas, a broker back
from a long absence).

The rates are dynamic broker configuration, kept where Kafka's ZooKeeper mode keeps it:
``/config/brokers/<default>`` (every broker) and ``/config/brokers/<id>`` (one broker,
overriding the default), ``{"version": 1, "config": {name: "value"}}``; the kernel's
KernelConfig gives the static fallback.  :func:`set_replication_throttle` writes them;
a reassignment requested with a throttle sets and clears them itself (see
:mod:`pylog.cluster.controller`).

:class:`TokenBucket` is the limiter: it refills at the rate on the driver's ``now`` (no
clock is read), holds at most one second's worth, and lets one send through whenever it
is not in debt, however large (so a throttled replica always progresses, a batch at a
time, and the debt then delays the next send).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

from pylog.errors import BadVersion, InvalidConfig, NodeExists, NoNode
from pylog.util import check_int

__all__ = [
    "BROKER_CONFIG_PATH",
    "DEFAULT_BROKER_CONFIG_PATH",
    "FOLLOWER_THROTTLED_RATE",
    "LEADER_THROTTLED_RATE",
    "REASSIGNMENT_MARK",
    "ReplicationThrottle",
    "TokenBucket",
    "broker_config_path",
    "read_throttle_rates",
    "set_replication_throttle",
    "update_broker_config",
]

LEADER_THROTTLED_RATE = "leader.replication.throttled.rate"
FOLLOWER_THROTTLED_RATE = "follower.replication.throttled.rate"
BROKER_CONFIG_PATH = "/config/brokers"
DEFAULT_BROKER_CONFIG_PATH = "/config/brokers/<default>"
#: In a broker config node: the rates were set by a throttled reassignment, which clears
#: them once no throttled reassignment is left.
REASSIGNMENT_MARK = "set_by_reassignment"


def broker_config_path(broker_id: Optional[int] = None) -> str:
    """``/config/brokers/<id>``, or ``/config/brokers/<default>`` for None."""
    return DEFAULT_BROKER_CONFIG_PATH if broker_id is None else f"{BROKER_CONFIG_PATH}/{broker_id}"


def _rate(value: Any) -> Optional[int]:
    """A stored rate ("123" or 123) as a positive int; None if absent or unusable."""
    try:
        rate = int(value)
    except (TypeError, ValueError):
        return None
    return rate if rate > 0 else None


def _node_config(store: Any, path: str) -> Dict[str, Any]:
    try:
        data, _ = store.get(path)
    except NoNode:
        return {}
    config = data.get("config") if isinstance(data, dict) else None
    return config if isinstance(config, dict) else {}


def read_throttle_rates(store: Any, broker_id: int) -> Tuple[Optional[int], Optional[int]]:
    """``(leader rate, follower rate)`` in bytes/s for ``broker_id`` from the store (its
    own node first, then ``<default>``); None where neither sets one."""
    own = _node_config(store, broker_config_path(broker_id))
    default = _node_config(store, DEFAULT_BROKER_CONFIG_PATH)

    def pick(key: str) -> Optional[int]:
        return _rate(own[key]) if key in own else _rate(default.get(key))

    return pick(LEADER_THROTTLED_RATE), pick(FOLLOWER_THROTTLED_RATE)


def set_replication_throttle(store: Any, rate: Optional[int], *, broker_id: Optional[int] = None,
                             by_reassignment: bool = False) -> None:
    """Set both throttled rates (bytes/s) of ``broker_id`` (None: every broker, the
    ``<default>`` node) to ``rate``, or remove them with None (compare-and-set; other
    settings in the node are kept).  ``by_reassignment`` marks them as a reassignment's,
    to be cleared with it.  Raises InvalidConfig for a rate that is not a positive int."""
    if rate is not None:
        check_int("replication throttle rate (bytes/s)", rate, min=1, error=InvalidConfig)

    def change(node: Dict[str, Any]) -> None:
        config = node["config"]
        for key in (LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE):
            if rate is None:
                config.pop(key, None)
            else:
                config[key] = str(rate)
        if by_reassignment and rate is not None:
            node[REASSIGNMENT_MARK] = True
        else:
            node.pop(REASSIGNMENT_MARK, None)

    update_broker_config(store, broker_id, change)


def update_broker_config(store: Any, broker_id: Optional[int], change: Callable[[Dict[str, Any]], None]
                         ) -> Dict[str, Any]:
    """Compare-and-set the dynamic config node of ``broker_id`` (None: ``<default>``):
    ``change(node)`` edits a copy of the node, whose ``"config"`` is always a dict, and
    is called again if the node changed meanwhile.  Returns the config written."""
    path = broker_config_path(broker_id)
    while True:
        try:
            data, version = store.get(path)
        except NoNode:
            data, version = None, -1
        node = dict(data) if isinstance(data, dict) else {"version": 1}
        node["config"] = dict(node.get("config") or {})
        change(node)
        try:
            if version < 0:
                store.create(path, node)
            else:
                store.set(path, node, version)
            return node["config"]
        except (BadVersion, NodeExists, NoNode):
            continue  # changed meanwhile: read it again


class TokenBucket:
    """Bytes allowed at ``rate`` bytes/s, at most one second's worth saved up; a send may
    overdraw (the debt is paid back before the next one)."""

    def __init__(self, rate: int, now: int) -> None:
        check_int("rate", rate, min=1)
        self.rate = rate
        self.tokens = float(rate)
        self.last_ms = now

    def _refill(self, now: int) -> None:
        if now > self.last_ms:
            self.tokens = min(float(self.rate), self.tokens + (now - self.last_ms) * self.rate / 1000.0)
            self.last_ms = now

    def allowance(self, now: int) -> int:
        """Bytes that may go now (0: wait until :meth:`ready_at`)."""
        self._refill(now)
        return int(self.tokens) if self.tokens >= 1 else 0

    def consume(self, nbytes: int, now: int) -> None:
        """``nbytes`` went (possibly more than the allowance: a debt)."""
        self._refill(now)
        self.tokens -= nbytes

    def ready_at(self, now: int) -> int:
        """When at least one byte will be allowed again."""
        self._refill(now)
        if self.tokens >= 1:
            return now
        return now + max(1, math.ceil((1 - self.tokens) * 1000.0 / self.rate))

    def set_rate(self, rate: int, now: int) -> None:
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, float(rate))


class ReplicationThrottle:
    """One broker's two limiters: ``leader`` (bytes it sends to throttled followers) and
    ``follower`` (bytes it fetches for throttled replicas); None when unlimited."""

    def __init__(self) -> None:
        self.leader: Optional[TokenBucket] = None
        self.follower: Optional[TokenBucket] = None

    def configure(self, leader_rate: Optional[int], follower_rate: Optional[int], now: int) -> None:
        """Apply new rates (None: no limit), keeping a bucket's state when it stays."""
        self.leader = self._bucket(self.leader, leader_rate, now)
        self.follower = self._bucket(self.follower, follower_rate, now)

    @staticmethod
    def _bucket(bucket: Optional[TokenBucket], rate: Optional[int], now: int) -> Optional[TokenBucket]:
        if rate is None:
            return None
        if bucket is None:
            return TokenBucket(rate, now)
        if bucket.rate != rate:
            bucket.set_rate(rate, now)
        return bucket
