"""Fuzz the byte parsers of the group protocol: __consumer_offsets keys/values and the
ConsumerProtocol subscription/assignment.  Any bytes give a value or CorruptRecordError
(a documented error), never another exception; mutations of valid encodings too."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.broker import offsets_topic as ot
from pylog.client import assignors as asg
from pylog.errors import PylogError

PARSERS = [ot.decode_key, ot.decode_offset_value, asg.decode_subscription, asg.decode_assignment]
VALID = [
    ot.encode_offset_key("group", "topic", 3),
    ot.encode_offset_value(ot.OffsetValue(42, "meta", 1_700_000_000_000)),
    asg.encode_subscription(asg.Subscription(("a", "b"), b"ud", (("a", 1),), 5, "r1")),
    asg.encode_assignment(asg.Assignment((("a", 0), ("b", 2)), b"x")),
]


def _parse_or_documented_error(parser, data):
    try:
        parser(data)
    except PylogError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(4)), st.binary(max_size=200))
def test_random_bytes(i, data):
    _parse_or_documented_error(PARSERS[i], data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(4)), st.data())
def test_mutated_valid_encodings(i, data):
    raw = bytearray(VALID[i])
    PARSERS[i](bytes(raw))  # the valid one parses
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _parse_or_documented_error(PARSERS[i], bytes(raw[:cut]))
    _parse_or_documented_error(PARSERS[i], bytes(raw))
