"""RELP (resolver/security/relp.py, relp_sender.py) and the exporter over it: the framing and the client
session without I/O (round trips, byte by byte, bytes librelp sent, malformed input), then the exporter
against a RELP collector written here that can hold back its answers, refuse, and go away. The same
against a real rsyslogd (imrelp), killed while stopped, is in test_security_relp_rsyslog.py."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.security.config import SecurityLogConfig
from resolver.security.events import SecurityEvents
from resolver.security.exporter import Exporter
from resolver.security.relp import (
    DEFAULT_WINDOW,
    MAX_TXNR,
    Acknowledged,
    ClientSession,
    Closed,
    Frame,
    FrameReader,
    Opened,
    RelpError,
    RelpRefused,
    Response,
    ServerClosing,
    decode_offers,
    decode_response,
    encode_frame,
    encode_offers,
    encode_response,
)
from tests.security_helpers import emit, free_port, idnode_bodies, wait_for, written_items

# What librelp 1.11.0 (rsyslog 8.2302 imrelp, Debian 12) sent to a client that opened a session, sent two
# syslog commands and closed: captured on loopback.
LIBRELP_OPEN_ANSWER = (
    b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
    b"commands=syslog\n"
)
LIBRELP_SYSLOG_ANSWERS = b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n"
LIBRELP_CLOSE_ANSWER = b"4 rsp 0\n0 serverclose 0\n"


def frames_of(data: bytes, reader: FrameReader | None = None) -> list[Frame]:
    reader = reader or FrameReader()
    reader.receive_data(data)
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    return out


def rsp(txnr: int, data: bytes) -> bytes:
    return encode_frame(Frame(txnr, "rsp", data))


def events_of(session: ClientSession, data: bytes) -> list:
    session.receive_data(data)
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


# -- framing -------------------------------------------------------------------------------------------------


def test_frame_bytes():
    assert encode_frame(Frame(7, "syslog", b"<13>1 - - - - - - hi")) == b"7 syslog 20 <13>1 - - - - - - hi\n"
    assert encode_frame(Frame(0, "serverclose")) == b"0 serverclose 0\n"
    assert encode_frame(Frame(MAX_TXNR, "rsp", b"200 OK")) == b"999999999 rsp 6 200 OK\n"


@given(
    st.lists(
        st.builds(
            Frame,
            st.integers(0, MAX_TXNR),
            st.text(st.characters(min_codepoint=65, max_codepoint=90), min_size=1, max_size=32),
            st.binary(max_size=300),
        ),
        max_size=5,
    ),
    st.integers(1, 7),
)
def test_frames_round_trip_in_pieces_of_any_size(frames, piece):
    wire = b"".join(encode_frame(f) for f in frames)
    reader = FrameReader()
    got = []
    for i in range(0, len(wire), piece):
        got += frames_of(wire[i : i + piece], reader)
    assert got == frames
    assert reader.buffered == 0


def test_librelp_bytes_read_byte_by_byte():
    reader = FrameReader()
    got = []
    for b in LIBRELP_OPEN_ANSWER + LIBRELP_SYSLOG_ANSWERS + LIBRELP_CLOSE_ANSWER:
        got += frames_of(bytes([b]), reader)
    assert [(f.txnr, f.command) for f in got] == [
        (1, "rsp"),
        (2, "rsp"),
        (3, "rsp"),
        (4, "rsp"),
        (0, "serverclose"),
    ]
    assert decode_response(got[0].data) == Response(
        200, "OK", b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"
    )
    assert got[3].data == b""


@pytest.mark.parametrize(
    "wire",
    [
        b"x rsp 6 200 OK\n",  # TXNR not a number
        b"1234567890 rsp 0\n",  # ten digits
        b"-1 rsp 0\n",
        b"1 r5p 0\n",  # a digit in the command
        b"1 " + b"a" * 33 + b" 0\n",  # a command longer than 32 letters
        b"1rsp 0\n",
        b"1  rsp 0\n",
        b"1 rsp x\n",
        b"1 rsp 6 200 OKX\n",  # no LF where the data ends
        b"1 rsp 3\n",  # DATALEN but no data
        b"1 rsp 0 \n",  # DATALEN 0 then a space
        b"1 rsp 1000000000 ",  # DATALEN of ten digits
        b"1 rsp 65537 ",  # beyond the bound: refused before the data is read
        b"\n",
        b" 1 rsp 0\n",
    ],
)
def test_malformed_frames_raise(wire):
    reader = FrameReader()
    reader.receive_data(wire)
    with pytest.raises(RelpError):
        reader.next_frame()


def test_frames_before_a_malformed_one_are_returned_first():
    reader = FrameReader()
    reader.receive_data(b"2 rsp 6 200 OK\nGARBAGE\n")
    assert reader.next_frame() == Frame(2, "rsp", b"200 OK")
    with pytest.raises(RelpError):
        reader.next_frame()


@pytest.mark.parametrize(
    "frame",
    [Frame(-1, "rsp"), Frame(MAX_TXNR + 1, "rsp"), Frame(1, ""), Frame(1, "a" * 33), Frame(1, "rsp2")],
)
def test_out_of_range_frames_are_not_encoded(frame):
    with pytest.raises(RelpError):
        encode_frame(frame)


@pytest.mark.parametrize(
    "data", [b"", b"200", b"20 OK", b"2000 OK", b"200OK", b"abc OK", b"200 " + b"x" * 81]
)
def test_malformed_responses_raise(data):
    with pytest.raises(RelpError):
        decode_response(data)


def test_response_and_offers_round_trip():
    offers = {"relp_version": ["0"], "relp_software": ["idnode"], "commands": ["syslog", "other"]}
    assert decode_offers(encode_offers(offers)) == offers
    response = Response(200, "OK", encode_offers(offers))
    assert decode_response(encode_response(response)) == response
    assert decode_response(b"500 ") == Response(500, "", b"")


# -- the client session --------------------------------------------------------------------------------------


def opened_session(window: int = DEFAULT_WINDOW) -> ClientSession:
    session = ClientSession(window)
    assert session.open() == b"1 open 51 relp_version=0\nrelp_software=idnode\ncommands=syslog\n"
    assert session.room == 0  # nothing may be sent before the collector accepted the session
    assert events_of(session, LIBRELP_OPEN_ANSWER) == [
        Opened(decode_offers(b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
                             b"commands=syslog"))
    ]  # fmt: skip
    return session


def test_session_against_librelp_answers():
    session = opened_session()
    assert session.syslog(b"<13>1 - h app - - - x", tag=10) == b"2 syslog 21 <13>1 - h app - - - x\n"
    assert session.syslog(b"<13>1 - h app - - - x", tag=11).startswith(b"3 syslog ")
    assert session.unacknowledged == 2
    assert events_of(session, LIBRELP_SYSLOG_ANSWERS) == [Acknowledged((10,)), Acknowledged((11,))]
    assert session.unacknowledged == 0
    assert session.close() == b"4 close 0\n"
    assert events_of(session, LIBRELP_CLOSE_ANSWER) == [Closed(), ServerClosing()]


def test_acknowledgements_cover_every_command_before_them():
    session = opened_session()
    for tag in range(3):
        session.syslog(b"m", tag)
    assert events_of(session, b"3 rsp 6 200 OK\n") == []  # 2 (tag 0) is not answered yet
    assert events_of(session, b"2 rsp 6 200 OK\n") == [Acknowledged((0, 1))]
    assert events_of(session, b"4 rsp 6 200 OK\n") == [Acknowledged((2,))]


def test_the_window_bounds_unanswered_commands():
    session = opened_session(window=3)
    for tag in range(3):
        session.syslog(b"m", tag)
    assert session.room == 0
    with pytest.raises(RelpError, match="unanswered"):
        session.syslog(b"m", 3)
    events_of(session, b"2 rsp 6 200 OK\n")
    assert session.room == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"9 rsp 6 200 OK\n",  # to no command
        b"2 syslog 1 x\n",  # a command from the collector
        b"0 rsp 6 200 OK\n",  # a hint that is not serverclose
        b"2 rsp 2 OK\n",  # not a response
    ],
)
def test_answers_to_nothing_raise(answer):
    session = opened_session()
    session.syslog(b"m", 0)
    with pytest.raises(RelpError):
        events_of(session, answer)


def test_a_second_answer_to_the_same_command_raises():
    session = opened_session()
    session.syslog(b"m", 0)
    session.syslog(b"m", 1)
    events_of(session, b"3 rsp 6 200 OK\n")
    with pytest.raises(RelpError, match="not waiting"):
        events_of(session, b"3 rsp 6 200 OK\n")


def test_an_error_answer_raises_refused():
    session = opened_session()
    session.syslog(b"m", 0)
    with pytest.raises(RelpRefused) as refused:
        events_of(session, rsp(2, b"500 message too long"))
    assert (refused.value.command, refused.value.code, refused.value.text) == (
        "syslog",
        500,
        "message too long",
    )
    assert session.room == 0


def test_open_refused_or_without_syslog():
    session = ClientSession()
    session.open()
    with pytest.raises(RelpRefused, match="500"):
        events_of(session, rsp(1, b"500 error 12 on connect"))
    session = ClientSession()
    session.open()
    with pytest.raises(RelpRefused, match="syslog"):
        events_of(session, rsp(1, b"200 OK\nrelp_version=0\ncommands="))


def test_txnr_goes_on_at_1_after_the_largest():
    session = opened_session()
    session._txnr = MAX_TXNR - 1  # as after a very long session
    assert session.syslog(b"m", 0).startswith(b"999999999 syslog ")
    assert session.syslog(b"m", 1).startswith(b"1 syslog ")
    assert events_of(session, b"999999999 rsp 6 200 OK\n1 rsp 6 200 OK\n") == [
        Acknowledged((0,)),
        Acknowledged((1,)),
    ]


# -- the exporter against a RELP collector written here ------------------------------------------------------


class PyRelpCollector:
    """A RELP server on 127.0.0.1 (librelp's answers): `hold` set, it reads and keeps messages but answers
    no syslog command; `refuse` set, it answers them 500; `serverclose_after` set, it answers one and ends
    the session with serverclose, in the same segment as the answer. `crash()` drops every connection and the port as
    a killed collector does (what it had not answered stays unanswered); `start()` listens again."""

    def __init__(self, port: int = 0):
        self.port = port or free_port()
        self.messages: list[bytes] = []
        self.hold = threading.Event()
        self.refuse = threading.Event()
        self.serverclose_after = threading.Event()
        self.sessions = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> PyRelpCollector:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(8)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def crash(self, *, serverclose: bool = False) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in [self._listener, *conns]:
            if sock is None:
                continue
            try:
                if serverclose and sock is not self._listener:
                    sock.sendall(encode_frame(Frame(0, "serverclose")))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._listener = None

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.messages)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(max_data_bytes=1 << 20)
        try:
            while data := conn.recv(65536):
                reader.receive_data(data)
                if not self._answer_all(conn, reader):
                    conn.shutdown(socket.SHUT_RDWR)
                    break
        except OSError:
            pass
        conn.close()

    def _answer_all(self, conn: socket.socket, reader: FrameReader) -> bool:
        """Answer the frames read so far; False when the session is to end."""
        while (frame := reader.next_frame()) is not None:
            answer = self._answer(frame)
            if answer is None:
                continue
            out = encode_frame(Frame(frame.txnr, "rsp", answer))
            if frame.command == "syslog" and self.serverclose_after.is_set():
                conn.sendall(out + encode_frame(Frame(0, "serverclose")))  # in one segment
                return False
            conn.sendall(out)
        return True

    def _answer(self, frame: Frame) -> bytes | None:
        if frame.command == "open":
            with self._lock:
                self.sessions += 1
            return b"200 OK\nrelp_version=0\nrelp_software=test\ncommands=syslog"
        if frame.command == "close":
            return b""
        if self.refuse.is_set():
            return b"500 not now"
        with self._lock:
            self.messages.append(frame.data)
        return None if self.hold.is_set() else b"200 OK"


FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "connect_timeout_s": 2.0, "send_timeout_s": 1.0}


def relp_config(tmp_path, port: int, **extra) -> SecurityLogConfig:
    return SecurityLogConfig(collector=f"127.0.0.1:{port}", transport="relp", hostname="node-1",
                             node_id="88.100", queue_dir=str(tmp_path / "queue"), **{**FAST, **extra})  # fmt: skip


@pytest.fixture()
def relp_collector():
    collector = PyRelpCollector().start()
    yield collector
    collector.crash()


@pytest.fixture()
def exporting(tmp_path, relp_collector):
    events = SecurityEvents.open(relp_config(tmp_path, relp_collector.port), tmp_path)
    exporter = Exporter(relp_config(tmp_path, relp_collector.port), tmp_path, queue=events.queue)
    exporter.start()
    yield events, exporter
    exporter.stop()
    events.close()


def test_relp_events_arrive_in_order_and_leave_the_queue(relp_collector, exporting):
    events, exporter = exporting
    emit(events, 0, 600)  # several windows
    wait_for(lambda: events.queue_stats().events == 0, what="an empty queue")
    assert written_items(relp_collector.received()) == list(range(600))
    assert [b["seq"] for b in idnode_bodies(relp_collector.received())] == list(range(1, 601))
    assert exporter.sent == 600 and exporter.failures == 0 and relp_collector.sessions == 1


def test_relp_unanswered_events_stay_queued_and_are_sent_again(relp_collector, exporting):
    events, exporter = exporting
    emit(events, 0, 10)
    wait_for(lambda: events.queue_stats().events == 0, what="the first 10 acknowledged")
    relp_collector.hold.set()  # reads, never answers: as a collector whose TCP takes bytes it never handles
    emit(events, 10, 400)
    wait_for(lambda: len(relp_collector.received()) == 10 + DEFAULT_WINDOW, what="a window of unanswered")
    wait_for(lambda: exporter.failures >= 1, what="the timeout for acknowledgements")
    assert "acknowledged nothing" in exporter.last_error
    assert events.queue_stats().events == 390  # nothing unanswered left the queue
    relp_collector.crash(serverclose=True)  # and what it read unanswered is lost with it
    relp_collector.hold.clear()
    relp_collector.start()
    wait_for(lambda: events.queue_stats().events == 0, what="everything acknowledged after the restart")
    seqs = [b["seq"] for b in idnode_bodies(relp_collector.received())]
    assert sorted(set(seqs)) == list(range(1, 401))  # nothing lost
    repeated = sorted(s for s in set(seqs) if seqs.count(s) > 1)
    assert set(repeated) <= set(range(11, 11 + DEFAULT_WINDOW))  # only the window that went unanswered
    assert written_items(relp_collector.received()) == [s - 1 for s in seqs]  # a repeat is the same event


def test_relp_refusal_is_a_failure_and_the_events_wait(relp_collector, exporting):
    events, exporter = exporting
    relp_collector.refuse.set()
    emit(events, 0, 5)
    wait_for(lambda: exporter.failures >= 2, what="refused attempts")
    assert "500 not now" in exporter.last_error
    assert events.queue_stats().events == 5
    relp_collector.refuse.clear()
    wait_for(lambda: events.queue_stats().events == 0, what="the 5 after the refusals")
    assert written_items(relp_collector.received()) == list(range(5))


def test_relp_session_ended_right_after_its_last_answer(relp_collector, exporting):
    """A serverclose read together with the answers before it: the answers count, and the next events go
    out on a new session (not into one that is over)."""
    events, exporter = exporting
    relp_collector.serverclose_after.set()
    emit(events, 0, 5)  # one acknowledged per session, the rest sent again on the next
    wait_for(lambda: events.queue_stats().events == 0, what="the 5, one a session")
    assert "serverclose" in exporter.last_error
    relp_collector.serverclose_after.clear()
    emit(events, 5, 10)
    wait_for(lambda: events.queue_stats().events == 0, what="the next 5 on a new session")
    seqs = [b["seq"] for b in idnode_bodies(relp_collector.received())]
    assert sorted(set(seqs)) == list(range(1, 11))
    assert written_items(relp_collector.received())[-5:] == list(range(5, 10))


def test_relp_settings():
    assert SecurityLogConfig(collector="soc.example", transport="relp").address == ("soc.example", 2514)
    tls = SecurityLogConfig(collector="soc.example:20514", transport="relp-tls", ca_file="/etc/ca.pem")
    assert tls.address == ("soc.example", 20514)
    with pytest.raises(ValueError, match="relp-tls"):
        SecurityLogConfig(collector="soc.example", transport="relp", ca_file="/etc/ca.pem")
