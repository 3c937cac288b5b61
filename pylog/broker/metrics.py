"""Broker traffic metrics, partition skew detection, and the Prometheus text format.

Owns three things:

* :class:`TrafficMetrics` -- per topic-partition counters of records and bytes in
  (appended) and out (fetched), updated once per batch under one lock.
* :class:`SkewDetector` -- makes key skew loud: over tumbling windows of
  ``partition.skew.window.ms`` (aligned to multiples of the window since the epoch),
  a partition whose share of its topic's records-in exceeds ``partition.skew.ratio``
  times the fair share ``1/partitions``, in a window where the topic received at
  least ``partition.skew.min.records`` records, is *skewed*: one WARNING on logger
  ``pylog.broker`` per partition per window, ``skew_warnings_total`` counts them, and
  the metrics show each partition's ``share_in`` and ``skewed`` for the last complete
  window.  A window is judged when it is over: at the first call (record, check or
  snapshot) whose ``now_ms`` lies past its end, so the broker's housekeeping calls
  :meth:`TrafficMetrics.check_skew` to judge windows of topics that went quiet.
  Judging whole windows, not every batch, keeps the first few batches of a window
  (which with sticky partitioning all land on one partition) from raising alarms.
  For the same reason a topic's first window is judged only if the detector saw at
  least half of it: a broker (or topic) started near a window's end would otherwise
  judge a few hundred milliseconds of traffic, in which a producer's batches, sent
  partition by partition, look skewed.
  A broker of a cluster counts only the partitions it leads; it judges their share of
  an estimate of the topic's records (:meth:`SkewDetector.set_partitions`).
* :func:`render_prometheus` -- the broker metrics dict (schema below) in the
  Prometheus text exposition format, version 0.0.4.

Every method takes the time as ``now_ms``; nothing here reads a clock.

pylog's own configuration (not Kafka's; broker-level):

=============================  =======  ==================================================
name                           default  meaning
=============================  =======  ==================================================
partition.skew.window.ms       60000    window length, ms (>= 1)
partition.skew.ratio           2.0      skewed above ratio x (1 / partitions) (>= 1.0)
partition.skew.min.records     1000     records a topic needs in a window to be judged (>= 0)
=============================  =======  ==================================================

Broker metrics dict (what ``Broker.metrics()`` returns; :meth:`TrafficMetrics.snapshot`
gives the traffic part of it)::

    {"broker": {"id": int},
     "topics": {topic: {"partitions": {int: {
         "records_in": int, "bytes_in": int, "records_out": int, "bytes_out": int,
         "log_size_bytes": int, "log_start_offset": int, "log_end_offset": int,
         "high_watermark": int, "share_in": float, "skewed": bool}}}},
     "groups": {group: {"state": str, "members": int, "generation": int,
                        "lag": {topic: {int: int}}}},
     "skew_warnings_total": int}
"""
from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from pylog.errors import InvalidConfig, PylogError
from pylog.util import check_int

__all__ = [
    "TrafficMetrics",
    "SkewDetector",
    "SkewWarning",
    "render_prometheus",
    "PROMETHEUS_CONTENT_TYPE",
    "SKEW_CONFIG_DEFAULTS",
    "partition_metrics",
    "group_metrics",
]

log = logging.getLogger("pylog.broker")

#: pylog's skew configuration names and their defaults.
SKEW_CONFIG_DEFAULTS: Dict[str, Any] = {
    "partition.skew.window.ms": 60_000,
    "partition.skew.ratio": 2.0,
    "partition.skew.min.records": 1_000,
}

#: HTTP Content-Type of :func:`render_prometheus`'s output.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ============================================================== skew detection


@dataclass(frozen=True)
class SkewWarning:
    """One skewed partition in one window."""

    topic: str
    partition: int
    share: float            #: the partition's fraction of the topic's records in the window
    #: (estimated on a broker that sees only some partitions: SkewDetector.set_partitions)
    fair_share: float       #: 1 / partitions
    records: int            #: the partition's records in the window
    topic_records: int      #: the topic's records in the window (or their estimate, as share)
    window_start_ms: int
    window_ms: int


class _TopicWindow:
    """One topic's current window and the verdict on the last complete one."""

    __slots__ = ("index", "counts", "total", "num_partitions", "counted", "last_shares", "last_skewed",
                 "first_ms")

    def __init__(self, index: int, num_partitions: int, first_ms: Optional[int] = None) -> None:
        self.index = index                       # window number: now_ms // window_ms
        self.first_ms = first_ms                 # when the detector first saw the topic (None: not yet)
        self.counts: Dict[int, int] = {}         # partition -> records in this window
        self.total = 0                           # records in this window
        self.num_partitions = num_partitions     # as registered, or max seen + 1
        #: The partitions whose records this detector is told of, when not all are
        #: (a broker of a cluster sees the partitions it leads); None: all of them.
        self.counted: Optional[frozenset] = None
        self.last_shares: Dict[int, float] = {}  # last complete window: partition -> share
        self.last_skewed: frozenset = frozenset()


def _check_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 1.0:
        raise InvalidConfig(f"partition.skew.ratio must be a finite number >= 1.0, got {value!r}")
    return float(value)


class SkewDetector:
    """Finds partitions that take far more than their fair share of a topic's records.

    See the module docstring for the rule.  ``window_ms``, ``ratio`` and
    ``min_records`` are ``partition.skew.window.ms``, ``partition.skew.ratio`` and
    ``partition.skew.min.records``; bad values raise InvalidConfig naming the setting.
    A topic's partition count comes from :meth:`set_partitions` (or the
    ``num_partitions`` of :meth:`check`); for a topic never told, the highest
    partition seen plus one is used.  Not thread-safe: :class:`TrafficMetrics`
    serializes its calls.
    """

    def __init__(self, window_ms: int = 60_000, ratio: float = 2.0,
                 min_records: int = 1_000, *, logger: Optional[logging.Logger] = None) -> None:
        self.window_ms = check_int("partition.skew.window.ms", window_ms, min=1, error=InvalidConfig)
        self.ratio = _check_ratio(ratio)
        self.min_records = check_int("partition.skew.min.records", min_records, min=0, error=InvalidConfig)
        self.warnings_total = 0
        self._log = logger if logger is not None else log
        self._topics: Dict[str, _TopicWindow] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SkewDetector":
        """From a mapping of pylog config names (missing names take their defaults);
        other names in ``config`` are ignored."""
        c = {k: config.get(k, v) for k, v in SKEW_CONFIG_DEFAULTS.items()}
        return cls(window_ms=c["partition.skew.window.ms"], ratio=c["partition.skew.ratio"],
                   min_records=c["partition.skew.min.records"])

    # ---- events ---------------------------------------------------------------

    def record(self, topic: str, partition: int, records: int, now_ms: int) -> List[SkewWarning]:
        """Count ``records`` appended to ``topic``/``partition`` at ``now_ms``.

        Returns (and logs) the warnings of a window this call found over.
        """
        w, out = self._advance(topic, now_ms)
        w.counts[partition] = w.counts.get(partition, 0) + records
        w.total += records
        if partition >= w.num_partitions:
            w.num_partitions = partition + 1
        return out

    def set_partitions(self, topic: str, num_partitions: int, counted: Optional[Iterable[int]] = None) -> None:
        """Tell the detector how many partitions ``topic`` has (fair share = 1/n).

        ``counted``: the partitions whose records this detector is told of, when that is
        not all of them -- a broker of a cluster records the partitions it leads, and
        sees nothing of the others (taken as silent, the two partitions of six that one
        broker leads would each look three times over their fair share).  The topic's
        records in a window are then estimated, for each partition judged, from the
        others this detector sees (those in ``counted``, and any other it counted
        records of in the window, e.g. one whose leadership moved away): every partition
        it does not see is taken to carry their mean.  So a partition is skewed when it
        took more than ``ratio`` times its fair share of that estimate; with only one
        partition seen, there is nothing to compare with and nothing is judged."""
        check_int("num_partitions", num_partitions, min=1, error=ValueError)
        w = self._topics.get(topic)
        if w is None:
            w = self._topics[topic] = _TopicWindow(-1, num_partitions)
        else:
            w.num_partitions = num_partitions
        w.counted = None if counted is None else frozenset(counted)

    def check(self, topic: str, now_ms: int, num_partitions: Optional[int] = None,
              counted: Optional[Iterable[int]] = None) -> List[SkewWarning]:
        """Judge ``topic``'s window if it is over at ``now_ms``; returns (and logs) its
        warnings.  ``num_partitions`` (and ``counted``), if given, update the partition
        count (and the partitions told of, see :meth:`set_partitions`) first."""
        if num_partitions is not None:
            self.set_partitions(topic, num_partitions, counted)
        if topic not in self._topics:
            return []
        return self._advance(topic, now_ms)[1]

    def check_all(self, now_ms: int) -> List[SkewWarning]:
        """:meth:`check` for every known topic."""
        out: List[SkewWarning] = []
        for topic in list(self._topics):
            out.extend(self._advance(topic, now_ms)[1])
        return out

    def knows(self, topic: str) -> bool:
        """Whether ``topic`` has a window (records or a partition count told)."""
        return topic in self._topics

    def forget_topic(self, topic: str) -> None:
        """Drop a deleted topic's windows (a no-op for an unknown topic)."""
        self._topics.pop(topic, None)

    # ---- state ----------------------------------------------------------------

    def shares(self, topic: str) -> Dict[int, Tuple[float, bool]]:
        """partition -> (share_in, skewed) for ``topic``'s last complete window, for
        every partition 0..n-1 (0.0/False where it had no records)."""
        w = self._topics.get(topic)
        if w is None:
            return {}
        n = max(w.num_partitions, max(w.last_shares, default=-1) + 1)
        return {p: (w.last_shares.get(p, 0.0), p in w.last_skewed) for p in range(n)}

    def topics(self) -> List[str]:
        """Topics with state."""
        return list(self._topics)

    # ---- windows --------------------------------------------------------------

    def _advance(self, topic: str, now_ms: int) -> Tuple[_TopicWindow, List[SkewWarning]]:
        """The topic's window for now_ms, judging (and closing) the previous one if
        now_ms lies past its end.  A clock going backwards stays in the current window."""
        index = now_ms // self.window_ms
        w = self._topics.get(topic)
        if w is None:
            w = self._topics[topic] = _TopicWindow(index, 0, now_ms)
            return w, []
        if w.first_ms is None:  # (made by set_partitions)
            w.first_ms = now_ms
        if index <= w.index:
            return w, []
        # A first window seen for less than half of it is not judged (see the module doc).
        whole = w.first_ms - w.index * self.window_ms <= self.window_ms // 2
        out = self._judge(topic, w) if w.index >= 0 and whole else []
        if index == w.index + 1 and w.total > 0:
            w.last_shares = {p: c / t for p, c in w.counts.items() if (t := self._topic_records(w, c)) > 0}
            w.last_skewed = frozenset(x.partition for x in out)
        else:  # the last complete window had no records
            w.last_shares = {}
            w.last_skewed = frozenset()
        w.index = index
        w.counts = {}
        w.total = 0
        return w, out

    @staticmethod
    def _topic_records(w: _TopicWindow, c: int) -> float:
        """The topic's records in ``w``, as judged for a partition that took ``c`` of
        them: the total, when every partition is counted; else estimated with each
        partition not seen carrying the mean of the others seen (0 when no other is
        seen: nothing to judge by).  See :meth:`set_partitions`."""
        if w.counted is None:
            return float(w.total)
        seen = len(w.counted.union(w.counts))
        if seen < 2:
            return 0.0
        n = max(w.num_partitions, max(w.counts) + 1, seen)
        return c + (n - 1) * (w.total - c) / (seen - 1)

    def _judge(self, topic: str, w: _TopicWindow) -> List[SkewWarning]:
        total = w.total
        if total == 0 or (w.counted is None and total < self.min_records):
            return []
        n = max(w.num_partitions, max(w.counts) + 1)
        fair = 1.0 / n
        out = []
        for p in sorted(w.counts):
            c = w.counts[p]
            t = self._topic_records(w, c)
            if t < self.min_records or t <= 0:
                continue
            if c * n > self.ratio * t:  # share > ratio / n, without rounding the share
                out.append(SkewWarning(topic, p, c / t, fair, c, int(round(t)),
                                       w.index * self.window_ms, self.window_ms))
        estimated = "" if w.counted is None else (
            f" (an estimate: this broker sees {len(w.counted.union(w.counts))} of the {n} partitions)")
        for x in out:
            self.warnings_total += 1
            self._log.warning(
                "partition skew: topic %r partition %d received %.1f%% of the topic's %d "
                "records in the %d ms window from %d (fair share %.1f%%, threshold %.1f%%)%s",
                x.topic, x.partition, 100.0 * x.share, x.topic_records, x.window_ms,
                x.window_start_ms, 100.0 * x.fair_share, 100.0 * self.ratio * x.fair_share, estimated,
                extra={"pylog_event": "skew"})
        return out


# ============================================================= traffic counters


class TrafficMetrics:
    """Per topic-partition records/bytes in and out, with skew detection on records-in.

    Thread-safe; each call takes one lock and does a few dict operations, so call it
    once per appended or fetched batch, not per record.  Counters count since this
    object was made (they are not persisted).  ``window_ms``, ``ratio`` and
    ``min_records`` configure the :class:`SkewDetector` (see the module docstring).
    """

    def __init__(self, window_ms: int = 60_000, ratio: float = 2.0, min_records: int = 1_000,
                 *, logger: Optional[logging.Logger] = None) -> None:
        self.skew = SkewDetector(window_ms, ratio, min_records, logger=logger)
        self._lock = threading.Lock()
        # topic -> partition -> [records_in, bytes_in, records_out, bytes_out]
        self._counters: Dict[str, Dict[int, List[int]]] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *,
                    logger: Optional[logging.Logger] = None) -> "TrafficMetrics":
        """From a mapping with (some of) the ``partition.skew.*`` names."""
        c = {k: config.get(k, v) for k, v in SKEW_CONFIG_DEFAULTS.items()}
        return cls(c["partition.skew.window.ms"], c["partition.skew.ratio"],
                   c["partition.skew.min.records"], logger=logger)

    def _row(self, topic: str, partition: int) -> List[int]:
        parts = self._counters.get(topic)
        if parts is None:
            parts = self._counters[topic] = {}
        row = parts.get(partition)
        if row is None:
            row = parts[partition] = [0, 0, 0, 0]
        return row

    def record_in(self, topic: str, partition: int, records: int, nbytes: int,
                  now_ms: int) -> List[SkewWarning]:
        """A batch of ``records`` records, ``nbytes`` bytes was appended at ``now_ms``.

        Returns the skew warnings of a window this call found over (already logged).
        """
        with self._lock:
            row = self._row(topic, partition)
            row[0] += records
            row[1] += nbytes
            return self.skew.record(topic, partition, records, now_ms)

    def record_out(self, topic: str, partition: int, records: int, nbytes: int,
                   now_ms: int) -> None:
        """A fetch returned ``records`` records, ``nbytes`` bytes of the partition."""
        with self._lock:
            row = self._row(topic, partition)
            row[2] += records
            row[3] += nbytes

    def set_partitions(self, topic: str, num_partitions: int) -> None:
        """The topic's partition count (its fair share is 1/num_partitions); the
        snapshot lists all of them.  ValueError if num_partitions < 1."""
        with self._lock:
            self.skew.set_partitions(topic, num_partitions)

    def check_skew(self, topic: str, num_partitions: int, now_ms: int,
                   counted: Optional[Iterable[int]] = None) -> List[SkewWarning]:
        """Judge ``topic``'s skew window if it is over (for topics that went quiet);
        also records its partition count (and, with ``counted``, the partitions whose
        traffic these metrics see: :meth:`SkewDetector.set_partitions`).  Returns the
        new warnings (already logged)."""
        with self._lock:
            return self.skew.check(topic, now_ms, num_partitions, counted)

    def knows(self, topic: str) -> bool:
        """Whether the skew detector was told of ``topic`` (set_partitions, check_skew)."""
        with self._lock:
            return self.skew.knows(topic)

    def forget_topic(self, topic: str) -> None:
        """Drop a deleted topic's counters and windows (skew_warnings_total stays)."""
        with self._lock:
            self._counters.pop(topic, None)
            self.skew.forget_topic(topic)

    @property
    def skew_warnings_total(self) -> int:
        """Skew warnings logged since this object was made."""
        return self.skew.warnings_total

    def snapshot(self, now_ms: int) -> Dict[str, Any]:
        """The traffic part of the broker metrics dict at ``now_ms``::

            {"topics": {topic: {"partitions": {int: {"records_in", "bytes_in",
                 "records_out", "bytes_out", "share_in", "skewed"}}}},
             "skew_warnings_total": int}

        Judges windows that are over first.  Every partition with traffic or below a
        count given to set_partitions/check_skew is listed.
        """
        with self._lock:
            self.skew.check_all(now_ms)
            topics: Dict[str, Any] = {}
            for topic in set(self._counters) | set(self.skew.topics()):
                counters = self._counters.get(topic, {})
                shares = self.skew.shares(topic)
                parts = {}
                for p in sorted(set(counters) | set(shares)):
                    row = counters.get(p, (0, 0, 0, 0))
                    share, skewed = shares.get(p, (0.0, False))
                    parts[p] = {"records_in": row[0], "bytes_in": row[1],
                                "records_out": row[2], "bytes_out": row[3],
                                "share_in": share, "skewed": skewed}
                topics[topic] = {"partitions": parts}
            return {"topics": topics, "skew_warnings_total": self.skew.warnings_total}


# =========================================================== Prometheus format

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

# Known partition fields: name -> (metric name, type, help).
_PARTITION_FIELDS: Dict[str, Tuple[str, str, str]] = {
    "records_in": ("pylog_partition_records_in_total", "counter",
                   "Records appended to the partition."),
    "bytes_in": ("pylog_partition_bytes_in_total", "counter",
                 "Bytes of record batches appended to the partition."),
    "records_out": ("pylog_partition_records_out_total", "counter",
                    "Records returned by fetches from the partition."),
    "bytes_out": ("pylog_partition_bytes_out_total", "counter",
                  "Bytes of record batches returned by fetches from the partition."),
    "log_size_bytes": ("pylog_partition_log_size_bytes", "gauge",
                       "Bytes of the partition's log segments."),
    "log_start_offset": ("pylog_partition_log_start_offset", "gauge",
                         "First offset retained in the partition."),
    "log_end_offset": ("pylog_partition_log_end_offset", "gauge",
                       "Offset the next record appended to the partition will get."),
    "high_watermark": ("pylog_partition_high_watermark", "gauge",
                       "Offset below which records are committed and visible to consumers."),
    "share_in": ("pylog_partition_share_in", "gauge",
                 "Fraction of the topic's records appended to this partition in the last "
                 "complete skew window."),
    "skewed": ("pylog_partition_skewed", "gauge",
               "1 if the partition's share of the topic's records exceeded "
               "partition.skew.ratio x the fair share in the last complete skew window."),
}

_GROUP_FIELDS: Dict[str, Tuple[str, str, str]] = {
    "members": ("pylog_group_members", "gauge", "Members of the consumer group."),
    "generation": ("pylog_group_generation", "gauge", "Generation of the consumer group."),
}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


class _Families:
    """Metric families in first-seen order; each gets one HELP and one TYPE line."""

    def __init__(self) -> None:
        self._fams: Dict[str, Tuple[str, str, List[Tuple[Tuple[Tuple[str, str], ...], Any]]]] = {}

    def add(self, name: str, mtype: str, help_text: str,
            labels: Tuple[Tuple[str, str], ...], value: Any, where: str) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"{where}: {name!r} is not a valid Prometheus metric name")
        fam = self._fams.get(name)
        if fam is None:
            fam = self._fams[name] = (mtype, help_text, [])
        elif fam[0] != mtype:
            raise ValueError(f"{where}: metric {name} is both a {fam[0]} and a {mtype}")
        fam[2].append((labels, value))

    def render(self) -> str:
        lines: List[str] = []
        for name, (mtype, help_text, samples) in self._fams.items():
            seen = set()
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {mtype}")
            for labels, value in samples:
                if labels in seen:
                    raise ValueError(f"metric {name} has two samples with labels {dict(labels)}")
                seen.add(labels)
                if labels:
                    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                    lines.append(f"{name}{{{body}}} {_format_value(value)}")
                else:
                    lines.append(f"{name} {_format_value(value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _generic(name: str) -> Tuple[str, str]:
    """(type, help) of a field this module does not know."""
    if name.endswith("_total"):
        return "counter", f"pylog {name} (counter)."
    return "gauge", f"pylog {name}."


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _partition_label(p: Any, where: str) -> str:
    if isinstance(p, bool) or not isinstance(p, int):
        raise ValueError(f"{where}: partition keys must be ints, got {p!r}")
    return str(p)


def partition_metrics(traffic: Mapping[int, Mapping[str, Any]], partition: int, *, log_size_bytes: int,
                      log_start_offset: int, log_end_offset: int, high_watermark: int) -> Dict[str, Any]:
    """One partition's row of the metrics dict: its traffic (from the ``"partitions"`` of
    a :meth:`TrafficMetrics.snapshot` topic; zeros if none yet) and its log's figures."""
    row: Dict[str, Any] = {"records_in": 0, "bytes_in": 0, "records_out": 0, "bytes_out": 0,
                           "share_in": 0.0, "skewed": False}
    row.update(traffic.get(partition, {}))
    row.update(log_size_bytes=log_size_bytes, log_start_offset=log_start_offset,
               log_end_offset=log_end_offset, high_watermark=high_watermark)
    return row


def group_metrics(groups: Any, high_watermark: Callable[[str, int], Optional[int]]) -> Dict[str, Any]:
    """The ``"groups"`` section of the metrics dict from a group service: state, members,
    generation and lag per group.  ``high_watermark(topic, partition)`` gives a
    partition's HW, or None for one that is gone or unknown (left out of the lag)."""
    out: Dict[str, Any] = {}
    for listing in groups.list_groups():
        gid = listing.group_id
        try:
            desc = groups.describe_group(gid)
            offsets = groups.fetch_offsets(gid)
        except PylogError:  # moved to another coordinator since it was listed
            continue
        lag: Dict[str, Dict[int, int]] = {}
        for (topic, part), (off, _meta) in offsets.items():
            hw = high_watermark(topic, part)
            if hw is not None:
                lag.setdefault(topic, {})[part] = max(0, hw - off)
        state = getattr(desc.state, "value", desc.state)
        out[gid] = {"state": str(state), "members": len(desc.members), "generation": desc.generation_id,
                    "lag": lag}
    return out


def render_prometheus(metrics: Mapping[str, Any]) -> str:
    """The broker metrics dict (module docstring) in Prometheus text format 0.0.4.

    Families (labels in braces):

    * ``pylog_broker_info{broker_id}`` = 1
    * per partition ``{topic, partition}``: ``pylog_partition_records_in_total``,
      ``_bytes_in_total``, ``_records_out_total``, ``_bytes_out_total`` (counters);
      ``pylog_partition_log_size_bytes``, ``_log_start_offset``, ``_log_end_offset``,
      ``_high_watermark``, ``_share_in``, ``_skewed`` (0/1) (gauges)
    * per group ``{group}``: ``pylog_group_members``, ``pylog_group_generation``;
      ``pylog_group_state{group, state}`` = 1; ``pylog_group_lag{group, topic,
      partition}`` (records between the committed offset and the high watermark)
    * ``pylog_skew_warnings_total`` (counter)

    Any other numeric (int, float, bool) field is kept: at partition level as
    ``pylog_partition_<name>{topic, partition}``, at group level as
    ``pylog_group_<name>{group}``, in ``"broker"`` or at the top level as
    ``pylog_<name>``; a name ending in ``_total`` is a counter, anything else a gauge.
    Non-numeric unknown fields are skipped.  Missing sections render as empty.
    Raises ValueError if the dict's shape is wrong (a section that is not a mapping,
    a partition key that is not an int, a field name that is no valid metric name,
    two values for one series).
    """
    m = _mapping(metrics, "metrics")
    fams = _Families()

    broker = _mapping(m.get("broker"), "metrics['broker']")
    if "id" in broker:
        fams.add("pylog_broker_info", "gauge", "Identity of the broker; the value is always 1.",
                 (("broker_id", str(broker["id"])),), 1, "metrics['broker']")

    topics = _mapping(m.get("topics"), "metrics['topics']")
    for topic in sorted(topics, key=str):
        where = f"metrics['topics'][{topic!r}]"
        tdict = _mapping(topics[topic], where)
        parts = _mapping(tdict.get("partitions"), where + "['partitions']")
        for p in sorted(parts, key=lambda x: (str(type(x)), x)):
            pwhere = f"{where}['partitions'][{p!r}]"
            label = _partition_label(p, pwhere)
            row = _mapping(parts[p], pwhere)
            labels = (("topic", str(topic)), ("partition", label))
            for field in row:
                value = row[field]
                if not _is_number(value):
                    continue
                known = _PARTITION_FIELDS.get(field)
                if known is not None:
                    name, mtype, help_text = known
                else:
                    name = f"pylog_partition_{field}"
                    mtype, help_text = _generic(f"partition_{field}")
                fams.add(name, mtype, help_text, labels, value, pwhere)

    groups = _mapping(m.get("groups"), "metrics['groups']")
    for group in sorted(groups, key=str):
        gwhere = f"metrics['groups'][{group!r}]"
        g = _mapping(groups[group], gwhere)
        glabel = (("group", str(group)),)
        for field in g:
            value = g[field]
            if field == "state":
                if value is not None:
                    fams.add("pylog_group_state", "gauge",
                             "State of the consumer group (the state label); the value is always 1.",
                             glabel + (("state", str(value)),), 1, gwhere)
                continue
            if field == "lag":
                lag = _mapping(value, gwhere + "['lag']")
                for topic in sorted(lag, key=str):
                    tl = _mapping(lag[topic], f"{gwhere}['lag'][{topic!r}]")
                    for p in sorted(tl, key=lambda x: (str(type(x)), x)):
                        lw = f"{gwhere}['lag'][{topic!r}][{p!r}]"
                        v = tl[p]
                        if not _is_number(v):
                            continue
                        fams.add("pylog_group_lag", "gauge",
                                 "Records between the group's committed offset and the high watermark.",
                                 glabel + (("topic", str(topic)), ("partition", _partition_label(p, lw))),
                                 v, lw)
                continue
            if not _is_number(value):
                continue
            known = _GROUP_FIELDS.get(field)
            if known is not None:
                name, mtype, help_text = known
            else:
                name = f"pylog_group_{field}"
                mtype, help_text = _generic(f"group_{field}")
            fams.add(name, mtype, help_text, glabel, value, gwhere)

    extras = [(k, v, "metrics['broker']") for k, v in broker.items() if k != "id"]
    extras += [(k, v, "metrics") for k, v in m.items()
               if k not in ("broker", "topics", "groups")]
    for field, value, where in extras:
        if not _is_number(value):
            continue
        if field == "skew_warnings_total":
            fams.add("pylog_skew_warnings_total", "counter",
                     "Partition skew warnings logged (one per skewed partition per window).",
                     (), value, where)
            continue
        mtype, help_text = _generic(str(field))
        fams.add(f"pylog_{field}", mtype, help_text, (), value, where)

    return fams.render()
