"""Reading a broker's metrics listener: ``/metrics`` (Prometheus text) and ``/events``.

The console scrapes every broker once a second, and a broker with a thousand
partitions writes some fifteen thousand lines, so :func:`parse_metrics` reads only
the families the console shows, with one regular expression per line, instead of a
general exposition-format parser.  Lines it does not know are skipped; a line it
knows but cannot read raises :class:`MetricsFormatError` naming it.
"""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from pylog.errors import PylogError

__all__ = ["BrokerMetrics", "MetricsFormatError", "parse_metrics", "scrape", "fetch_events", "parse_events",
           "PARTITION_FIELDS"]

#: pylog_partition_<name> families kept per partition (Kafka-style names of broker/metrics.py).
PARTITION_FIELDS = {
    "pylog_partition_records_in_total": "records_in",
    "pylog_partition_bytes_in_total": "bytes_in",
    "pylog_partition_records_out_total": "records_out",
    "pylog_partition_bytes_out_total": "bytes_out",
    "pylog_partition_log_size_bytes": "log_size",
    "pylog_partition_log_start_offset": "log_start",
    "pylog_partition_log_end_offset": "log_end",
    "pylog_partition_high_watermark": "high_watermark",
    "pylog_partition_share_in": "share_in",
    "pylog_partition_skewed": "skewed",
}
_BROKER_FIELDS = {
    "pylog_broker_records_in_total": "records_in",
    "pylog_broker_bytes_in_total": "bytes_in",
    "pylog_broker_records_out_total": "records_out",
    "pylog_broker_bytes_out_total": "bytes_out",
}
_LABEL = r'"((?:[^"\\\n]|\\.)*)"'
_PARTITION_LINE = re.compile(r'^(pylog_partition_\w+)\{topic=' + _LABEL + r',partition="(\d+)"\} (\S+)')
_LAG_LINE = re.compile(r'^pylog_group_lag\{group=' + _LABEL + r',topic=' + _LABEL + r',partition="(\d+)"\} (\S+)')
_PLAIN_LINE = re.compile(r'^(pylog_broker_\w+_total) (\S+)')
_UNESCAPE = re.compile(r'\\(.)')


class MetricsFormatError(PylogError):
    """A broker's /metrics page has a line the console cannot read."""


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def _number(text: str, line: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MetricsFormatError(f"not a number in metrics line {line[:200]!r}") from None


@dataclass
class BrokerMetrics:
    """What the console keeps of one scrape: per-partition rows (``PARTITION_FIELDS``
    values as keys), the broker's traffic totals, and the group lags it reports."""

    partitions: Dict[Tuple[str, int], Dict[str, float]] = field(default_factory=dict)
    totals: Dict[str, float] = field(default_factory=dict)
    lag: Dict[Tuple[str, str, int], float] = field(default_factory=dict)
    #: when the page was read (ms since the epoch; 0 when parsed from text alone)
    time_ms: int = 0


def parse_metrics(text: str) -> BrokerMetrics:
    """The console's part of a pylog ``/metrics`` page (module docstring)."""
    out = BrokerMetrics()
    parts = out.partitions
    for line in text.split("\n"):
        if not line.startswith("pylog_"):
            continue
        if line.startswith("pylog_partition_"):
            family = line.split("{", 1)[0].split(" ", 1)[0]
            name = PARTITION_FIELDS.get(family)
            if name is None:  # another family (pylog_partition_count on a cluster, ...)
                continue
            m = _PARTITION_LINE.match(line)
            if m is None:
                raise MetricsFormatError(f"unreadable metrics line {line[:200]!r}")
            key = (_unescape(m.group(2)), int(m.group(3)))
            row = parts.get(key)
            if row is None:
                row = parts[key] = {}
            row[name] = _number(m.group(4), line)
        elif line.startswith("pylog_group_lag{"):
            m = _LAG_LINE.match(line)
            if m is None:
                raise MetricsFormatError(f"unreadable metrics line {line[:200]!r}")
            out.lag[(_unescape(m.group(1)), _unescape(m.group(2)), int(m.group(3)))] = _number(m.group(4), line)
        elif line.startswith("pylog_broker_"):
            m = _PLAIN_LINE.match(line)
            if m is not None and m.group(1) in _BROKER_FIELDS:
                out.totals[_BROKER_FIELDS[m.group(1)]] = _number(m.group(2), line)
    return out


def _get(url: str, timeout_s: float, limit: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 (http URL we built)
            body = r.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PylogError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > limit:
        raise PylogError(f"{url}: answer larger than {limit} bytes")
    return body


def scrape(address: str, timeout_s: float = 2.0) -> BrokerMetrics:
    """GET ``http://address/metrics`` and parse it.  PylogError when the broker does not
    answer (within ``timeout_s``); MetricsFormatError for a page it cannot read."""
    body = _get(f"http://{address}/metrics", timeout_s, 256 << 20)
    read_ms = int(time.time() * 1000)
    m = parse_metrics(body.decode("utf-8", "replace"))
    m.time_ms = read_ms
    return m


def fetch_events(address: str, after: int, timeout_s: float = 2.0) -> List[Dict[str, Any]]:
    """The events a broker logged after sequence number ``after`` (``/events``), each
    ``{"seq", "time_ms", "level", "kind", "message", "broker"}``.  PylogError when the
    broker does not answer or answers something else than the events document."""
    body = _get(f"http://{address}/events?after={int(after)}", timeout_s, 16 << 20)
    return parse_events(body, f"http://{address}/events")


def parse_events(body: bytes, where: str = "/events") -> List[Dict[str, Any]]:
    """The events of an ``/events`` answer; PylogError naming ``where`` for anything
    else than the events document."""
    try:
        doc = json.loads(body)
        events = doc["events"]
        if not isinstance(events, list):
            raise TypeError("events is not a list")
        out = []
        for e in events:
            broker = e.get("broker", doc.get("broker"))
            out.append({"seq": int(e["seq"]), "time_ms": int(e["time_ms"]), "level": str(e["level"]),
                        "kind": str(e["kind"]), "message": str(e["message"]),
                        "broker": int(broker) if isinstance(broker, int) and not isinstance(broker, bool) else None})
        return out
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise PylogError(f"{where}: not an events document ({exc})") from None
