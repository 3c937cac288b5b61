"""The console's pages: HTML (server-rendered, every value escaped) and their chart JSON.

Each page function takes a :class:`View` (what one request may see: the newest
snapshot, the history, the events, the session's client and the topics and groups its
principal may describe) and returns a :class:`Page`: the HTML of its live section
(re-rendered every 2 s by the script, docs/console.md), the HTML around it, and a
function giving its charts.  A name the cluster does not have raises :class:`NotFound`
(404).  Nothing here talks to the network except through ``View.admin`` (topic
configs, groups, the records browser), one or two requests per page.
"""
from __future__ import annotations

import datetime
import html
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from pylog.client.network.admin import AdminClient, TopicDescription
from pylog.console.collector import Snapshot, broker_key, lag_key, partition_key
from pylog.console.history import History
from pylog.console.records import NotFound, browse
from pylog.errors import GroupAuthorizationFailed, PylogError

__all__ = ["View", "Page", "NotFound", "overview", "topics", "topic", "records", "groups", "group", "events",
           "layout", "not_found_page", "VALUE_DISPLAY_LIMIT", "MAX_CHART_SERIES"]

#: Bytes of a key or value shown before it is cut (the size is shown beside).
VALUE_DISPLAY_LIMIT = 4096
#: Series one line chart draws at most (the busiest, plus every highlighted one).
MAX_CHART_SERIES = 20


@dataclass
class View:
    """What one request may see."""

    snapshot: Snapshot
    history: History
    events: List[Dict[str, Any]]
    admin: Optional[AdminClient]
    #: topics the principal may describe (None: every one)
    visible_topics: Optional[Set[str]] = None
    user: Optional[str] = None
    #: the topics as the principal's own Metadata tells them (None: the sampler's)
    topics: Optional[Dict[str, TopicDescription]] = None

    def all_topics(self) -> Dict[str, TopicDescription]:
        return self.snapshot.topics if self.topics is None else self.topics

    def topic_names(self) -> List[str]:
        names = sorted(self.all_topics())
        if self.visible_topics is None:
            return names
        return [t for t in names if t in self.visible_topics]

    def health(self, name: str) -> Tuple[List[int], List[int], List[int]]:
        """(under-replicated, under-min-ISR, offline) partitions of topic ``name``."""
        t = self.all_topics()[name]
        m = self.snapshot.min_isr.get(name, 1)
        return ([p.partition for p in t.partitions if p.under_replicated and not p.offline],
                [p.partition for p in t.partitions if not p.offline and len(p.isr) < m],
                [p.partition for p in t.partitions if p.offline])

    def counts(self) -> Dict[str, int]:
        out = {"under_replicated": 0, "under_min_isr": 0, "offline": 0}
        for name in self.topic_names():
            ur, um, off = self.health(name)
            out["under_replicated"] += len(ur)
            out["under_min_isr"] += len(um)
            out["offline"] += len(off)
        return out

    def topic(self, name: str) -> TopicDescription:
        """The topic from the snapshot, else (created since the last sample) from the
        cluster; NotFound when the principal cannot see it."""
        if self.visible_topics is not None and name not in self.visible_topics:
            raise NotFound(f"unknown topic {name!r}")
        t = self.all_topics().get(name)
        if t is None and self.admin is not None:
            try:
                t = self.admin.describe_topics([name], include_internal=True).get(name)
            except PylogError:
                t = None
        if t is None:
            raise NotFound(f"unknown topic {name!r}")
        return t


@dataclass
class Page:
    title: str
    live: str
    before: str = ""
    after: str = ""
    charts: Callable[[], List[Dict[str, Any]]] = field(default=lambda: [])
    data: Callable[[], Dict[str, Any]] = field(default=lambda: {})


# ====================================================================== formatting
def e(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def q(value: Any) -> str:
    """A path segment, percent-encoded."""
    return urllib.parse.quote(str(value), safe="")


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_rate(v: Optional[float]) -> str:
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k/s"
    return f"{v:.1f}/s"


def fmt_int(v: Optional[float]) -> str:
    return "–" if v is None else f"{int(v):,}"


def fmt_time(ms: Optional[int]) -> str:
    if ms is None or ms < 0:
        return "–"
    try:
        return datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _points(history: History, key: str) -> List[List[Any]]:
    return [[t, None if v is None else round(v, 3)] for t, v in history.points(key)]


def line_chart(cid: str, title: str, unit: str, series: Sequence[Tuple[str, str, bool]],
               history: History) -> Dict[str, Any]:
    """A CHART of kind line from History keys: ``series`` is (name, key, highlight)."""
    return {"id": cid, "title": title, "unit": unit, "kind": "line",
            "series": [{"name": name, "highlight": hl, "points": _points(history, key)}
                       for name, key, hl in series]}


def _count(name: str, label: str, n: int) -> str:
    return (f'<div class="count"><span id="count-{name}" class="{"bad" if n else "good"}">{n}</span>'
            f'<span class="label">{e(label)}</span></div>')


def _chart_div(src: str, cid: str) -> str:
    return f'<div class="chart" data-src="{e(src)}" data-chart="{e(cid)}"></div>'


# ====================================================================== layout
_NAV = (("/", "Overview"), ("/topics", "Topics"), ("/groups", "Consumer groups"), ("/events", "Events"))


def layout(title: str, main: str, *, active: str = "", user: Optional[str] = None,
           cluster: Optional[str] = None, status: str = "") -> str:
    active_attr = ' class="active"'
    links = "".join(f'<a href="{href}"{active_attr if href == active else ""}>{e(text)}</a>'
                    for href, text in _NAV)
    who = (f'<span class="user">{e(user)} <a href="/logout">log out</a></span>' if user else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)} · pylog console</title>"
            "<link rel=\"icon\" href=\"data:,\">"
            "<link rel=\"stylesheet\" href=\"/static/console.css\">"
            "<script src=\"/static/console.js\" defer></script></head><body>"
            f"<nav><span class=\"brand\">pylog</span>{links}"
            f"<span class=\"cluster\">{e(cluster or '')}</span>{who}</nav>"
            f"{status}<main><h1>{e(title)}</h1>{main}</main></body></html>")


def live_section(path: str, inner: str) -> str:
    sep = "&" if "?" in path else "?"
    return f'<section class="live" data-refresh="{e(path + sep + "fragment=live")}">{inner}</section>'


def not_found_page(message: str, user: Optional[str] = None) -> str:
    return layout("Not found", f'<p id="not-found">{e(message)}</p><p><a href="/">back to the overview</a></p>',
                  user=user)


def status_banner(snap: Snapshot) -> str:
    if snap.error:
        return f'<div class="warning" id="cluster-error">{e(snap.error)}</div>'
    return ""


# ====================================================================== overview
def overview(v: View) -> Page:
    s = v.snapshot
    c = v.counts()
    rows = []
    for bid in sorted(s.brokers):
        b = s.brokers[bid]
        addr = f"{b.host}:{b.port}" if b.host else "–"
        metrics = ("" if b.metrics_error is None else
                   f'<span class="muted" title="{e(b.metrics_error)}">no metrics</span>')
        rows.append(f'<tr data-broker="{bid}"><td class="id num">{bid}</td><td class="address">{e(addr)}</td>'
                    f'<td class="rack">{e(b.rack or "–")}</td>'
                    f'<td class="state {"good" if b.online else "bad"}">{"online" if b.online else "offline"}</td>'
                    f'<td class="controller">{"controller" if b.controller else ""}</td>'
                    f'<td class="rate num">{fmt_bytes(v.history.last(broker_key(bid, "bytes_in")))}/s</td>'
                    f'<td class="rate num">{fmt_bytes(v.history.last(broker_key(bid, "bytes_out")))}/s</td>'
                    f'<td class="metrics">{metrics}</td></tr>')
    names = v.topic_names()
    parts = sum(len(v.all_topics()[t].partitions) for t in names)
    live = ('<div class="counts">'
            + _count("under-replicated", "under-replicated partitions", c["under_replicated"])
            + _count("under-min-isr", "under min ISR", c["under_min_isr"])
            + _count("offline", "offline partitions", c["offline"])
            + f'<div class="count"><span id="count-topics">{len(names)}</span><span class="label">topics</span></div>'
            + f'<div class="count"><span id="count-partitions">{parts}</span>'
              '<span class="label">partitions</span></div></div>'
            + '<table id="brokers"><thead><tr><th class="num">Broker</th><th>Address</th><th>Rack</th><th>State</th>'
              '<th>Controller</th><th class="num">Bytes in</th><th class="num">Bytes out</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
    after = ('<h2>Traffic per broker</h2><div class="charts">'
             + "".join(_chart_div("/api/", cid) for cid in
                       ("broker-bytes-in", "broker-bytes-out", "broker-records-in", "broker-records-out"))
             + "</div>")

    def charts() -> List[Dict[str, Any]]:
        ids = sorted(s.brokers)
        out = []
        for what, title, unit in (("bytes_in", "Bytes in per broker", "B/s"),
                                  ("bytes_out", "Bytes out per broker", "B/s"),
                                  ("records_in", "Records in per broker", "/s"),
                                  ("records_out", "Records out per broker", "/s")):
            out.append(line_chart("broker-" + what.replace("_", "-"), title, unit,
                                  [(f"broker {b}", broker_key(b, what), False) for b in ids], v.history))
        return out

    def data() -> Dict[str, Any]:
        return {"counts": c, "controller": s.controller_id,
                "brokers": [{"id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
                             "state": "online" if b.online else "offline", "controller": b.controller}
                            for b in (s.brokers[i] for i in sorted(s.brokers))]}

    title = "Overview"
    return Page(title, live, after=after, charts=charts, data=data)


# ====================================================================== topics
def topics(v: View) -> Page:
    s = v.snapshot
    rows = []
    for name in v.topic_names():
        t = v.all_topics()[name]
        size = sum(int(s.partitions.get((name, p.partition), {}).get("log_size", 0)) for p in t.partitions)
        rate = sum(v.history.last(partition_key(name, p.partition, "records_in")) or 0.0 for p in t.partitions)
        ur_p, _um, off_p = v.health(name)
        ur, off = len(ur_p), len(off_p)
        rows.append(f'<tr data-topic="{e(name)}"><td class="name"><a href="/topics/{q(name)}">{e(name)}</a>'
                    f'{" <span class=muted>internal</span>" if t.internal else ""}</td>'
                    f'<td class="partitions num">{len(t.partitions)}</td>'
                    f'<td class="replication num">{t.replication_factor}</td>'
                    f'<td class="under-replicated num {"bad" if ur else ""}">{ur}</td>'
                    f'<td class="offline num {"bad" if off else ""}">{off}</td>'
                    f'<td class="size num">{fmt_bytes(size)}</td>'
                    f'<td class="records-in num">{fmt_rate(rate)}</td></tr>')
    live = ('<table id="topics"><thead><tr><th>Topic</th><th class="num">Partitions</th><th class="num">Replication</th>'
            '<th class="num">Under-replicated</th><th class="num">Offline</th><th class="num">Size</th><th class="num">Records in</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
    if not rows:
        live += '<p class="muted">No topics.</p>'
    return Page("Topics", live, data=lambda: {"topics": v.topic_names()})


def _skew_words(v: View, topic: str, skewed: List[int]) -> str:
    """The newest skew WARNINGs of ``topic`` as the brokers logged them; a summary when
    the console has not seen them (a broker without a metrics listener)."""
    wanted = {f"topic {topic!r} partition {p} " for p in skewed}
    found: Dict[str, str] = {}
    for ev in sorted(v.events, key=lambda x: x["time_ms"]):
        if ev.get("kind") == "skew":
            for w in wanted:
                if w in ev["message"]:
                    found[w] = ev["message"]
    if found:
        return "".join(f"<p>{e(found[w])}</p>" for w in sorted(found))
    return (f"<p>partition skew: partition(s) {', '.join(map(str, skewed))} of topic {e(repr(topic))} received "
            "more than partition.skew.ratio times their fair share of the last window's records</p>")


def topic(v: View, name: str) -> Page:
    t = v.topic(name)
    s = v.snapshot
    path = f"/topics/{q(name)}"
    skewed = [p.partition for p in t.partitions if s.partitions.get((name, p.partition), {}).get("skewed")]
    rows = []
    for p in t.partitions:
        row = s.partitions.get((name, p.partition), {})
        isr = set(p.isr)
        reps = " ".join(f'<span class="replica {"in-sync" if r in isr else "out-of-sync"}"'
                        f' title="{"in sync" if r in isr else "out of sync"}">{r}</span>' for r in p.replicas)
        cls = " ".join(c for c, on in (("skewed", p.partition in skewed), ("offline", p.offline)) if on)
        rate = v.history.last(partition_key(name, p.partition, "records_in"))
        share = row.get("share_in")
        rows.append(f'<tr data-partition="{p.partition}"{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>'
                    f'<td class="partition num"><a href="{path}/{p.partition}">{p.partition}</a></td>'
                    f'<td class="leader num">{p.leader if p.leader >= 0 else "none"}</td>'
                    f'<td class="replicas">{reps}</td>'
                    f'<td class="isr">{",".join(map(str, p.isr))}</td>'
                    f'<td class="log-start num">{fmt_int(row.get("log_start"))}</td>'
                    f'<td class="log-end num">{fmt_int(row.get("log_end"))}</td>'
                    f'<td class="high-watermark num">{fmt_int(row.get("high_watermark"))}</td>'
                    f'<td class="size num">{fmt_bytes(row.get("log_size"))}</td>'
                    f'<td class="records-in num">{fmt_rate(rate)}</td>'
                    f'<td class="share num">{"–" if share is None else f"{100 * share:.1f}%"}</td></tr>')
    warn = (f'<div id="skew-warning" class="warning">{_skew_words(v, name, skewed)}</div>' if skewed else "")
    ur, um, off = v.health(name) if name in v.all_topics() else ([], [], [])
    live = ('<div class="counts">' + _count("under-replicated", "under-replicated", len(ur))
            + _count("under-min-isr", f"under min ISR ({s.min_isr.get(name, 1)})", len(um))
            + _count("offline", "offline", len(off)) + "</div>" + warn
            + '<table id="partitions"><thead><tr><th class="num">Partition</th><th class="num">Leader</th><th>Replicas</th><th>ISR</th>'
              '<th class="num">Log start</th><th class="num">Log end</th><th class="num">High watermark</th><th class="num">Size</th><th class="num">Records in</th>'
              '<th class="num">Share</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    before = (f'<p class="meta">id {e(t.topic_id)} · {len(t.partitions)} partitions · replication factor '
              f'{t.replication_factor}{" · internal" if t.internal else ""}</p>')
    after = ('<h2>Traffic per partition</h2><div class="charts">'
             + _chart_div("/api" + path, "partition-records-in") + _chart_div("/api" + path, "partition-share")
             + "</div>" + _configs(v, name))

    def charts() -> List[Dict[str, Any]]:
        by_rate = sorted(t.partitions, key=lambda p: -(v.history.last(partition_key(name, p.partition,
                                                                                   "records_in")) or 0.0))
        chosen = [p.partition for p in by_rate[:MAX_CHART_SERIES]]
        chosen += [p for p in skewed if p not in chosen]
        series = [(f"partition {p}", partition_key(name, p, "records_in"), p in skewed) for p in sorted(chosen)]
        title = "Records in per partition" + (f" (the {MAX_CHART_SERIES} busiest of {len(t.partitions)})"
                                              if len(t.partitions) > MAX_CHART_SERIES else "")
        bars = [{"name": str(p.partition), "highlight": p.partition in skewed,
                 "value": round(100.0 * float(s.partitions.get((name, p.partition), {}).get("share_in", 0.0)), 2)}
                for p in t.partitions]
        return [line_chart("partition-records-in", title, "/s", series, v.history),
                {"id": "partition-share", "title": "Share of the topic's records in (last skew window)",
                 "unit": "%", "kind": "bar", "bars": bars}]

    def data() -> Dict[str, Any]:
        return {"topic": name, "skewed": skewed, "partitions": [
            {"partition": p.partition, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
             "offline": p.offline, **{k: v2 for k, v2 in s.partitions.get((name, p.partition), {}).items()
                                      if not k.startswith("_")}} for p in t.partitions]}

    return Page(f"Topic {name}", live, before=before, after=after, charts=charts, data=data)


def _configs(v: View, name: str) -> str:
    if v.admin is None:
        return ""
    try:
        cfg = v.admin.describe_configs(name).get(name, {})
    except PylogError as exc:
        return f'<h2>Configuration</h2><p class="warning">cannot read the configuration: {e(exc)}</p>'
    rows = "".join(f'<tr data-config="{e(k)}"{" class=override" if not c.is_default else ""}>'
                   f'<td class="name">{e(k)}</td>'
                   f'<td class="value">{e("(sensitive)" if c.is_sensitive else c.value if c.value is not None else "")}'
                   f'</td><td class="source">{e(c.source)}</td></tr>' for k, c in sorted(cfg.items()))
    return ('<h2>Configuration</h2><table id="configs"><thead><tr><th>Name</th><th>Value</th><th>Source</th>'
            '</tr></thead><tbody>' + rows + "</tbody></table>")


# ====================================================================== records
def _shown(data: Optional[bytes], kind_hint: bool = True) -> str:
    """A key or value for display: JSON pretty-printed, UTF-8 text, or hex; cut at
    VALUE_DISPLAY_LIMIT with its size shown."""
    if data is None:
        return '<span class="muted">null</span>'
    size = len(data)
    cut = data[:VALUE_DISPLAY_LIMIT]
    more = (f'<span class="truncated">… {size} bytes</span>' if size > VALUE_DISPLAY_LIMIT else "")
    try:
        text = cut.decode("utf-8") if size <= VALUE_DISPLAY_LIMIT else cut.decode("utf-8", "ignore")
    except UnicodeDecodeError:
        text = None
    if text is not None and kind_hint and size <= VALUE_DISPLAY_LIMIT and text[:1] in "{[":
        try:
            return f'<pre class="value json">{e(json.dumps(json.loads(text), indent=2, ensure_ascii=False))}</pre>'
        except ValueError:
            pass
    if text is not None and all(ch.isprintable() or ch in "\n\t\r" for ch in text):
        return f'<pre class="value text">{e(text)}</pre>{more}'
    return f'<pre class="value hex">{e(cut.hex(" "))}</pre>{more}'


def records(v: View, name: str, partition: str, params: Mapping[str, str]) -> Page:
    t = v.topic(name)
    try:
        p = int(partition)
    except ValueError:
        raise NotFound(f"topic {name!r} has no partition {partition!r}") from None
    info = next((x for x in t.partitions if x.partition == p), None)
    if info is None:
        raise NotFound(f"topic {name!r} has no partition {p}")
    if v.admin is None:
        raise NotFound("the records browser needs a connection to the cluster")

    def num(key: str, lo: Optional[int] = None, hi: Optional[int] = None) -> Optional[int]:
        raw = params.get(key)
        if raw in (None, ""):
            return None
        try:
            n = int(raw)
        except ValueError:
            raise NotFound(f"{key} {raw!r} is not a number") from None
        if lo is not None and n < lo:
            n = lo
        if hi is not None and n > hi:
            n = hi
        return n

    limit = num("limit", 1, 500) or 50
    page = browse(v.admin, t, info, offset=num("offset"), timestamp=num("timestamp"), limit=limit)
    path = f"/topics/{q(name)}/{p}"
    rows = []
    for r in page.records:
        heads = "".join(f'<div class="header"><span class="hkey">{e(k)}</span>={_shown(val, False)}</div>'
                        for k, val in r.headers)
        rows.append(f'<tr class="record" data-offset="{r.offset}"><td class="offset num">{r.offset}</td>'
                    f'<td class="timestamp">{e(fmt_time(r.timestamp))}</td><td class="key">{_shown(r.key, False)}</td>'
                    f'<td class="headers">{heads}</td><td class="value">{_shown(r.value)}</td></tr>')
    nav = []
    if page.prev_offset is not None:
        nav.append(f'<a id="prev" href="{path}?offset={page.prev_offset}&amp;limit={limit}">← previous</a>')
    if page.next_offset is not None:
        nav.append(f'<a id="next" href="{path}?offset={page.next_offset}&amp;limit={limit}">next →</a>')
    form = (f'<form class="browse" method="get" action="{path}">'
            f'<label>offset <input name="offset" type="number" value="{e(params.get("offset", ""))}"></label>'
            f'<label>or timestamp (ms) <input name="timestamp" type="number" '
            f'value="{e(params.get("timestamp", ""))}"></label>'
            f'<label>records <input name="limit" type="number" min="1" max="500" value="{limit}"></label>'
            '<button type="submit">Show</button></form>')
    summary = (f'<p class="meta"><a href="/topics/{q(name)}">{e(name)}</a> partition {p}: log start '
               f'{page.log_start}, end {page.log_end}; showing {len(page.records)} record(s) from offset '
               f'{page.start}</p>')
    table = ('<table id="records"><thead><tr><th class="num">Offset</th><th>Timestamp</th><th>Key</th><th>Headers</th>'
             '<th>Value</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
             if rows else '<p class="muted" id="no-records">No records here.</p>')
    table += '<p class="pager">' + " ".join(nav) + "</p>"
    # the summary (log start and end) stays live; the page of records stays still while read
    return Page(f"{name}-{p} records", summary, before=form, after=table,
                data=lambda: {"topic": name, "partition": p, "log_start": page.log_start, "log_end": page.log_end,
                              "records": [{"offset": r.offset, "timestamp": r.timestamp,
                                           "key_size": None if r.key is None else len(r.key),
                                           "value_size": None if r.value is None else len(r.value)}
                                          for r in page.records]})


# ====================================================================== groups
def _visible_groups(v: View) -> List[Any]:
    if v.admin is None:
        return []
    try:
        return v.admin.list_groups()
    except PylogError:
        return []


def groups(v: View) -> Page:
    s = v.snapshot
    listed = _visible_groups(v)
    rows = []
    for g in listed:
        lag = sum(x for (gid, _t, _p), x in s.lag.items() if gid == g.group_id)
        rows.append(f'<tr data-group="{e(g.group_id)}"><td class="name"><a href="/groups/{q(g.group_id)}">'
                    f'{e(g.group_id)}</a></td><td class="type">{e(g.protocol_type or "–")}</td>'
                    f'<td class="state">{e(g.state or "–")}</td>'
                    f'<td class="coordinator num">{g.coordinator}</td>'
                    f'<td class="lag num">{fmt_int(lag)}</td></tr>')
    live = ('<table id="groups"><thead><tr><th>Group</th><th>Type</th><th>State</th><th class="num">Coordinator</th>'
            '<th class="num">Lag</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    if not rows:
        live += '<p class="muted">No consumer groups.</p>'
    return Page("Consumer groups", live, data=lambda: {"groups": [g.group_id for g in listed]})


def group(v: View, gid: str) -> Page:
    if v.admin is None:
        raise NotFound(f"unknown group {gid!r}")
    try:
        d = v.admin.describe_group(gid)
        committed = v.admin.list_group_offsets(gid)
    except PylogError as exc:
        # GROUP_AUTHORIZATION_FAILED: the principal may not describe it, as if absent
        if isinstance(exc, GroupAuthorizationFailed):
            raise NotFound(f"unknown group {gid!r}") from None
        raise NotFound(f"group {gid!r}: {exc}") from None
    if d.state in ("Dead", "") and not committed and not d.members:
        raise NotFound(f"unknown group {gid!r}")
    s = v.snapshot
    shown = {tp: o for tp, o in committed.items() if v.visible_topics is None or tp[0] in v.visible_topics}
    try:  # the ends now, from the leaders (the metrics' may be a second old or missing)
        names = {x for x, _ in shown}
        known = {(t.name, p.partition): p.leader for t in v.all_topics().values() if t.name in names
                 for p in t.partitions}
        ends = {tp: off for tp, (off, _ts) in v.admin.list_offsets({tp: -1 for tp in shown}, leaders=known).items()}
    except PylogError:
        ends = {}
    members = "".join(
        f'<tr data-member="{e(m.member_id)}"><td class="member">{e(m.member_id)}</td>'
        f'<td class="client">{e(m.client_id)}</td><td class="host">{e(m.client_host)}</td>'
        f'<td class="assignment">{e(", ".join(f"{t}-{p}" for t, p in m.assignment))}</td></tr>'
        for m in d.members)
    rows = []
    for (t, p), off in shown.items():
        end = ends.get((t, p), s.partitions.get((t, p), {}).get("high_watermark"))
        lag = None if end is None else max(0, int(end) - off)
        rows.append(f'<tr data-topic="{e(t)}" data-partition="{p}"><td class="topic">{e(t)}</td>'
                    f'<td class="partition num">{p}</td><td class="committed num">{off}</td>'
                    f'<td class="end num">{fmt_int(end)}</td>'
                    f'<td class="lag num {"bad" if lag else ""}">{fmt_int(lag)}</td></tr>')
    live = (f'<p class="meta">state <span id="group-state">{e(d.state)}</span> · protocol {e(d.protocol or "–")} · '
            f'coordinator broker {d.coordinator}</p>'
            '<h2>Members</h2><table id="members"><thead><tr><th>Member</th><th>Client</th><th>Host</th>'
            '<th>Assignment</th></tr></thead><tbody>' + members + "</tbody></table>"
            '<h2>Offsets</h2><table id="offsets"><thead><tr><th>Topic</th><th class="num">Partition</th><th class="num">Committed</th>'
            '<th class="num">End (high watermark)</th><th class="num">Lag</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    path = f"/groups/{q(gid)}"
    after = '<h2>Lag</h2><div class="charts">' + _chart_div("/api" + path, "group-lag") + "</div>"

    def charts() -> List[Dict[str, Any]]:
        keys = sorted((t, p) for (g, t, p) in s.lag if g == gid
                      and (v.visible_topics is None or t in v.visible_topics))
        if not keys:
            keys = sorted(committed)
        return [line_chart("group-lag", "Lag per partition (records)", "", [
            (f"{t}-{p}", lag_key(gid, t, p), False) for t, p in keys[:MAX_CHART_SERIES]], v.history)]

    return Page(f"Group {gid}", live, after=after, charts=charts,
                data=lambda: {"group": gid, "state": d.state, "offsets": {f"{t}-{p}": o
                                                                          for (t, p), o in committed.items()}})


# ====================================================================== events
_KIND_WORDS = {"isr_shrink": "ISR shrink", "isr_expand": "ISR expand", "election_clean": "leader election",
               "election_unclean": "UNCLEAN election", "partition_offline": "partition offline",
               "broker_join": "broker joined", "broker_leave": "broker left", "loss": "records lost",
               "skew": "partition skew"}


def _mentions(message: str, topic: str) -> bool:
    """Whether a log line names ``topic`` (alone, quoted, or as topic-partition)."""
    return re.search(r"(?:^|[\s'\"(\[])" + re.escape(topic) + r"(?:-\d+)?(?=$|[\s'\",:;)\]])",
                     message) is not None


def _event_visible(v: View, ev: Mapping[str, Any]) -> bool:
    """An event naming a topic the principal may not describe is not shown."""
    if v.visible_topics is None:
        return True
    msg = str(ev.get("message", ""))
    hidden = {t for t in v.snapshot.topics if t not in v.visible_topics}
    hidden |= {t for t in v.snapshot.partition_topics() if t not in v.visible_topics}
    return not any(_mentions(msg, t) for t in hidden)


def events(v: View, params: Mapping[str, str]) -> Page:
    kind = params.get("kind") or ""
    shown = [ev for ev in sorted(v.events, key=lambda x: (x["time_ms"], x.get("seq", 0)), reverse=True)
             if _event_visible(v, ev) and (not kind or ev.get("kind") == kind)][:1000]
    items = "".join(
        f'<li class="event level-{e(str(ev["level"]).lower())}" data-kind="{e(ev["kind"])}">'
        f'<time class="time" datetime="{e(fmt_time(ev["time_ms"]))}">{e(fmt_time(ev["time_ms"]))}</time> '
        f'<span class="broker">broker {e(ev.get("broker", "?"))}</span> '
        f'<span class="level">{e(ev["level"])}</span> '
        f'<span class="kind">{e(_KIND_WORDS.get(ev["kind"], ev["kind"]))}</span> '
        f'<span class="message">{e(ev["message"])}</span></li>' for ev in shown)
    filt = ('<p class="filters">' + " ".join(
        f'<a href="/events{"?kind=" + k if k else ""}"{" class=active" if k == kind else ""}>{e(w)}</a>'
        for k, w in (("", "all"),) + tuple(_KIND_WORDS.items())) + "</p>")
    live = (f'<ol id="events">{items}</ol>' if shown else
            '<ol id="events"></ol><p class="muted">No events yet (the console shows what the brokers logged '
            'since they started).</p>')
    return Page("Events", live, before=filt, data=lambda: {"events": shown})
