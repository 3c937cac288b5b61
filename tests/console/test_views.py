"""pylog.console.views without a cluster: display of keys and values, events hidden from
a principal that may not describe their topic, the 404 page."""
from __future__ import annotations

import uuid

from pylog.client.network.admin import TopicDescription, TopicPartitionInfo
from pylog.console.collector import Snapshot
from pylog.console.history import History
from pylog.console.views import VALUE_DISPLAY_LIMIT, View, _mentions, _shown, events, not_found_page, topics


def _topic(name: str, isr=(1, 2, 3)) -> TopicDescription:
    return TopicDescription(name, uuid.uuid4(), False, [TopicPartitionInfo(0, 1, 0, [1, 2, 3], list(isr))])


def test_values_are_shown_escaped_as_json_text_or_hex_and_cut_with_their_size():
    assert _shown(None) == '<span class="muted">null</span>'
    assert _shown(b'{"k": "<v>"}') == '<pre class="value json">{\n  &quot;k&quot;: &quot;&lt;v&gt;&quot;\n}</pre>'
    assert _shown(b"<b>&") == '<pre class="value text">&lt;b&gt;&amp;</pre>'
    assert _shown(b"\x00\xff") == '<pre class="value hex">00 ff</pre>'
    big = _shown(b"a" * (VALUE_DISPLAY_LIMIT + 10))
    assert big.endswith(f'<span class="truncated">… {VALUE_DISPLAY_LIMIT + 10} bytes</span>')
    assert big.startswith('<pre class="value text">' + "a" * VALUE_DISPLAY_LIMIT + "</pre>")  # only the shown part
    # keys are never pretty-printed (a key "{...}" is shown as it is)
    assert _shown(b"{}", False) == '<pre class="value text">{}</pre>'
    # a cut in the middle of a multi-byte character is still text
    cut = _shown("é".encode() * VALUE_DISPLAY_LIMIT)
    assert cut.startswith('<pre class="value text">')


def test_log_lines_are_matched_to_the_topics_they_name():
    assert _mentions("ISR shrink for payroll-3: [1, 2] -> [1] (lagging)", "payroll")
    assert _mentions("partition skew: topic 'payroll' partition 0 received", "payroll")
    assert not _mentions("ISR shrink for payrolls-3: [1, 2] -> [1]", "payroll")
    assert not _mentions("ISR shrink for my.payroll-3: [1, 2] -> [1]", "payroll")


def test_events_naming_a_hidden_topic_are_not_shown():
    snap = Snapshot(time_ms=1, topics={"mine": _topic("mine"), "secret": _topic("secret")})
    evs = [{"seq": 1, "time_ms": 10, "level": "WARNING", "kind": "isr_shrink", "broker": 1,
            "message": "ISR shrink for secret-0: [1, 2, 3] -> [1, 2] (lagging)"},
           {"seq": 2, "time_ms": 20, "level": "WARNING", "kind": "isr_shrink", "broker": 1,
            "message": "ISR shrink for mine-0: [1, 2, 3] -> [1, 2] (<lagging>)"},
           {"seq": 3, "time_ms": 30, "level": "WARNING", "kind": "broker_leave", "broker": 2,
            "message": "broker 3 is offline (its registration is gone)"}]
    everyone = events(View(snap, History(), evs, None), {})
    assert everyone.live.count('<li class="event') == 3
    limited = events(View(snap, History(), evs, None, visible_topics={"mine"}), {})
    assert limited.live.count('<li class="event') == 2 and "secret" not in limited.live
    assert "(&lt;lagging&gt;)" in limited.live  # escaped
    # newest first
    assert limited.live.index("broker 3 is offline") < limited.live.index("mine-0")
    only = events(View(snap, History(), evs, None), {"kind": "broker_leave"})
    assert only.live.count('<li class="event') == 1


def test_topics_page_lists_only_visible_topics_and_marks_under_replicated():
    snap = Snapshot(time_ms=1, topics={"mine": _topic("mine", isr=(1,)), "secret": _topic("secret")})
    page = topics(View(snap, History(), [], None, visible_topics={"mine"}))
    assert 'data-topic="mine"' in page.live and "secret" not in page.live
    assert '<td class="under-replicated num bad">1</td>' in page.live


def test_not_found_page_escapes_the_name():
    html = not_found_page("unknown topic '<x>'")
    assert '<p id="not-found">unknown topic &#x27;&lt;x&gt;&#x27;</p>' in html
