"""The console's sampler: one look at the whole cluster per second.

:class:`Collector` runs a thread that, every ``interval_s``:

1. asks Metadata (brokers, racks, controller, every topic's partitions, leaders,
   replicas, ISR) through an :class:`~pylog.client.network.AdminClient`;
2. every ten samples, asks each broker's ``metrics.listener`` and every topic's
   ``min.insync.replicas`` (DescribeConfigs);
3. scrapes every broker's ``/metrics`` and ``/events`` at once (a broker that does not
   answer within the interval is marked, not waited for);
4. turns counters into rates and adds one tick to the :class:`~pylog.console.history.History`.

Pages render from the newest :class:`Snapshot` (built whole, then swapped in), so a
page never waits for the cluster and costs the same however often it is asked for.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from pylog.client.network.admin import AdminClient, TopicDescription
from pylog.console.history import History, Rates
from pylog.console.scrape import BrokerMetrics, fetch_events, scrape
from pylog.errors import PylogError

__all__ = ["Collector", "Snapshot", "BrokerState", "EVENT_KINDS"]

log = logging.getLogger("pylog.console")

#: The kinds of broker events the console shows (docs/console.md).
EVENT_KINDS = ("isr_shrink", "isr_expand", "election_clean", "election_unclean", "partition_offline",
               "broker_join", "broker_leave", "loss", "skew")
_TRAFFIC = ("bytes_in", "bytes_out", "records_in", "records_out")
_CONFIG_EVERY = 10  # samples between DescribeConfigs rounds
_MAX_EVENTS = 2000


@dataclass
class BrokerState:
    """A broker as the console last saw it."""

    id: int
    host: Optional[str]
    port: Optional[int]
    rack: Optional[str]
    online: bool
    controller: bool
    metrics_address: Optional[str] = None
    #: why its metrics are missing (no listener, did not answer), None when they are there
    metrics_error: Optional[str] = None


@dataclass
class Snapshot:
    """The cluster at ``time_ms`` (module docstring).  ``partitions`` holds the leader's
    metrics row of each partition (PARTITION_FIELDS names), ``lag`` the group lags
    their coordinators report."""

    time_ms: int
    cluster_id: Optional[str] = None
    controller_id: int = -1
    brokers: Dict[int, BrokerState] = field(default_factory=dict)
    topics: Dict[str, TopicDescription] = field(default_factory=dict)
    min_isr: Dict[str, int] = field(default_factory=dict)
    partitions: Dict[Tuple[str, int], Dict[str, float]] = field(default_factory=dict)
    lag: Dict[Tuple[str, str, int], float] = field(default_factory=dict)
    error: Optional[str] = None

    def partition_topics(self) -> Set[str]:
        """Topics the brokers' metrics name (a sampler with a less privileged login may not
        see them all in Metadata)."""
        return {t for t, _ in self.partitions}


def partition_key(topic: str, partition: int, what: str) -> str:
    """The History key of a partition's series (``what``: records_in, bytes_in, ...)."""
    return f"p\x00{topic}\x00{partition}\x00{what}"


def broker_key(broker: int, what: str) -> str:
    return f"b\x00{broker}\x00{what}"


def lag_key(group: str, topic: str, partition: int) -> str:
    return f"g\x00{group}\x00{topic}\x00{partition}"


class Collector:
    """Samples the cluster through ``admin`` (see the module docstring).  ``start()``
    runs the thread; ``sample_once()`` takes one sample now (tests, the first page)."""

    def __init__(self, admin_factory: Callable[[], AdminClient], *, interval_s: float = 1.0,
                 history: Optional[History] = None, clock: Callable[[], float] = time.time) -> None:
        self._admin_factory = admin_factory
        self._admin: Optional[AdminClient] = None
        self.interval_s = interval_s
        self.history = history if history is not None else History()
        self._clock = clock
        self._rates = Rates()
        self._lock = threading.Lock()
        self._snapshot = Snapshot(time_ms=0, error="no sample taken yet")
        self._known: Dict[int, BrokerState] = {}
        self._metrics_addr: Dict[int, Optional[str]] = {}
        self._min_isr: Dict[str, int] = {}
        self._samples = 0
        self._last_tick = 0
        self._events: Deque[Dict[str, Any]] = collections.deque(maxlen=_MAX_EVENTS)
        self._event_keys: Set[Tuple[Any, int, str]] = set()
        self._event_after: Dict[int, int] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pylog-console-scrape")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._first = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Collector":
        self._thread = threading.Thread(target=self._run, name="pylog-console-sampler", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def wait_first(self, timeout_s: float) -> bool:
        """Wait until the first sample was taken (or failed)."""
        return self._first.wait(timeout_s)

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def events(self) -> List[Dict[str, Any]]:
        """Every broker's events the console has seen, oldest first."""
        with self._lock:
            return list(self._events)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # never let the sampler die: the next second tries again
                log.exception("console sample failed")
            self._first.set()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow cluster): skip, do not burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    # ------------------------------------------------------------------ one sample
    def _client(self) -> AdminClient:
        if self._admin is None:
            self._admin = self._admin_factory()
        return self._admin

    def sample_once(self) -> Snapshot:
        now_ms = int(self._clock() * 1000)
        interval_ms = int(self.interval_s * 1000)
        if self._last_tick and now_ms - self._last_tick > 2.5 * interval_ms:
            # samples were missed (the cluster answered slowly): a gap, not a straight line
            self.history.tick(self._last_tick + interval_ms, {})
        self._last_tick = now_ms
        snap = Snapshot(time_ms=now_ms)
        try:
            admin = self._client()
            cluster = admin.describe_cluster()
            topics = admin.describe_topics(None, include_internal=True)
        except PylogError as exc:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
            prev = self.snapshot
            snap = Snapshot(time_ms=now_ms, cluster_id=prev.cluster_id, controller_id=-1,
                            brokers={b: BrokerState(s.id, s.host, s.port, s.rack, False, False, s.metrics_address,
                                                    "cluster unreachable") for b, s in prev.brokers.items()},
                            topics=prev.topics, min_isr=prev.min_isr, error=f"cannot reach the cluster: {exc}")
            self.history.tick(now_ms, {})
            with self._lock:
                self._snapshot = snap
            return snap
        snap.cluster_id = cluster.cluster_id
        snap.controller_id = cluster.controller_id
        snap.topics = dict(topics)
        live = {b.node_id: b for b in cluster.brokers}
        for b in live.values():
            before = self._known.get(b.node_id)
            if before is not None and not before.online:  # back: its event numbers start again
                self._event_after.pop(b.node_id, None)
            self._known[b.node_id] = BrokerState(b.node_id, b.host, b.port, b.rack, True, False)
        for bid, st in self._known.items():
            if bid not in live:
                st.online = False
        for t in topics.values():  # a replica on a broker never seen live is a broker too
            for p in t.partitions:
                for r in p.replicas:
                    if r not in self._known:
                        self._known[r] = BrokerState(r, None, None, None, False, False)
        for bid, st in self._known.items():
            snap.brokers[bid] = BrokerState(st.id, st.host, st.port, st.rack, bid in live,
                                            bid == cluster.controller_id)
        if self._samples % _CONFIG_EVERY == 0 or any(b not in self._metrics_addr for b in live):
            self._refresh_configs(admin, live, snap.topics)
        self._samples += 1
        snap.min_isr = {t: self._min_isr.get(t, 1) for t in snap.topics}
        for t in list(self._min_isr):
            if t not in snap.topics:
                del self._min_isr[t]
        self._scrape(snap, now_ms)
        with self._lock:
            self._snapshot = snap
        return snap

    def _refresh_configs(self, admin: AdminClient, live: Dict[int, Any], topics: Dict[str, Any]) -> None:
        for bid in live:
            try:
                cfg = admin.describe_configs(str(bid), resource_type="broker", keys=["metrics.listener"])
                entry = cfg.get(str(bid), {}).get("metrics.listener")
                self._metrics_addr[bid] = entry.value if entry is not None and entry.value else None
            except PylogError as exc:
                log.info("console: DescribeConfigs of broker %d failed: %s", bid, exc)
                self._metrics_addr.setdefault(bid, None)
        names = sorted(topics)
        if names:
            try:
                cfgs = admin.describe_configs(names, keys=["min.insync.replicas"])
                for t, c in cfgs.items():
                    e = c.get("min.insync.replicas")
                    if e is not None and e.value is not None and str(e.value).isdigit():
                        self._min_isr[t] = int(e.value)
            except PylogError as exc:
                log.info("console: DescribeConfigs of topics failed: %s", exc)

    def _scrape(self, snap: Snapshot, now_ms: int) -> None:
        jobs: Dict[int, Tuple[Any, Any]] = {}
        for bid, st in snap.brokers.items():
            addr = self._metrics_addr.get(bid)
            st.metrics_address = addr
            if not st.online:
                st.metrics_error = "offline"
                continue
            if addr is None:
                st.metrics_error = "no metrics listener"
                continue
            after = self._event_after.get(bid, 0)
            jobs[bid] = (self._pool.submit(scrape, addr, self.interval_s * 2),
                         self._pool.submit(fetch_events, addr, after, self.interval_s * 2))
        got: Dict[int, BrokerMetrics] = {}
        deadline = time.monotonic() + max(0.2, self.interval_s * 0.9)
        for bid, (fm, fe) in jobs.items():
            st = snap.brokers[bid]
            try:
                got[bid] = fm.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                st.metrics_error = "metrics did not answer in time"
            except PylogError as exc:
                st.metrics_error = str(exc)
            try:
                self._add_events(bid, fe.result(timeout=max(0.0, deadline - time.monotonic())))
            except (concurrent.futures.TimeoutError, PylogError):
                pass
        # the leader's row of each partition (its traffic and offsets are the partition's)
        counters: Dict[str, float] = {}
        times: Dict[str, int] = {}  # when each counter was read (rates over the true interval)
        for (topic, p), row in self._rows(snap, got).items():
            snap.partitions[(topic, p)] = row
            leader = int(row.get("_from", -1))
            read_ms = got[leader].time_ms if leader in got and got[leader].time_ms else now_ms
            for what in ("records_in", "bytes_in", "records_out", "bytes_out"):
                if what in row:
                    key = f"{leader}\x00{partition_key(topic, p, what)}"
                    counters[key] = row[what]
                    times[key] = read_ms
        for bid, m in got.items():
            for what in _TRAFFIC:
                if what in m.totals:
                    key = f"{bid}\x00{broker_key(bid, what)}"
                    counters[key] = m.totals[what]
                    times[key] = m.time_ms or now_ms
            for k, v in m.lag.items():
                snap.lag[k] = v
        rates = self._rates.update(now_ms, counters, times)
        values: Dict[str, Optional[float]] = {k.split("\x00", 1)[1]: v for k, v in rates.items()}
        for (g, t, p), v in snap.lag.items():
            values[lag_key(g, t, p)] = v
        self.history.tick(now_ms, values)

    @staticmethod
    def _rows(snap: Snapshot, got: Dict[int, BrokerMetrics]) -> Dict[Tuple[str, int], Dict[str, float]]:
        """Each partition's metrics row: its leader's (per Metadata); for a partition the
        sampler's Metadata does not show, the row with the highest log end."""
        out: Dict[Tuple[str, int], Dict[str, float]] = {}
        for t in snap.topics.values():
            for p in t.partitions:
                key = (t.name, p.partition)
                m = got.get(p.leader)
                row = m.partitions.get(key) if m is not None else None
                if row is not None:
                    r = dict(row)
                    r["_from"] = p.leader
                    out[key] = r
        for bid, m in got.items():
            for key, row in m.partitions.items():
                if key[0] in snap.topics:
                    continue
                best = out.get(key)
                if best is None or row.get("log_end", -1) > best.get("log_end", -1):
                    r = dict(row)
                    r["_from"] = bid
                    out[key] = r
        return out

    def _add_events(self, broker: int, events: List[Dict[str, Any]]) -> None:
        if not events:
            return
        with self._lock:
            for e in events:
                key = (e.get("broker", broker), int(e["time_ms"]), e["message"])
                if key in self._event_keys:
                    continue
                self._event_keys.add(key)
                if e.get("broker") is None:
                    e["broker"] = broker
                self._events.append(e)
            if len(self._event_keys) > 2 * _MAX_EVENTS:
                self._event_keys = {(e["broker"], int(e["time_ms"]), e["message"]) for e in self._events}
            self._event_after[broker] = max(int(e["seq"]) for e in events)
        # a restarted broker counts from 1 again: sample_once asks it from 0 when it is
        # back, and the keys above drop the events seen before
