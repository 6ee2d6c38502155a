"""RFC 5424 messages and RFC 6587 octet-counting frames (resolver/security/syslog.py), without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.security.syslog import (
    FrameDecoder,
    SyslogFormatError,
    SyslogMessage,
    decode_message,
    encode_frame,
    encode_message,
    format_timestamp,
    header_field,
)

# RFC 5424 §6.5, example 3 (the BOM dropped: its MSG here is plain ASCII).
RFC_EXAMPLE_3 = (
    b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
    b'eventSource="Application" eventID="1011"] An application event log entry...'
)


def test_encode_known_message():
    m = SyslogMessage(10, 4, 1_750_000_000_000_001, "node-1", "idnode", "4242", "AUTHFAIL", msg=b'{"a":1}')
    assert encode_message(m) == b'<84>1 2025-06-15T15:06:40.000001Z node-1 idnode 4242 AUTHFAIL - {"a":1}'


def test_encode_without_msg_and_with_nil_fields():
    m = SyslogMessage(23, 7, None, "", "", "", "")
    assert encode_message(m) == b"<191>1 - - - - - -"


def test_header_fields_are_printusascii_and_bounded():
    assert header_field("my host", 255) == "my_host"
    assert header_field("节点", 255) == "__"
    assert header_field("x" * 60, 48) == "x" * 48
    assert header_field("", 32) == "-"


def test_out_of_range_priority_is_refused():
    with pytest.raises(SyslogFormatError):
        encode_message(SyslogMessage(24, 0, None, "h", "a", "p", "m"))


def test_timestamp():
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(1_750_000_000_123_456) == "2025-06-15T15:06:40.123456Z"


def test_decode_rfc_example():
    m = decode_message(RFC_EXAMPLE_3)
    assert (m.facility, m.severity) == (20, 5)
    assert m.timestamp_us == 1_065_910_455_003_000
    assert (m.hostname, m.app_name, m.procid, m.msgid) == ("mymachine.example.com", "evntslog", "-", "ID47")
    assert m.structured_data.startswith("[exampleSDID@32473 ") and m.structured_data.endswith('"1011"]')
    assert m.msg == b"An application event log entry..."


def test_decode_structured_data_with_escapes_and_two_elements():
    raw = b'<13>1 - h a p m [a x="q\\"]\\\\"][b y="2"] text'
    m = decode_message(raw)
    assert m.structured_data == '[a x="q\\"]\\\\"][b y="2"]'
    assert m.msg == b"text"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<13>2 - h a p m -",  # version 2
        b"<192>1 - h a p m -",  # PRI beyond 191
        b"<13>1 - h a p m [unclosed",
        b"<13>1 - h a p m -x",  # no space before MSG
        b"<13>1 2003-10-11T22:14:15 h a p m -",  # no time zone
        b"13>1 - h a p m -",
    ],
)
def test_decode_refuses(raw):
    with pytest.raises(SyslogFormatError):
        decode_message(raw)


_field = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)


@given(
    facility=st.integers(0, 23),
    severity=st.integers(0, 7),
    timestamp_us=st.none() | st.integers(0, 4_000_000_000_000_000),
    hostname=_field,
    app_name=_field,
    procid=_field,
    msgid=_field,
    msg=st.binary(max_size=200).filter(lambda b: not b.startswith(b" ")),
)
def test_round_trip(facility, severity, timestamp_us, hostname, app_name, procid, msgid, msg):
    m = SyslogMessage(facility, severity, timestamp_us, hostname, app_name, procid, msgid, msg=msg)
    assert decode_message(encode_message(m)) == m


def test_frames_byte_by_byte_and_whole():
    messages = [b"<13>1 - h a p m - one", b"<13>1 - h a p m - two with 2 spaces", b"x" * 1000]
    stream = b"".join(encode_frame(m) for m in messages)
    assert stream.startswith(b"21 <13>1")
    whole = FrameDecoder()
    assert whole.feed(stream) == messages
    pieces = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += pieces.feed(stream[i : i + 1])
    assert out == messages


@pytest.mark.parametrize("junk", [b"abc def", b"012 x", b"1234567890123 x", b"-1 x"])
def test_frame_decoder_refuses_junk(junk):
    with pytest.raises(SyslogFormatError):
        FrameDecoder().feed(junk)
