"""The server's metrics and the Prometheus endpoint (``--metrics-listener``).

Two sources, one page at ``/metrics`` (text format 0.0.4), and the broker's recent
events at ``/events`` (JSON, :mod:`pylog.server.events`):

* the server's own counters, kept with ``prometheus_client`` in a registry of their own
  (one per server, so several servers can live in one process): requests and their
  latency per API, request errors, connections, network bytes in and out;
  records and bytes in/out per topic and for the whole broker, summed from the
  broker's per-partition traffic at each scrape;
* everything :meth:`BrokerInterface.metrics` reports (per-partition traffic, offsets
  and skew, group lag, on a cluster the ISR counters), rendered by
  :func:`pylog.broker.metrics.render_prometheus`.

The HTTP endpoint runs on a thread of its own, so a scrape never waits for the event
loop (the broker's metrics are thread-safe).
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Optional, Tuple
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

from pylog.broker.metrics import render_prometheus
from pylog.server.events import EventLog

__all__ = ["ServerMetrics", "MetricsHTTPServer"]

log = logging.getLogger("pylog.server")

#: Request latency buckets, seconds (Kafka's request-time histograms span ms to s).
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0)


class _TrafficCollector:
    """Per-topic and per-broker records/bytes in/out, summed from the broker's
    per-partition counters at scrape time."""

    def __init__(self, source: Callable[[], Dict[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Any]:
        try:
            m = self._source()
        except Exception:  # a closed broker, a scrape during shutdown
            return []
        names = (("records_in", "Records appended"), ("bytes_in", "Bytes of record batches appended"),
                 ("records_out", "Records fetched by consumers"), ("bytes_out", "Bytes of record batches fetched"))
        topic_fams = {k: CounterMetricFamily(f"pylog_topic_{k}", f"{h}, per topic.", labels=["topic"])
                      for k, h in names}
        broker_fams = {k: CounterMetricFamily(f"pylog_broker_{k}", f"{h}, by this broker.") for k, h in names}
        totals = {k: 0 for k, _ in names}
        for topic, t in sorted((m.get("topics") or {}).items()):
            sums = {k: 0 for k, _ in names}
            for row in (t.get("partitions") or {}).values():
                for k in sums:
                    sums[k] += int(row.get(k, 0) or 0)
            for k, v in sums.items():
                topic_fams[k].add_metric([topic], v)
                totals[k] += v
        for k, v in totals.items():
            broker_fams[k].add_metric([], v)
        return list(topic_fams.values()) + list(broker_fams.values())


class ServerMetrics:
    """Counters of one server; ``broker_metrics`` is BrokerInterface.metrics."""

    def __init__(self, broker_metrics: Callable[[], Dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._broker_metrics = broker_metrics
        self.requests = Counter("pylog_server_requests", "Requests answered, per API.", ["api"], registry=r)
        self.latency = Histogram("pylog_server_request_latency_seconds",
                                 "Time from a request's arrival to its answer being queued, per API.", ["api"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("pylog_server_request_errors",
                              "Requests refused as a whole (connection closed or error answer), per API and error.",
                              ["api", "error"], registry=r)
        self.connections = Gauge("pylog_server_connections", "Open client connections.", registry=r)
        self.connections_accepted = Counter("pylog_server_connections_accepted", "Client connections accepted.",
                                            registry=r)
        self.connections_closed = Counter("pylog_server_connections_closed", "Client connections closed.",
                                          registry=r)
        self.tls_handshake_failures = Counter(
            "pylog_server_tls_handshake_failures",
            "TLS handshakes that failed (plaintext client on a TLS port, certificate refused, bad bytes), "
            "per listener.", ["listener"], registry=r)
        self.authorization_failures = Counter(
            "pylog_server_authorization_failures",
            "Requests (or parts of them: a topic, a group) refused by the ACLs, per resource type and operation.",
            ["resource_type", "operation"], registry=r)
        self.successful_authentication = Counter(
            "pylog_server_successful_authentication", "SASL authentications that succeeded, per listener and "
            "mechanism.", ["listener", "mechanism"], registry=r)
        self.failed_authentication = Counter(
            "pylog_server_failed_authentication", "SASL authentications that failed (wrong password, unknown user, "
            "bad token, unsupported mechanism), per listener and mechanism.", ["listener", "mechanism"], registry=r)
        self.network_in = Counter("pylog_server_network_bytes_in", "Bytes received from clients.", registry=r)
        self.network_out = Counter("pylog_server_network_bytes_out", "Bytes of answers sent to clients.", registry=r)
        r.register(_TrafficCollector(broker_metrics))
        self._children: Dict[str, Tuple[Any, Any]] = {}

    def request_done(self, api: str, seconds: float, response_bytes: int) -> None:
        child = self._children.get(api)
        if child is None:
            child = self._children[api] = (self.requests.labels(api), self.latency.labels(api))
        child[0].inc()
        child[1].observe(seconds)
        if response_bytes:
            self.network_out.inc(response_bytes)

    def request_error(self, api: str, error: str) -> None:
        self.errors.labels(api, error).inc()

    def render(self) -> bytes:
        """The whole /metrics page."""
        own = generate_latest(self.registry)
        try:
            broker = render_prometheus(self._broker_metrics()).encode("utf-8")
        except Exception as exc:  # keep serving our own counters
            log.warning("broker metrics unavailable: %s", exc)
            broker = b""
        return own + broker


def _after_of(query: str) -> int:
    """The ``after`` parameter of an ``/events`` query string (0 when absent); raises
    ValueError with the reason."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=16)
    except ValueError as exc:  # too many fields
        raise ValueError(f"bad query string: {exc}") from None
    values = params.get("after")
    if values is None:
        return 0
    if len(values) != 1:
        raise ValueError(f"after must be given once, got {len(values)} values")
    text = values[0]
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"after must be a non-negative integer (an event's seq), got {values[0]!r}")
    return int(text)


class MetricsHTTPServer:
    """``GET /metrics`` (and ``GET /events`` when ``events`` is given) on ``(host, port)``
    from a daemon thread.

    ``/events?after=SEQ`` answers ``{"broker": ID, "events": [...]}`` (application/json):
    the :class:`~pylog.server.events.EventLog`'s events whose ``seq`` is above ``SEQ``
    (every kept one without ``after``); an ``after`` that is not one non-negative
    integer answers 400 saying so."""

    def __init__(self, metrics: ServerMetrics, host: str, port: int,
                 events: Optional[EventLog] = None) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path, _, query = self.path.partition("?")
                if path in ("/metrics", "/metrics/"):
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", render())
                elif path in ("/events", "/events/") and events is not None:
                    self._events(query)
                else:
                    self.send_error(404, "only /metrics and /events are served here" if events is not None
                                    else "only /metrics is served here")

            def _events(self, query: str) -> None:
                try:
                    after = _after_of(query)
                except ValueError as exc:
                    self._send(400, "application/json", json.dumps({"error": str(exc)}).encode("utf-8"))
                    return
                body = json.dumps({"broker": events.broker_id, "events": events.events(after)})
                self._send(200, "application/json", body.encode("utf-8"))

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("metrics endpoint: " + fmt, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address: Tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._httpd.serve_forever, name="pylog-metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._thread = None
